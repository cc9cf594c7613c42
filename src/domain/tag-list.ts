/**
 * A repository's tags, sorted and deduplicated once, kept compact, and paginated without touching
 * more than the page: the tags are stored as the bytes of a JSON array's contents (`"a","b","c"`)
 * with the offset of each, so a page is a slice of those bytes and a lookup of `last` a binary
 * search. A list of 1.5 M tags costs about its JSON size (16 MB) plus 4 bytes a tag, instead of
 * 1.5 M strings, and serving any page of it takes microseconds on the event loop.
 *
 * Only valid tags (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`) are kept: they need no escaping in JSON,
 * and their byte order is JavaScript's string order.
 */

export interface TagPageRequest {
  readonly n?: number;
  readonly last?: string;
}

/** What `buildTagList` makes: the packed tags, or why the documents are not tag lists. */
export type BuiltTagList =
  | { readonly ok: true; readonly name: string | undefined; readonly json: Uint8Array; readonly starts: Uint32Array; readonly dropped: number }
  | { readonly ok: false; readonly error: string };

export class TagList {
  /** `"a","b"`: the tags of this list, quoted and comma-separated. */
  readonly #json: Uint8Array;
  /** Offset of each tag's opening quote in `#json`, plus one past the end (`#json.length + 1`). */
  readonly #starts: Uint32Array;

  private constructor(json: Uint8Array, starts: Uint32Array) {
    this.#json = json;
    this.#starts = starts;
  }

  /** From `buildTagList`'s output (trusted: sorted, unique, valid). */
  static packed(json: Uint8Array, starts: Uint32Array): TagList {
    return new TagList(json, starts);
  }

  /** From any strings: invalid tags are dropped, the rest sorted and deduplicated. */
  static of(tags: Iterable<string>): TagList {
    const built = buildTagList([new TextEncoder().encode(JSON.stringify({ tags: [...tags] }))]);
    if (!built.ok) throw new TypeError(built.error);
    return new TagList(built.json, built.starts);
  }

  static get empty(): TagList {
    return (EMPTY ??= TagList.of([]));
  }

  get size(): number {
    return this.#starts.length - 1;
  }

  /** Memory held, roughly: for the cache's bound. */
  get byteLength(): number {
    return this.#json.byteLength + this.#starts.byteLength;
  }

  /** Tag `i` (0-based, in sorted order). */
  at(i: number): string {
    return latin1(this.#json, this.#starts[i]! + 1, this.#starts[i + 1]! - 2);
  }

  /**
   * The page after `last` (tags strictly greater), at most `n` long, with the cursor of the next
   * page when there is more: the distribution spec's `n`/`last` pagination.
   */
  page(req: TagPageRequest): { tags: TagList; next?: { n: number; last: string } } {
    const from = req.last === undefined ? 0 : this.#firstAfter(req.last);
    const rest = this.size - from;
    if (req.n === undefined || rest <= req.n) return { tags: this.#slice(from, this.size) };
    const tags = this.#slice(from, from + req.n);
    return { tags, ...(tags.size > 0 ? { next: { n: req.n, last: tags.at(tags.size - 1) } } : {}) };
  }

  /** The tags as a JSON array (`["a","b"]`), ready to send. */
  jsonArray(): Buffer {
    const out = Buffer.allocUnsafe(this.#json.byteLength + 2);
    out[0] = 0x5b; // [
    out.set(this.#json, 1);
    out[out.length - 1] = 0x5d; // ]
    return out;
  }

  toArray(): string[] {
    return Array.from({ length: this.size }, (_, i) => this.at(i));
  }

  #slice(from: number, to: number): TagList {
    if (from >= to) return TagList.empty;
    if (from === 0 && to === this.size) return this;
    const base = this.#starts[from]!;
    const starts = this.#starts.slice(from, to + 1).map((s) => s - base);
    return new TagList(this.#json.subarray(base, this.#starts[to]! - 1), starts);
  }

  /** Index of the first tag greater than `last` (binary search). */
  #firstAfter(last: string): number {
    let lo = 0;
    let hi = this.size;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.at(mid) <= last) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

let EMPTY: TagList | undefined;

function latin1(bytes: Uint8Array, start: number, end: number): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset + start, end - start).toString('latin1');
}

/**
 * Tag-list documents (`{"name": …, "tags": […]}`, one per page) → the packed form of `TagList`: entries that aren't valid tags are dropped (and counted), the rest sorted and
 * deduplicated.
 *
 * Documents are read as bytes, not with `JSON.parse`: a scanner checks that each is JSON and notes
 * where each tag lies, and the tags are sorted and packed from there without a string per tag: a
 * fraction of JSON.parse's memory (a 1.5 M-tag list: tens of MB instead of some 200). A tag written
 * with JSON escapes is dropped: no registry writes them, and the bytes must be the tag.
 *
 * Self-contained on purpose: big lists are built in a worker thread from this function's source
 * text (upstream/tag-list-worker.ts), so it must not use imports or anything outside its body.
 */
export function buildTagList(pages: readonly Uint8Array[]): BuiltTagList {
  const MAX_DEPTH = 256;
  const isTagByte = (b: number, first: boolean) =>
    (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x5f || (!first && (b === 0x2e || b === 0x2d));
  let name: string | undefined;
  let dropped = 0;

  // Where the valid tags of the documents lie: page, start, end (exclusive), three per tag.
  let spans = new Uint32Array(3 * 1024);
  let count = 0;
  const note = (page: number, start: number, end: number) => {
    if (3 * count + 3 > spans.length) {
      const bigger = new Uint32Array(spans.length * 2);
      bigger.set(spans);
      spans = bigger;
    }
    spans[3 * count] = page;
    spans[3 * count + 1] = start;
    spans[3 * count + 2] = end;
    count++;
  };

  class NotJson extends Error {}
  for (let p = 0; p < pages.length; p++) {
    const b = pages[p]!;
    let at = b.length >= 3 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf ? 3 : 0; // a BOM
    const ws = () => {
      while (at < b.length && (b[at] === 0x20 || b[at] === 0x0a || b[at] === 0x0d || b[at] === 0x09)) at++;
    };
    const expect = (c: number) => {
      if (b[at] !== c) throw new NotJson();
      at++;
    };
    /** A string starting at `at` (its quote); its contents' span, and whether it has escapes. */
    const str = (): { start: number; end: number; escaped: boolean } => {
      expect(0x22);
      const start = at;
      let escaped = false;
      for (;;) {
        if (at >= b.length) throw new NotJson();
        const c = b[at]!;
        if (c === 0x22) return { start, end: at++, escaped };
        if (c < 0x20) throw new NotJson();
        if (c === 0x5c) {
          escaped = true;
          const e = b[at + 1];
          if (e === 0x75) {
            for (let k = 2; k < 6; k++) {
              const h = b[at + k] ?? 0;
              if (!((h >= 0x30 && h <= 0x39) || (h >= 0x41 && h <= 0x46) || (h >= 0x61 && h <= 0x66))) throw new NotJson();
            }
            at += 6;
          } else if (e === 0x22 || e === 0x5c || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74) {
            at += 2;
          } else throw new NotJson();
        } else at++;
      }
    };
    const text = (s: { start: number; end: number; escaped: boolean }): string => {
      const raw = new TextDecoder().decode(b.subarray(s.start, s.end));
      return s.escaped ? (JSON.parse(`"${raw}"`) as string) : raw;
    };
    const digits = () => {
      const from = at;
      while (at < b.length && b[at]! >= 0x30 && b[at]! <= 0x39) at++;
      if (at === from) throw new NotJson();
    };
    /** Any JSON value, skipped; `kind` of what it was. */
    const value = (depth: number): 'string' | 'array' | 'null' | 'other' => {
      if (depth > MAX_DEPTH) throw new NotJson();
      ws();
      const c = b[at];
      if (c === 0x22) return (str(), 'string');
      if (c === 0x7b) {
        at++;
        ws();
        if (b[at] === 0x7d) return (at++, 'other');
        for (;;) {
          ws();
          str();
          ws();
          expect(0x3a);
          value(depth + 1);
          ws();
          if (b[at] === 0x2c) at++;
          else return (expect(0x7d), 'other');
        }
      }
      if (c === 0x5b) {
        at++;
        ws();
        if (b[at] === 0x5d) return (at++, 'array');
        for (;;) {
          value(depth + 1);
          ws();
          if (b[at] === 0x2c) at++;
          else return (expect(0x5d), 'array');
        }
      }
      for (const [word, kind] of [['true', 'other'], ['false', 'other'], ['null', 'null']] as const) {
        if (b[at] === word.charCodeAt(0)) {
          for (let k = 0; k < word.length; k++) expect(word.charCodeAt(k));
          return kind;
        }
      }
      if (c === 0x2d) at++;
      if (b[at] === 0x30) at++;
      else digits();
      if (b[at] === 0x2e) (at++, digits());
      if (b[at] === 0x65 || b[at] === 0x45) {
        at++;
        if (b[at] === 0x2b || b[at] === 0x2d) at++;
        digits();
      }
      return 'other';
    };
    /** The `tags` array: each entry a string, the valid tags noted. */
    const tags = (): string | undefined => {
      ws();
      if (b[at] !== 0x5b) {
        // distribution answers `"tags": null` for a repository without tags.
        return value(1) === 'null' ? undefined : 'tag list has no tags array';
      }
      at++;
      ws();
      if (b[at] === 0x5d) return (at++, undefined);
      let notString: string | undefined;
      for (;;) {
        ws();
        if (b[at] === 0x22) {
          const t = str();
          let valid = !t.escaped && t.end > t.start && t.end - t.start <= 128 && isTagByte(b[t.start]!, true);
          for (let k = t.start + 1; valid && k < t.end; k++) valid = isTagByte(b[k]!, false);
          if (valid) note(p, t.start, t.end);
          else dropped++;
        } else {
          value(1);
          notString = 'tag list has a tag that is not a string';
        }
        ws();
        if (b[at] === 0x2c) at++;
        else return (expect(0x5d), notString);
      }
    };
    let problem: string | undefined;
    try {
      ws();
      if (b[at] !== 0x7b) {
        value(0);
        ws();
        if (at !== b.length) throw new NotJson();
        return { ok: false, error: 'tag list is not a JSON object' };
      }
      at++;
      ws();
      const pageFrom = count;
      if (b[at] === 0x7d) at++;
      else {
        for (;;) {
          ws();
          const key = text(str());
          ws();
          expect(0x3a);
          if (key === 'tags') {
            count = pageFrom; // the last `tags` counts, as with JSON.parse
            problem = tags();
          } else if (key === 'name') {
            ws();
            if (b[at] === 0x22) {
              const n = text(str());
              if (p === 0) name = n;
              else name ??= n;
            } else value(1);
          } else value(1);
          ws();
          if (b[at] === 0x2c) at++;
          else {
            expect(0x7d);
            break;
          }
        }
      }
      ws();
      if (at !== b.length) throw new NotJson();
    } catch (err) {
      if (err instanceof NotJson || err instanceof SyntaxError) return { ok: false, error: 'tag list is not JSON' };
      throw err;
    }
    if (problem !== undefined) return { ok: false, error: problem };
  }

  const compareSpans = (i: number, j: number): number => {
    const a = pages[spans[3 * i]!]!;
    const b = pages[spans[3 * j]!]!;
    let x = spans[3 * i + 1]!;
    let y = spans[3 * j + 1]!;
    const xe = spans[3 * i + 2]!;
    const ye = spans[3 * j + 2]!;
    for (; x < xe && y < ye; x++, y++) if (a[x] !== b[y]) return a[x]! - b[y]!;
    return xe - x - (ye - y);
  };
  // Sorted by their bytes, which for tags is JavaScript's string order; an index is sorted
  // rather than strings made (a list that comes sorted, the usual case, skips even that).
  const order = new Uint32Array(count);
  for (let i = 0; i < count; i++) order[i] = i;
  let sorted = true;
  for (let i = 1; i < count && sorted; i++) sorted = compareSpans(i - 1, i) <= 0;
  if (!sorted) order.sort(compareSpans);
  let bytes = 0;
  let unique = 0;
  for (let i = 0; i < count; i++) {
    if (i > 0 && compareSpans(order[i - 1]!, order[i]!) === 0) continue;
    bytes += spans[3 * order[i]! + 2]! - spans[3 * order[i]! + 1]! + 3; // quotes and a comma
    unique++;
  }
  const json = new Uint8Array(Math.max(0, bytes - 1)); // no comma after the last
  const starts = new Uint32Array(unique + 1);
  let at = 0;
  let k = 0;
  for (let i = 0; i < count; i++) {
    if (i > 0 && compareSpans(order[i - 1]!, order[i]!) === 0) continue;
    const span = 3 * order[i]!;
    const page = pages[spans[span]!]!;
    if (k > 0) json[at++] = 0x2c; // ,
    starts[k++] = at;
    json[at++] = 0x22; // "
    for (let c = spans[span + 1]!; c < spans[span + 2]!; c++) json[at++] = page[c]!;
    json[at++] = 0x22;
  }
  starts[unique] = json.length + 1;
  return { ok: true, name, json, starts, dropped };
}
