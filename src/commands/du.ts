import { LRUCache } from 'lru-cache';
import type { Digest } from '../domain/digest.js';
import type { Tag } from '../domain/reference.js';
import type { AccessRecord } from '../storage/access-record.js';
import { tagWindows } from '../storage/tag-listing.js';
import { formatBytes } from './format.js';
import { blobSizeBatches, formatAge, manifestRefsOf, matchesFilter, type LsStores, type RefsOf } from './ls.js';

/**
 * Only reading methods, like `ls`: `du` runs next to a serving process (or inside it: GET /admin/du).
 * `access.lastAccess` reads the last-access record (on a stopped filesystem store it loads
 * `<root>/access.log` on first use and never writes it: nothing is touched or flushed here).
 */
export type DuStores = LsStores & { readonly access: Pick<AccessRecord, 'lastAccess'> };

export interface DuOptions {
  /** Only repositories whose name starts with this (see `matchesFilter`); sharing is still judged against every repository. */
  readonly filter?: string;
  /** Called now and then during the walk (a progress line on a TTY). */
  readonly onProgress?: (p: DuProgress) => void;
  /** Stops the walk (rejects with the signal's reason). */
  readonly signal?: AbortSignal;
}

export interface DuProgress {
  readonly phase: 'blobs' | 'tags';
  readonly blobs: number;
  readonly repositories: number;
  readonly tags: number;
}

/** Objects of a kind that the repository's tags reference, and how many of those are stored. */
export interface DuCount {
  readonly stored: number;
  readonly referenced: number;
}

export interface DuRepository {
  readonly upstream: string;
  readonly repository: string;
  readonly tags: number;
  /** Distinct manifests reachable from the tags (an index and its platform manifests). */
  readonly manifests: DuCount;
  /** Distinct blobs (configs, layers) of the stored manifests. */
  readonly blobs: DuCount;
  /** Bytes of the stored blobs, each counted once. */
  readonly bytes: number;
  /** Of `bytes`: blobs no other repository references (what removing this repository would free). */
  readonly uniqueBytes: number;
  /** Of `bytes`: blobs other repositories reference too. */
  readonly sharedBytes: number;
  /**
   * When one of its tags was last pulled (ISO 8601), the latest of them, from the last-access record
   * (`Storage.access`). A tag with no entry there (stored before the record existed, or its last
   * touches lost with a crash before a flush) counts with its `validatedAt`, when upstream last
   * confirmed it: see `tagsWithoutAccess`.
   */
  readonly lastAccessAt: string | null;
  /** Of `tags`: those with no last-access entry, whose `validatedAt` stood in for it in `lastAccessAt`. */
  readonly tagsWithoutAccess: number;
}

export interface DuUpstream {
  readonly upstream: string;
  readonly repositories: number;
  readonly tags: number;
  /** Distinct stored blobs the upstream's repositories reference, and their bytes. */
  readonly blobs: number;
  readonly bytes: number;
  /** Of `bytes`: blobs no other upstream's repositories reference. */
  readonly uniqueBytes: number;
}

export interface DuStore {
  readonly blobs: number;
  readonly bytes: number;
  /** Distinct stored manifests that cached tags reach. */
  readonly manifests: number;
  /** Blobs that a cached tag's manifest references. */
  readonly referenced: { readonly blobs: number; readonly bytes: number };
  /**
   * Blobs no cached tag's manifest references: pulled by digest only, left by a manifest whose tag
   * moved on, or by a fill whose manifest was never stored.
   */
  readonly unreferenced: { readonly blobs: number; readonly bytes: number };
}

export interface DuResult {
  /** Matching the filter, in store order (by upstream, then name). */
  readonly repositories: DuRepository[];
  /** Every upstream with a cached repository (not filtered). */
  readonly upstreams: DuUpstream[];
  /** The whole store (not filtered). */
  readonly store: DuStore;
}

// As in ls: an index of indexes is followed, deeper nesting is not (and cycles can't loop).
const MAX_INDEX_DEPTH = 2;
/** Per-image results by manifest digest: a manifest shared by many tags is read once while it stays here. */
const IMAGE_CACHE_ENTRIES = 4096;
/** Tag files read concurrently (as in ls). */
const TAG_READS_IN_FLIGHT = 64;
const PROGRESS_EVERY = 4096;

/** Unreferenced, or referenced by more than one owner (repository or upstream). */
const NONE = -1;
const SHARED = -2;

interface DuImage {
  /** Every manifest digest reached (the tag's own, an index's children), stored or not. */
  readonly manifests: readonly string[];
  readonly storedManifests: readonly string[];
  /** Ids of the stored blobs referenced. */
  readonly blobs: readonly number[];
  /** Blob references, stored or not (distinct within the image). */
  readonly blobRefs: readonly string[];
}

/**
 * One pass over the store: the blobs first (one `stat` each, through `list()`), then every cached
 * repository's tags, each tag's manifest (and an index's platform manifests) read once while in a
 * bounded cache. Memory: per stored blob an id, its size and two owner slots (which repository and
 * which upstream reference it, or "several"); per repository a summary; the blob and manifest sets
 * of one repository at a time. Unique bytes come from the owner slots after the walk, so no
 * repository's blob list is kept. Reads only.
 */
export async function diskUsage(stores: DuStores, opts: DuOptions = {}): Promise<DuResult> {
  const ids = new Map<string, number>();
  let sizes: number[] = [];
  let bytes = 0;
  const progress = { phase: 'blobs' as DuProgress['phase'], blobs: 0, repositories: 0, tags: 0 };
  let reported = 0;
  for await (const batch of blobSizeBatches(stores.blobs)) {
    for (const info of batch) {
      ids.set(info.digest, sizes.length);
      sizes.push(info.size);
      bytes += info.size;
    }
    if (sizes.length - reported >= PROGRESS_EVERY) {
      reported = sizes.length;
      opts.signal?.throwIfAborted();
      opts.onProgress?.({ ...progress, blobs: sizes.length });
    }
  }
  progress.blobs = sizes.length;
  progress.phase = 'tags';
  const blobCount = sizes.length;
  const sizeOf = Float64Array.from(sizes);
  sizes = [];
  const repoOwner = new Int32Array(blobCount).fill(NONE);
  const upstreamOwner = new Int32Array(blobCount).fill(NONE);

  const images = new LRUCache<string, DuImage>({ max: IMAGE_CACHE_ENTRIES });
  const refsOf = manifestRefsOf(stores.manifests);
  const image = async (digest: Digest): Promise<DuImage> => {
    const hit = images.get(digest);
    if (hit) return hit;
    const found = { manifests: [] as string[], storedManifests: [] as string[], blobRefs: new Set<string>() };
    await reach(refsOf, digest, 0, found);
    const blobs: number[] = [];
    for (const ref of found.blobRefs) {
      const id = ids.get(ref);
      if (id !== undefined) blobs.push(id);
    }
    const result = { manifests: found.manifests, storedManifests: found.storedManifests, blobs, blobRefs: [...found.blobRefs] };
    images.set(digest, result);
    return result;
  };

  interface Walked extends Omit<DuRepository, 'uniqueBytes' | 'sharedBytes'> {
    readonly index: number;
    readonly shown: boolean;
  }
  const walked: Walked[] = [];
  const upstreams: Array<{ upstream: string; repositories: number; tags: number; blobs: number; bytes: number }> = [];
  const reachedManifests = new Set<string>();
  let inUpstream = new Uint8Array(0);
  let upstreamIndex = -1;

  for await (const key of stores.metadata.listRepositories()) {
    opts.signal?.throwIfAborted();
    if (upstreamIndex < 0 || upstreams[upstreamIndex]!.upstream !== key.upstream) {
      upstreams.push({ upstream: key.upstream, repositories: 0, tags: 0, blobs: 0, bytes: 0 });
      upstreamIndex = upstreams.length - 1;
      inUpstream = new Uint8Array(blobCount);
    }
    const up = upstreams[upstreamIndex]!;
    const repoIndex = walked.length;
    const manifests = new Set<string>();
    const storedManifests = new Set<string>();
    const blobRefs = new Set<string>();
    const blobs = new Set<number>();
    const merged = new Set<DuImage>();
    let tags = 0;
    let lastAccess = -Infinity;
    let tagsWithoutAccess = 0;
    for await (const [window, entries] of tagWindows(stores.metadata, key, TAG_READS_IN_FLIGHT)) {
      const accessed = await Promise.all(window.map((tag) => stores.access.lastAccess({ kind: 'tag', key, tag: tag as Tag })));
      // The window's images read concurrently too (each once), like the tags.
      const digests = [...new Set(entries.flatMap((e) => (e ? [e.digest] : [])))];
      const resolved = new Map(await Promise.all(digests.map(async (d) => [d, await image(d)] as const)));
      for (const [i, entry] of entries.entries()) {
        if (!entry) continue;
        tags++;
        let at = accessed[i];
        if (at === undefined) {
          tagsWithoutAccess++;
          at = entry.validatedAt;
        }
        if (at > lastAccess) lastAccess = at;
        const img = resolved.get(entry.digest)!;
        // An image's sets are merged once per repository (its tags share them: four adds of each blob saved at four tags an image).
        if (merged.has(img)) continue;
        merged.add(img);
        for (const m of img.manifests) manifests.add(m);
        for (const m of img.storedManifests) storedManifests.add(m);
        for (const r of img.blobRefs) blobRefs.add(r);
        for (const b of img.blobs) blobs.add(b);
      }
      progress.tags += entries.length;
      if (progress.tags % PROGRESS_EVERY < TAG_READS_IN_FLIGHT) opts.onProgress?.({ ...progress });
    }
    if (tags === 0) continue;
    let repoBytes = 0;
    for (const b of blobs) {
      repoBytes += sizeOf[b]!;
      repoOwner[b] = repoOwner[b] === NONE ? repoIndex : repoOwner[b] === repoIndex ? repoIndex : SHARED;
      upstreamOwner[b] = upstreamOwner[b] === NONE ? upstreamIndex : upstreamOwner[b] === upstreamIndex ? upstreamIndex : SHARED;
      if (inUpstream[b] === 0) {
        inUpstream[b] = 1;
        up.blobs++;
        up.bytes += sizeOf[b]!;
      }
    }
    for (const m of storedManifests) reachedManifests.add(m);
    up.repositories++;
    up.tags += tags;
    progress.repositories++;
    walked.push({
      index: repoIndex,
      shown: opts.filter === undefined || matchesFilter(key.upstream, key.repo, opts.filter),
      upstream: key.upstream,
      repository: key.repo,
      tags,
      manifests: { stored: storedManifests.size, referenced: manifests.size },
      blobs: { stored: blobs.size, referenced: blobRefs.size },
      bytes: repoBytes,
      lastAccessAt: Number.isFinite(lastAccess) ? new Date(lastAccess).toISOString() : null,
      tagsWithoutAccess,
    });
  }

  // Who owns what, now that every repository has been seen.
  const unique = new Float64Array(walked.length);
  const upstreamUnique = new Float64Array(upstreams.length);
  const referenced = { blobs: 0, bytes: 0 };
  const unreferenced = { blobs: 0, bytes: 0 };
  for (let b = 0; b < blobCount; b++) {
    const size = sizeOf[b]!;
    if (repoOwner[b] === NONE) {
      unreferenced.blobs++;
      unreferenced.bytes += size;
      continue;
    }
    referenced.blobs++;
    referenced.bytes += size;
    if (repoOwner[b]! >= 0) unique[repoOwner[b]!] += size;
    if (upstreamOwner[b]! >= 0) upstreamUnique[upstreamOwner[b]!] += size;
  }
  return {
    repositories: walked
      .filter((r) => r.shown)
      .map((r) => ({
        upstream: r.upstream,
        repository: r.repository,
        tags: r.tags,
        manifests: r.manifests,
        blobs: r.blobs,
        bytes: r.bytes,
        uniqueBytes: unique[r.index]!,
        sharedBytes: r.bytes - unique[r.index]!,
        lastAccessAt: r.lastAccessAt,
        tagsWithoutAccess: r.tagsWithoutAccess,
      })),
    upstreams: upstreams.map((u, i) => ({ ...u, uniqueBytes: upstreamUnique[i]! })),
    store: { blobs: blobCount, bytes, manifests: reachedManifests.size, referenced, unreferenced },
  };
}

/** Adds what manifest `digest` reaches (itself, an index's children) and the blobs they reference to `found`. */
async function reach(refsOf: RefsOf, digest: Digest, depth: number, found: { manifests: string[]; storedManifests: string[]; blobRefs: Set<string> }): Promise<void> {
  if (found.manifests.includes(digest)) return;
  found.manifests.push(digest);
  const refs = await refsOf(digest);
  if (!refs) return;
  found.storedManifests.push(digest);
  if (refs.index) {
    if (depth >= MAX_INDEX_DEPTH) return;
    for (const child of refs.children) if (child !== null) await reach(refsOf, child, depth + 1, found);
    return;
  }
  for (const ref of refs.blobs) found.blobRefs.add(ref);
}

// ---- output ------------------------------------------------------------------------------------

export interface DuFormatOptions {
  /** For the LAST ACCESS column's age (ms since epoch). */
  readonly now: number;
  /** Where the store is (a path, a server's URL), named in the summary. */
  readonly location: string;
  readonly filter?: string;
}

const HEADER = ['UPSTREAM', 'REPOSITORY', 'TAGS', 'MANIFESTS', 'BLOBS', 'SIZE', 'UNIQUE', 'SHARED', 'LAST ACCESS'];

/**
 * The table (one row per repository, aligned), a line per upstream and the store's totals. Cells are
 * separated by at least two spaces, so `split(/ {2,}/)` reads a line back. The rows are few (one per
 * repository, not per tag): widths come from all of them.
 */
export function formatDu(result: DuResult, opts: DuFormatOptions): string {
  const s = result.store;
  let text = '';
  if (result.repositories.length === 0) {
    text += `${opts.filter ? `no cached repository matching ${JSON.stringify(opts.filter)}` : 'no cached repository'} in ${opts.location}\n`;
  } else {
    const rows = result.repositories.map((r) => [
      r.upstream,
      r.repository,
      String(r.tags),
      countText(r.manifests),
      countText(r.blobs),
      formatBytes(r.bytes),
      formatBytes(r.uniqueBytes),
      formatBytes(r.sharedBytes),
      r.lastAccessAt === null ? '-' : `${formatAge(opts.now - Date.parse(r.lastAccessAt))} ago`,
    ]);
    const widths = HEADER.map((h) => h.length);
    for (const cells of rows) for (let i = 0; i < cells.length; i++) if (cells[i]!.length > widths[i]!) widths[i] = cells[i]!.length;
    const line = (cells: string[]) => `${cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')}\n`;
    text += line(HEADER);
    for (const cells of rows) text += line(cells);
  }
  for (const u of result.upstreams) {
    text += `${u.upstream}: ${plural(u.repositories, 'repository', 'repositories')}, ${plural(u.tags, 'tag')}, ${formatBytes(u.bytes)} in ${plural(u.blobs, 'blob')}`;
    text += result.upstreams.length > 1 ? ` (${formatBytes(u.uniqueBytes)} not shared with other upstreams)\n` : '\n';
  }
  text +=
    `store ${opts.location}: ${formatBytes(s.bytes)} in ${plural(s.blobs, 'blob')}, ${plural(s.manifests, 'tagged manifest')}; ` +
    `unreferenced (no cached tag's manifest references them): ${formatBytes(s.unreferenced.bytes)} in ${plural(s.unreferenced.blobs, 'blob')}\n`;
  const unrecorded = result.repositories.reduce((n, r) => n + r.tagsWithoutAccess, 0);
  if (unrecorded > 0) {
    text += `LAST ACCESS: ${plural(unrecorded, 'tag')} with no recorded access counted with when upstream last confirmed them\n`;
  }
  return text;
}

function countText(c: DuCount): string {
  return c.stored === c.referenced ? String(c.stored) : `${c.stored}/${c.referenced}`;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

// ---- running it --------------------------------------------------------------------------------

/**
 * The `DuResult` of a running hubcache: `GET /admin/du` on its metrics listener (`metrics.listen`).
 * Throws an `Error` whose message says what went wrong, and what to do when `server` is not an
 * admin endpoint (the registry port).
 */
export async function fetchDu(server: string, filter: string | undefined, signal?: AbortSignal): Promise<DuResult> {
  const url = new URL('/admin/du', server);
  if (filter !== undefined) url.searchParams.set('repository', filter);
  const res = await fetch(url, { signal, headers: { accept: 'application/json' } });
  const text = await res.text();
  if (res.status === 200) return JSON.parse(text) as DuResult;
  let message = text.slice(0, 300);
  try {
    const err = (JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> }).errors?.[0];
    if (err) message = `${err.code}: ${err.message}`;
  } catch {
    // Not an error body of ours: shown as it is.
  }
  const hint = res.status === 404 && !message.includes('admin') ? ` (--server takes the address of the metrics listener, metrics.listen / --metrics-listen: the admin endpoints are not on the registry port)` : '';
  throw new Error(`GET ${url.href}: ${res.status} ${message}${hint}`);
}

/**
 * Progress of a long walk on a terminal: one line, rewritten at most every 100 ms, erased by `done`.
 * Nothing is written when `out` is not a TTY.
 */
export function progressLine(out: NodeJS.WriteStream, now: () => number = Date.now): { update(p: DuProgress): void; done(): void } {
  let last = 0;
  let shown = false;
  return {
    update(p) {
      if (!out.isTTY || now() - last < 100) return;
      last = now();
      shown = true;
      out.write(`\r\x1b[K${p.phase === 'blobs' ? `reading blobs: ${p.blobs}` : `${p.blobs} blobs; reading tags: ${p.tags} in ${plural(p.repositories, 'repository', 'repositories')}`}`);
    },
    done() {
      if (shown) out.write('\r\x1b[K');
    },
  };
}
