import { isDigest, type Digest } from '../domain/digest.js';
import { isIndexMediaType } from '../domain/media-types.js';
import type { Tag } from '../domain/reference.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { ManifestStore, MetadataStore } from '../storage/manifest-store.js';
import { familiarRepoName } from '../upstream/docker-hub.js';
import { formatBytes } from './format.js';

/**
 * Only reading methods: `ls` runs next to (or instead of) a serving process and must not change
 * the store, so it never calls the stores' `init()` (which creates directories and sweeps tmp/).
 */
export interface LsStores {
  readonly metadata: Pick<MetadataStore, 'listRepositories' | 'listTags' | 'getTag'>;
  readonly manifests: Pick<ManifestStore, 'get'>;
  readonly blobs: Pick<BlobStore, 'stat' | 'list'>;
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

interface ManifestDoc {
  config?: { digest?: unknown };
  layers?: Array<{ digest?: unknown }>;
  manifests?: Array<{ digest?: unknown }>;
  /** Docker schema 1. */
  fsLayers?: Array<{ blobSum?: unknown }>;
}

// An index of indexes is legal but rare; deeper nesting is not followed (and cycles can't loop).
const MAX_INDEX_DEPTH = 2;

/** The cached repositories and tags, each with what of its content is in the store. Reads only. */
export async function listCached(stores: LsStores, opts: LsOptions = {}): Promise<LsResult> {
  const blobSizes = new Map<string, number | undefined>();
  const statBlob = async (digest: string): Promise<number | undefined> => {
    if (!blobSizes.has(digest)) blobSizes.set(digest, isDigest(digest) ? (await stores.blobs.stat(digest))?.size : undefined);
    return blobSizes.get(digest);
  };

  const rows: LsRow[] = [];
  const repositories = new Set<string>();
  const listed = new Set<string>();
  for await (const key of stores.metadata.listRepositories()) {
    if (opts.filter && !matchesFilter(key.upstream, key.repo, opts.filter)) continue;
    for (const tag of await stores.metadata.listTags(key)) {
      const entry = await stores.metadata.getTag(key, tag as Tag);
      if (!entry) continue;
      const manifests = { cached: 0, referenced: 0 };
      const referenced = new Set<string>();
      await collect(stores, entry.digest, 0, manifests, referenced, new Set());
      let size = 0;
      let cached = 0;
      for (const digest of referenced) {
        const bytes = await statBlob(digest);
        if (bytes === undefined) continue;
        size += bytes;
        cached++;
        listed.add(digest);
      }
      repositories.add(`${key.upstream}/${key.repo}`);
      rows.push({
        upstream: key.upstream,
        repository: key.repo,
        tag,
        digest: entry.digest,
        mediaType: entry.mediaType,
        validatedAt: new Date(entry.validatedAt).toISOString(),
        size,
        blobs: { cached, referenced: referenced.size },
        manifests,
      });
    }
  }

  let storeBlobs = 0;
  let storeBytes = 0;
  for await (const info of stores.blobs.list()) {
    storeBlobs++;
    storeBytes += info.size;
  }
  let bytes = 0;
  for (const digest of listed) bytes += blobSizes.get(digest) ?? 0;
  return {
    rows,
    summary: { repositories: repositories.size, tags: rows.length, blobs: listed.size, bytes, store: { blobs: storeBlobs, bytes: storeBytes } },
  };
}

/**
 * Adds the blobs referenced by manifest `digest` (and, for an index, by its stored children) to
 * `blobs`. `manifests` counts the image manifests: for an index its children, else the manifest itself.
 */
async function collect(stores: LsStores, digest: Digest, depth: number, manifests: { cached: number; referenced: number }, blobs: Set<string>, seen: Set<string>): Promise<void> {
  if (seen.has(digest)) return;
  seen.add(digest);
  const stored = await stores.manifests.get(digest);
  const doc = stored ? parseManifest(stored.body) : undefined;
  if (stored && doc && (isIndexMediaType(stored.descriptor.mediaType) || Array.isArray(doc.manifests))) {
    if (depth >= MAX_INDEX_DEPTH) return;
    for (const child of doc.manifests ?? []) {
      if (typeof child.digest !== 'string' || !isDigest(child.digest)) {
        manifests.referenced++;
        continue;
      }
      await collect(stores, child.digest, depth + 1, manifests, blobs, seen);
    }
    return;
  }
  manifests.referenced++;
  if (!stored) return;
  manifests.cached++;
  const refs = [doc?.config?.digest, ...(doc?.layers ?? []).map((l) => l.digest), ...(doc?.fsLayers ?? []).map((l) => l.blobSum)];
  for (const ref of refs) if (typeof ref === 'string') blobs.add(ref);
}

function parseManifest(body: Buffer): ManifestDoc | undefined {
  try {
    const doc: unknown = JSON.parse(body.toString('utf8'));
    return typeof doc === 'object' && doc !== null ? (doc as ManifestDoc) : undefined;
  } catch {
    return undefined;
  }
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

/** The aligned table and a summary line, or a single line saying that nothing is cached. */
export function formatLs(result: LsResult, opts: FormatOptions): string {
  const { rows, summary } = result;
  if (rows.length === 0) {
    const what = opts.filter ? `nothing cached matching ${JSON.stringify(opts.filter)}` : 'nothing cached';
    return `${what} in ${opts.root} (store: ${plural(summary.store.blobs, 'blob')}, ${formatBytes(summary.store.bytes)})\n`;
  }
  const table = [
    ['UPSTREAM', 'REPOSITORY', 'TAG', 'DIGEST', 'SIZE', 'CACHED', 'VALIDATED'],
    ...rows.map((r) => [r.upstream, r.repository, r.tag, shortDigest(r.digest), formatBytes(r.size), cachedText(r), `${formatAge(opts.now - Date.parse(r.validatedAt))} ago`]),
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  const lines = table.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '));
  lines.push(
    `${plural(summary.repositories, 'repository', 'repositories')}, ${plural(summary.tags, 'tag')}, ${formatBytes(summary.bytes)} in ${plural(summary.blobs, 'blob')}` +
      ` (whole store: ${formatBytes(summary.store.bytes)} in ${plural(summary.store.blobs, 'blob')})`,
  );
  return `${lines.join('\n')}\n`;
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
