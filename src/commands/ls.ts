import { once } from 'node:events';
import { LRUCache } from 'lru-cache';
import type { Digest } from '../domain/digest.js';
import { listingRefs, type ListingRefs } from '../domain/manifest-refs.js';
import type { RepoKey, Tag } from '../domain/reference.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { ManifestStore, MetadataStore } from '../storage/manifest-store.js';
import { tagWindows } from '../storage/tag-listing.js';
import type { TagEntry } from '../storage/tag-store.js';
import { familiarRepoName } from '../upstream/docker-hub.js';
import { formatBytes } from './format.js';

/**
 * Only reading methods: `ls` runs next to (or instead of) a serving process and must not change
 * the store, so it never calls the stores' `init()` (which creates directories and sweeps tmp/).
 */
export interface LsStores {
  readonly metadata: Pick<MetadataStore, 'listRepositories' | 'listTags' | 'getTag' | 'getTags' | 'listTagEntries'>;
  readonly manifests: Pick<ManifestStore, 'get' | 'refsReader'>;
  readonly blobs: Pick<BlobStore, 'list' | 'listSizes'>;
}

export interface LsOptions {
  /** Only repositories whose name starts with this (`library/alp`, `alpine`, `ghcr.io/org`). */
  readonly filter?: string;
}

/** How many of a kind of object the image references, and how many of those are in the store. */
export interface LsCount {
  readonly cached: number;
  readonly referenced: number;
}

export interface LsRow {
  readonly upstream: string;
  readonly repository: string;
  readonly tag: string;
  readonly digest: string;
  readonly mediaType: string;
  /** When upstream last confirmed the tag (ISO 8601). */
  readonly validatedAt: string;
  /** Bytes of the image's blobs (configs and layers) that are in the store; each blob counted once. */
  readonly size: number;
  /** Blobs of the image's stored manifests. Blobs of platforms whose manifest isn't stored are unknown, hence `manifests`. */
  readonly blobs: LsCount;
  /** The manifest itself (1 of 1), or for an index its platform manifests: only the pulled platforms are stored. */
  readonly manifests: LsCount;
}

export interface LsSummary {
  /** Repositories with at least one listed tag. */
  readonly repositories: number;
  readonly tags: number;
  /** Distinct blobs of the listed images that are in the store, and their bytes. */
  readonly blobs: number;
  readonly bytes: number;
  /** Every blob in the store, listed or not (pulls by digest, untagged manifests, other repositories). */
  readonly store: { readonly blobs: number; readonly bytes: number };
}

export interface LsResult {
  readonly rows: LsRow[];
  readonly summary: LsSummary;
}

// An index of indexes is legal but rare; deeper nesting is not followed (and cycles can't loop).
const MAX_INDEX_DEPTH = 2;

/**
 * Per-image results kept by manifest digest, so a manifest shared by many tags (issue #13: a million
 * tags over a few manifests) is read and parsed once while it stays in this many recent images.
 */
const IMAGE_CACHE_ENTRIES = 4096;

/** Tag files read concurrently: hides the thread pool's latency per read; memory is this many entries. */
const TAG_READS_IN_FLIGHT = 64;

type LsImage = Pick<LsRow, 'size' | 'blobs' | 'manifests'>;

/**
 * One pass over the cached tags, yielding a row per tag as it is read (issue #13: bounded memory,
 * whatever the number of tags). The store's blobs are walked first, once, with one `stat` each;
 * their sizes answer "is it cached, how big" for every image. `summary()` is complete once `rows`
 * has been iterated to the end. What is held meanwhile: the blob sizes and the distinct blobs of
 * the listed images (both bounded by the store's blobs, not its tags), a bounded LRU of per-image
 * results, and one repository's tag names at a time (`listTags`).
 */
export interface LsScan {
  /** Every blob in the store. */
  readonly store: LsSummary['store'];
  readonly rows: AsyncIterable<LsRow>;
  summary(): LsSummary;
}

export async function scanCached(stores: LsStores, opts: LsOptions = {}): Promise<LsScan> {
  const blobSizes = new Map<string, number>();
  const store = { blobs: 0, bytes: 0 };
  for await (const batch of blobSizeBatches(stores.blobs)) {
    for (const info of batch) {
      blobSizes.set(info.digest, info.size);
      store.blobs++;
      store.bytes += info.size;
    }
  }
  const images = new LRUCache<string, LsImage>({ max: IMAGE_CACHE_ENTRIES });
  const refsOf = manifestRefsOf(stores.manifests);
  const listed = new Set<string>();
  let bytes = 0;
  let repositories = 0;
  let tags = 0;

  const image = async (digest: Digest): Promise<LsImage> => {
    const hit = images.get(digest);
    if (hit) return hit;
    const manifests = { cached: 0, referenced: 0 };
    const referenced = new Set<string>();
    await collect(refsOf, digest, 0, manifests, referenced, new Set());
    let size = 0;
    let cached = 0;
    for (const blob of referenced) {
      const blobBytes = blobSizes.get(blob);
      if (blobBytes === undefined) continue;
      size += blobBytes;
      cached++;
      if (!listed.has(blob)) {
        listed.add(blob);
        bytes += blobBytes;
      }
    }
    const result = { size, blobs: { cached, referenced: referenced.size }, manifests };
    images.set(digest, result);
    return result;
  };

  async function* rows(): AsyncIterable<LsRow> {
    for await (const key of stores.metadata.listRepositories()) {
      if (opts.filter && !matchesFilter(key.upstream, key.repo, opts.filter)) continue;
      let listedHere = false;
      for await (const [window, entries] of tagWindows(stores.metadata, key, TAG_READS_IN_FLIGHT)) {
        // Their images read concurrently too, each once; the rows below find them in `images`.
        await Promise.all([...new Set(entries.flatMap((e) => (e ? [e.digest] : [])))].map((d) => image(d)));
        for (let i = 0; i < window.length; i++) {
          const tag = window[i]!;
          const entry = entries[i];
          if (!entry) continue;
          const { size, blobs, manifests } = await image(entry.digest);
          if (!listedHere) repositories++;
          listedHere = true;
          tags++;
          yield {
            upstream: key.upstream,
            repository: key.repo,
            tag,
            digest: entry.digest,
            mediaType: entry.mediaType,
            validatedAt: new Date(entry.validatedAt).toISOString(),
            size,
            // Copies: the cached image is shared by every row of its digest.
            blobs: { ...blobs },
            manifests: { ...manifests },
          };
        }
      }
    }
  }

  return { store, rows: rows(), summary: () => ({ repositories, tags, blobs: listed.size, bytes, store: { ...store } }) };
}

/**
 * The cached repositories and tags, each with what of its content is in the store. Reads only.
 * Holds every row: for tests and small stores; `writeLs` streams.
 */
export async function listCached(stores: LsStores, opts: LsOptions = {}): Promise<LsResult> {
  const scan = await scanCached(stores, opts);
  const rows: LsRow[] = [];
  for await (const row of scan.rows) rows.push(row);
  return { rows, summary: scan.summary() };
}

/**
 * Adds the blobs referenced by manifest `digest` (and, for an index, by its stored children) to
 * `blobs`. `manifests` counts the image manifests: for an index its children, else the manifest itself.
 */
async function collect(refsOf: RefsOf, digest: Digest, depth: number, manifests: { cached: number; referenced: number }, blobs: Set<string>, seen: Set<string>): Promise<void> {
  if (seen.has(digest)) return;
  seen.add(digest);
  const refs = await refsOf(digest);
  if (refs?.index) {
    if (depth >= MAX_INDEX_DEPTH) return;
    for (const child of refs.children) {
      if (child === null) {
        manifests.referenced++;
        continue;
      }
      await collect(refsOf, child, depth + 1, manifests, blobs, seen);
    }
    return;
  }
  manifests.referenced++;
  if (!refs) return;
  manifests.cached++;
  for (const ref of refs.blobs) blobs.add(ref);
}

/** Every stored blob with its size, in batches: `listSizes` where the store has it, else `list()` a blob at a time. */
export async function* blobSizeBatches(blobs: LsStores['blobs']): AsyncIterable<ReadonlyArray<{ readonly digest: Digest; readonly size: number }>> {
  if (blobs.listSizes) {
    yield* blobs.listSizes();
    return;
  }
  for await (const info of blobs.list()) yield [info];
}

/** What a stored manifest references (`listingRefs`), `undefined` when it is not stored. */
export type RefsOf = (digest: Digest) => Promise<ListingRefs | undefined>;

/**
 * The references of stored manifests for one walk: from the store's reader where it has one (the
 * filesystem's manifest-refs record: 256 files instead of every manifest), else each manifest read
 * with `get`.
 */
export function manifestRefsOf(manifests: LsStores['manifests']): RefsOf {
  return (
    manifests.refsReader?.() ??
    (async (digest) => {
      const stored = await manifests.get(digest);
      return stored ? listingRefs(stored.body) : undefined;
    })
  );
}

/**
 * `filter` is a prefix of the repository name, of `upstream/repository`, or (Docker Hub) of the
 * short name without `library/`, so `alpine`, `library/alp` and `docker.io/library/alpine` all work.
 */
export function matchesFilter(upstream: string, repo: string, filter: string): boolean {
  return [repo, `${upstream}/${repo}`, familiarRepoName(upstream, repo)].some((n) => n.startsWith(filter));
}

export interface FormatOptions {
  /** For the VALIDATED column's age (ms since epoch). */
  readonly now: number;
  /** The store's path, named when nothing is cached. */
  readonly root: string;
  readonly filter?: string;
}

/**
 * Column widths come from the first this-many rows (today's look for any store up to that size);
 * later rows only widen a column from where they appear (issue #13: no pass over all rows).
 */
export const WIDTH_SAMPLE_ROWS = 1000;

const HEADER = ['UPSTREAM', 'REPOSITORY', 'TAG', 'DIGEST', 'SIZE', 'CACHED', 'VALIDATED'];

/**
 * The table, a row at a time: `push` returns the text that is ready (nothing while the first
 * `WIDTH_SAMPLE_ROWS` rows are held to size the columns), `end` the rest up to the summary line.
 * Cells are separated by at least two spaces, so `split(/ {2,}/)` reads a line back.
 */
export class LsTableFormatter {
  readonly #opts: FormatOptions;
  readonly #widths = HEADER.map((h) => h.length);
  #held: string[][] | undefined = [];

  constructor(opts: FormatOptions) {
    this.#opts = opts;
  }

  push(r: LsRow): string {
    const cells = [r.upstream, r.repository, r.tag, shortDigest(r.digest), formatBytes(r.size), cachedText(r), `${formatAge(this.#opts.now - Date.parse(r.validatedAt))} ago`];
    this.#widen(cells);
    if (this.#held === undefined) return this.#line(cells);
    this.#held.push(cells);
    return this.#held.length < WIDTH_SAMPLE_ROWS ? '' : this.#flush();
  }

  end(summary: LsSummary): string {
    if (summary.tags === 0) {
      const what = this.#opts.filter ? `nothing cached matching ${JSON.stringify(this.#opts.filter)}` : 'nothing cached';
      return `${what} in ${this.#opts.root} (store: ${plural(summary.store.blobs, 'blob')}, ${formatBytes(summary.store.bytes)})\n`;
    }
    return (
      this.#flush() +
      `${plural(summary.repositories, 'repository', 'repositories')}, ${plural(summary.tags, 'tag')}, ${formatBytes(summary.bytes)} in ${plural(summary.blobs, 'blob')}` +
      ` (whole store: ${formatBytes(summary.store.bytes)} in ${plural(summary.store.blobs, 'blob')})\n`
    );
  }

  /** The header and the held rows, once; afterwards rows go straight out. */
  #flush(): string {
    const held = this.#held;
    if (held === undefined) return '';
    this.#held = undefined;
    let text = this.#line(HEADER);
    for (const cells of held) text += this.#line(cells);
    return text;
  }

  #widen(cells: string[]): void {
    for (let i = 0; i < cells.length; i++) if (cells[i]!.length > this.#widths[i]!) this.#widths[i] = cells[i]!.length;
  }

  #line(cells: string[]): string {
    return `${cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(this.#widths[i]!))).join('  ')}\n`;
  }
}

/** The aligned table and a summary line, or a single line saying that nothing is cached. */
export function formatLs(result: LsResult, opts: FormatOptions): string {
  const table = new LsTableFormatter(opts);
  let text = '';
  for (const row of result.rows) text += table.push(row);
  return text + table.end(result.summary);
}

export interface WriteLsOptions extends FormatOptions {
  /** `{"rows": [...], "summary": {...}}` (one row per line) instead of the table. */
  readonly json?: boolean;
}

/** Output is handed to `out` in chunks of about this many characters. */
const CHUNK_CHARS = 64 * 1024;

/**
 * Streams `ls` to `out` as the store is read, waiting for `drain` when `out` is full, so memory
 * does not grow with the number of tags (issue #13). The JSON document is the one `listCached`
 * gives, written incrementally: `rows` one per line, then `summary`. Resolves with the summary.
 */
export async function writeLs(stores: LsStores, out: NodeJS.WritableStream, opts: WriteLsOptions): Promise<LsSummary> {
  const scan = await scanCached(stores, { filter: opts.filter });
  let pending = '';
  const emit = async (text: string, force = false) => {
    pending += text;
    if (pending.length < CHUNK_CHARS && !force) return;
    const chunk = pending;
    pending = '';
    if (chunk.length > 0 && !out.write(chunk)) await once(out, 'drain');
  };
  if (opts.json) {
    let first = true;
    await emit('{"rows":[');
    for await (const row of scan.rows) {
      await emit(`${first ? '\n' : ',\n'}${JSON.stringify(row)}`);
      first = false;
    }
    await emit(`${first ? '' : '\n'}],\n"summary":${JSON.stringify(scan.summary())}}\n`, true);
  } else {
    const table = new LsTableFormatter(opts);
    for await (const row of scan.rows) await emit(table.push(row));
    await emit(table.end(scan.summary()), true);
  }
  return scan.summary();
}

function cachedText(r: LsRow): string {
  const blobs = `${r.blobs.cached}/${r.blobs.referenced} blobs`;
  // A single stored manifest needs no mention; an index (or a tag whose manifest is gone) does.
  return r.manifests.referenced > 1 || r.manifests.cached < r.manifests.referenced ? `${blobs}, ${r.manifests.cached}/${r.manifests.referenced} manifests` : blobs;
}

function shortDigest(digest: string): string {
  return digest.slice(0, 'sha256:'.length + 12);
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** `45s`, `12m`, `3h`, `2d`: coarse, like `docker images`. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}
