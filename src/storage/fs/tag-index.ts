/**
 * The per-repository tag index of the filesystem store (issue #13: `hubcache ls`/`du` of 100k tags
 * read one file per repository instead of one per tag): `repositories/<upstream>/<repo>/_tagindex`.
 *
 * The tag files (`_tags/<tag>`) stay the truth; the index is derived data, kept by the writers
 * (`FsMetadataStore.setTag`/`deleteTag`, through which pulls, pushes, hosted deletes, eviction,
 * retention and `import` all go) and trusted by a reader only when it provably agrees with them.
 * Lines (tags never contain spaces):
 *
 *   hubcache-tag-index 1          header (first line; an index without it is not trusted)
 *   = <tag> <TagEntry JSON>       the tag's entry
 *   - <tag>                       the tag was deleted
 *   ? <tag>                       a change of the tag began (appended and fsynced BEFORE the tag file
 *                                 changes); until a later `=`/`-` line of the tag, the reader reads
 *                                 that tag's file instead
 *   @ <mtime>                     `_tags/`'s mtime (ns, or `none`) after the last change recorded
 *
 * A change is, under a per-repository queue (one process owns a store): `? tag` (fsynced), the tag
 * file's own atomic write or unlink, then `= tag …` / `- tag` and `@ <mtime of _tags/>` in one
 * append. A reader trusts the index only when its last `@` equals `_tags/`'s current mtime (every
 * rename or unlink in `_tags/` changes it): a tag file changed by anything that didn't record it
 * (a crash after the tag write and before the index append, an older hubcache, a hand edit) makes
 * the index untrusted, and the listing reads the tag files as before. A change whose mtime happened
 * to equal the previous one (coarse timestamps) can't hide either: its `?` line is already durable,
 * so that tag is read from its file. An untrusted or missing index is rebuilt from the tag files
 * in the background by the store's owner (`TagIndexes.startMaintenance`): after the next change of
 * the repository, and for every repository at start. So no tag is ever missing from a listing, and
 * a crash costs at most one slower listing of the repositories it touched.
 *
 * The index grows by two or three lines per change and is rewritten (compacted: one `=` line per
 * tag, in `tmp/` then renamed) in the background when it holds more than twice the lines it had
 * after its last rewrite, plus 1024. It is never fsynced except for the `?` lines: a torn or lost
 * write only makes it untrusted.
 */
import { closeSync, openSync, readFileSync, statSync } from 'node:fs';
import { open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { isTag } from '../../domain/reference.js';
import { toTagEntry, type TagEntry } from '../tag-store.js';
import { isNotFound } from './fs-util.js';

export const TAG_INDEX_HEADER = 'hubcache-tag-index 1';

/** Where one repository's tags and index are. */
export interface TagIndexFiles {
  readonly indexPath: string;
  readonly tagsDir: string;
}

export interface ParsedTagIndex {
  /** Tag → its entry's JSON, from its last `=` line (not parsed: most listings parse each once). */
  readonly entries: Map<string, string>;
  /** Tags with a `?` line and no `=`/`-` after it: read their files. */
  readonly pending: Set<string>;
  /** The last `@` line's mtime, `undefined` when there is none (or no header). */
  readonly at: string | undefined;
  readonly lines: number;
  /** The text doesn't end with a newline (a torn append): the next append starts with one. */
  readonly torn: boolean;
}

export function parseTagIndex(text: string): ParsedTagIndex {
  const entries = new Map<string, string>();
  const pending = new Set<string>();
  let at: string | undefined;
  let lines = 0;
  let start = 0;
  let headed = false;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    // A last line without its newline is a torn append: ignored.
    if (end === -1) break;
    const line = text.slice(start, end);
    start = end + 1;
    lines++;
    if (lines === 1) {
      headed = line === TAG_INDEX_HEADER;
      if (!headed) break;
      continue;
    }
    const kind = line.slice(0, 2);
    const rest = line.slice(2);
    if (kind === '@ ') {
      at = rest;
      continue;
    }
    const space = rest.indexOf(' ');
    const tag = space === -1 ? rest : rest.slice(0, space);
    if (!isTag(tag)) continue;
    if (kind === '? ' && space === -1) pending.add(tag);
    else if (kind === '- ' && space === -1) {
      entries.delete(tag);
      pending.delete(tag);
    } else if (kind === '= ' && space > 0) {
      entries.set(tag, rest.slice(space + 1));
      pending.delete(tag);
    }
  }
  return { entries, pending, at: headed ? at : undefined, lines, torn: text.length > 0 && !text.endsWith('\n') };
}

/** `_tags/`'s mtime in ns as the index records it; `none` when the directory doesn't exist. */
export async function tagsDirMtime(tagsDir: string): Promise<string> {
  try {
    return (await stat(tagsDir, { bigint: true })).mtimeNs.toString();
  } catch (err) {
    if (isNotFound(err)) return 'none';
    throw err;
  }
}

function tagsDirMtimeBlocking(tagsDir: string): string {
  return statSync(tagsDir, { bigint: true, throwIfNoEntry: false })?.mtimeNs.toString() ?? 'none';
}

/**
 * The index when it can be trusted (its last `@` is `_tags/`'s mtime now), else `undefined`: the
 * caller reads the tag files. `blocking`: synchronous reads, for a one-shot reader process.
 */
export async function readTrustedTagIndex(files: TagIndexFiles, blocking: boolean): Promise<ParsedTagIndex | undefined> {
  let text: string;
  try {
    text = blocking ? readSmallFileBlocking(files.indexPath) : await readFile(files.indexPath, 'utf8');
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
  const parsed = parseTagIndex(text);
  if (parsed.at === undefined) return undefined;
  const now = blocking ? tagsDirMtimeBlocking(files.tagsDir) : await tagsDirMtime(files.tagsDir);
  return parsed.at === now ? parsed : undefined;
}

function readSmallFileBlocking(path: string): string {
  const fd = openSync(path, 'r');
  try {
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/** The entries of a parsed index, except pending tags; malformed entries are left out. */
export function indexedEntries(parsed: ParsedTagIndex): Array<[string, TagEntry]> {
  const out: Array<[string, TagEntry]> = [];
  for (const [tag, json] of parsed.entries) {
    if (parsed.pending.has(tag)) continue;
    const entry = parseEntry(json);
    if (entry) out.push([tag, entry]);
  }
  return out;
}

function parseEntry(json: string): TagEntry | undefined {
  try {
    return toTagEntry(JSON.parse(json));
  } catch {
    return undefined;
  }
}

/** The text of a complete index: one `=` line per entry (sorted by tag), then `@ at`. */
export function formatTagIndex(entries: Iterable<readonly [string, TagEntry]>, at: string): string {
  const sorted = [...entries].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  let text = `${TAG_INDEX_HEADER}\n`;
  for (const [tag, entry] of sorted) text += `= ${tag} ${JSON.stringify(entry)}\n`;
  return `${text}@ ${at}\n`;
}

interface RepoState {
  /** The index on disk can be trusted and is kept by appends. */
  trusted: boolean;
  lines: number;
  /** Lines after the last rewrite (or at load): compaction is due at twice that plus 1024. */
  base: number;
  torn: boolean;
}

export interface TagIndexesOptions {
  /** A fresh temp path in the store's tmp/ (same filesystem), for rewrites. */
  readonly tempPath: () => string;
  /** Reads tag files (the truth), in order; `undefined` where a tag has none or it is unreadable. */
  readonly readTags: (files: TagIndexFiles, tags: readonly string[]) => Promise<Array<TagEntry | undefined>>;
}

/**
 * The writers' side: records every tag change in its repository's index (see the top of this file),
 * and, once `startMaintenance` was called (the store's owner), rebuilds untrusted indexes and
 * compacts long ones in the background, one at a time.
 */
export class TagIndexes {
  readonly #o: TagIndexesOptions;
  readonly #repos = new Map<string, RepoState>();
  /** Per repository (index path): the tail of its queue of changes and rewrites. */
  readonly #chains = new Map<string, Promise<void>>();
  readonly #scheduled = new Map<string, TagIndexFiles>();
  #maintaining: AbortSignal | undefined;
  #background: Promise<void> = Promise.resolve();

  constructor(opts: TagIndexesOptions) {
    this.#o = opts;
  }

  /** Lets this instance rebuild and compact indexes in the background until `signal` aborts. */
  startMaintenance(signal: AbortSignal): void {
    this.#maintaining = signal;
    for (const files of this.#scheduled.values()) this.#kick(files);
  }

  /** Resolves when no background rewrite is running or queued. */
  async idle(): Promise<void> {
    let seen: Promise<void> | undefined;
    while (seen !== this.#background) {
      seen = this.#background;
      await seen;
    }
  }

  /**
   * Runs `op`, the change of `tag`'s file, recorded in the index: `line` is `= <tag> <json>` or
   * `- <tag>`. `op`'s error is rethrown; the index's own errors only make it untrusted.
   */
  change(files: TagIndexFiles, tag: string, line: string, op: () => Promise<void>): Promise<void> {
    return this.#serial(files.indexPath, async () => {
      const st = await this.#state(files);
      if (st.trusted) {
        try {
          await append(files.indexPath, `${st.torn ? '\n' : ''}? ${tag}\n`, true);
          st.torn = false;
          st.lines++;
        } catch {
          st.trusted = false;
        }
      }
      let failed: { err: unknown } | undefined;
      try {
        await op();
      } catch (err) {
        failed = { err };
      }
      if (st.trusted) {
        try {
          // A failed change stays pending (`?`): its file is read. The `@` keeps the rest trusted.
          await append(files.indexPath, `${failed ? '' : `${line}\n`}@ ${await tagsDirMtime(files.tagsDir)}\n`, false);
          st.lines += failed ? 1 : 2;
        } catch {
          st.trusted = false;
        }
      }
      if (!st.trusted || st.lines > 2 * st.base + 1024) this.#schedule(files);
      if (failed) throw failed.err;
    });
  }

  /** Checks the index of a repository (at start): an untrusted or missing one is rebuilt in the background. */
  check(files: TagIndexFiles): Promise<void> {
    return this.#serial(files.indexPath, async () => {
      const st = await this.#state(files);
      if (!st.trusted) this.#schedule(files);
    });
  }

  async #state(files: TagIndexFiles): Promise<RepoState> {
    const known = this.#repos.get(files.indexPath);
    if (known) return known;
    let st: RepoState;
    try {
      const text = await readFile(files.indexPath, 'utf8');
      const parsed = parseTagIndex(text);
      const trusted = parsed.at !== undefined && parsed.at === (await tagsDirMtime(files.tagsDir));
      st = { trusted, lines: parsed.lines, base: parsed.lines, torn: parsed.torn };
    } catch {
      st = { trusted: false, lines: 0, base: 0, torn: false };
    }
    this.#repos.set(files.indexPath, st);
    return st;
  }

  #schedule(files: TagIndexFiles): void {
    if (this.#scheduled.has(files.indexPath)) return;
    this.#scheduled.set(files.indexPath, files);
    this.#kick(files);
  }

  #kick(files: TagIndexFiles): void {
    const signal = this.#maintaining;
    if (signal === undefined || signal.aborted) return;
    this.#background = this.#background.then(async () => {
      if (signal.aborted || !this.#scheduled.has(files.indexPath)) return;
      this.#scheduled.delete(files.indexPath);
      await this.#serial(files.indexPath, () => this.#rewrite(files)).catch(() => {
        // Left untrusted: listings read the tag files; the next change schedules it again.
      });
    });
  }

  /**
   * Writes the index anew (under the repository's queue, so none of our changes interleave): from
   * the trusted index plus its pending tags' files, or from every tag file. `_tags/`'s mtime is
   * taken before reading, so a change made behind our back meanwhile leaves the result untrusted.
   */
  async #rewrite(files: TagIndexFiles): Promise<void> {
    const st = await this.#state(files);
    const at = await tagsDirMtime(files.tagsDir);
    let entries: Array<[string, TagEntry]>;
    let current: ParsedTagIndex | undefined;
    if (st.trusted) current = await readTrustedTagIndex(files, false);
    if (current) {
      entries = indexedEntries(current);
      const pending = [...current.pending];
      const read = await this.#o.readTags(files, pending);
      pending.forEach((tag, i) => read[i] && entries.push([tag, read[i]!]));
    } else {
      let names: string[];
      try {
        names = (await readdir(files.tagsDir)).filter((t) => isTag(t));
      } catch (err) {
        if (!isNotFound(err)) throw err;
        names = [];
      }
      entries = [];
      for (let start = 0; start < names.length; start += 64) {
        const window = names.slice(start, start + 64);
        const read = await this.#o.readTags(files, window);
        window.forEach((tag, i) => read[i] && entries.push([tag, read[i]!]));
      }
    }
    const text = formatTagIndex(entries, at);
    // Derived data: no fsync (a torn or lost rewrite is untrusted, then rebuilt), and no mkdir (a
    // repository removed meanwhile stays removed).
    const temp = this.#o.tempPath();
    try {
      const fh = await open(temp, 'wx');
      try {
        await fh.writeFile(text);
      } finally {
        await fh.close();
      }
      await rename(temp, files.indexPath);
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
    const lines = entries.length + 2;
    this.#repos.set(files.indexPath, { trusted: true, lines, base: lines, torn: false });
  }

  #serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#chains.get(key) ?? Promise.resolve();
    const run = prev.then(fn);
    const tail = run.then(
      () => {},
      () => {},
    );
    this.#chains.set(key, tail);
    void tail.then(() => {
      if (this.#chains.get(key) === tail) this.#chains.delete(key);
    });
    return run;
  }
}

async function append(path: string, text: string, durable: boolean): Promise<void> {
  // 'a' without O_CREAT semantics would be nicer: an index removed meanwhile is recreated headless
  // here, which a reader never trusts (no header) and the next rewrite replaces.
  const fh = await open(path, 'a');
  try {
    await fh.writeFile(text);
    if (durable) await fh.datasync();
  } finally {
    await fh.close();
  }
}
