/**
 * A synthetic store in the real on-disk layout (layout.ts) for the store-size benchmark and `du` at
 * scale (issue #13): `blobs` blobs with real sha256 names, a quarter as many image manifests (a
 * config and three layers each, plus a base layer shared with other images), and as many tags as
 * blobs (four per image), spread over repositories of 1000 tags. Files are written directly (no temp
 * + fsync + rename each): 100k blobs take seconds. Deterministic: the same `blobs` gives the same store.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Digest } from '../../../domain/digest.js';
import { MediaTypes } from '../../../domain/media-types.js';
import type { RepoName, Tag } from '../../../domain/reference.js';
import type { TagEntry } from '../../tag-store.js';
import { listingRefs } from '../../../domain/manifest-refs.js';
import { formatBlobSizes } from '../blob-sizes.js';
import { formatRefsLine } from '../manifest-refs.js';
import { StorageLayout } from '../layout.js';
import { formatTagIndex } from '../tag-index.js';

export interface SyntheticStoreOptions {
  readonly root: string;
  /** Blobs in the store (at least 8). */
  readonly blobs: number;
  /** Bytes per blob; default 1024. */
  readonly blobSize?: number;
  /** `validatedAt` of every tag (ms since epoch): now for tags within their TTL. */
  readonly validatedAt: number;
  /**
   * Write the derived files a running hubcache keeps (the blob sizes files, the manifest refs files
   * and the tag indexes: blob-sizes.ts, manifest-refs.ts, tag-index.ts), as for a store it wrote;
   * default true. Without them a listing
   * reads every tag file and stats every blob (a store written before they existed).
   */
  readonly indexes?: boolean;
}

export interface SyntheticImage {
  readonly repository: string;
  readonly tags: readonly string[];
  readonly manifest: Digest;
  readonly blobs: readonly Digest[];
}

export interface SyntheticStore {
  readonly blobs: readonly Digest[];
  readonly images: readonly SyntheticImage[];
  readonly tags: number;
  readonly repositories: number;
  /** Blobs no manifest references (the last few). */
  readonly unreferenced: number;
}

const TAGS_PER_IMAGE = 4;
const TAGS_PER_REPOSITORY = 1000;
/** Images 0..SHARED-1 lend their first layer to every image as a base layer. */
const SHARED_BASES = 8;

export function writeSyntheticStore(opts: SyntheticStoreOptions): SyntheticStore {
  const layout = new StorageLayout({ root: opts.root });
  const size = opts.blobSize ?? 1024;
  const made = new Set<string>();
  const write = (path: string, data: string | Buffer) => {
    const dir = dirname(path);
    if (!made.has(dir)) {
      mkdirSync(dir, { recursive: true });
      made.add(dir);
    }
    writeFileSync(path, data);
  };
  mkdirSync(layout.tmpDir, { recursive: true });
  mkdirSync(layout.repositoriesDir, { recursive: true });

  const blobs: Digest[] = [];
  const body = Buffer.alloc(size);
  for (let i = 0; i < opts.blobs; i++) {
    // Distinct content per blob, cheap to make: the index stamped over a fixed pattern.
    body.fill(i % 251);
    body.write(`blob-${i}\n`, 0);
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}` as Digest;
    write(layout.blobPath(digest), body);
    blobs.push(digest);
  }
  const indexes = opts.indexes ?? true;
  if (indexes) {
    const byPrefix = new Map<string, Array<[string, number]>>();
    for (const d of blobs) {
      const hex = d.slice('sha256:'.length);
      const list = byPrefix.get(hex.slice(0, 2)) ?? [];
      list.push([hex, size]);
      byPrefix.set(hex.slice(0, 2), list);
    }
    for (const [prefix, list] of byPrefix) write(layout.blobSizesPath(prefix), formatBlobSizes(list.sort((a, b) => (a[0] < b[0] ? -1 : 1))));
  }
  const tagIndex = new Map<string, Array<[string, TagEntry]>>();
  const refsLines = new Map<string, string>();

  // Four blobs per image; one image fewer than fits, so the last four blobs are unreferenced.
  const imageCount = Math.max(1, Math.floor(opts.blobs / 4) - 1);
  const repositories = Math.max(1, Math.ceil((imageCount * TAGS_PER_IMAGE) / TAGS_PER_REPOSITORY));
  const repository = (r: number) => `bench/r${String(r).padStart(4, '0')}`;
  const images: SyntheticImage[] = [];
  for (let j = 0; j < imageCount; j++) {
    const own = [blobs[4 * j]!, blobs[4 * j + 1]!, blobs[4 * j + 2]!, blobs[4 * j + 3]!];
    const base = blobs[4 * (j % SHARED_BASES) + 1]!;
    const refs = own.includes(base) ? own : [...own, base];
    const doc = {
      schemaVersion: 2,
      mediaType: MediaTypes.dockerManifest,
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: own[0], size },
      layers: [base, ...own.slice(1)].filter((d, k, all) => all.indexOf(d) === k).map((digest) => ({ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest, size })),
    };
    const text = JSON.stringify(doc);
    const manifest = `sha256:${createHash('sha256').update(text).digest('hex')}` as Digest;
    write(layout.manifestMediaTypePath(manifest), JSON.stringify({ mediaType: MediaTypes.dockerManifest }));
    write(layout.manifestPath(manifest), text);
    const hex = manifest.slice('sha256:'.length);
    refsLines.set(hex.slice(0, 2), (refsLines.get(hex.slice(0, 2)) ?? '') + formatRefsLine(hex, listingRefs(Buffer.from(text))));
    const key = { upstream: 'docker.io', repo: repository(Math.floor((j * TAGS_PER_IMAGE) / TAGS_PER_REPOSITORY)) as RepoName };
    write(layout.manifestLinkPath(key, manifest), manifest);
    const tags: string[] = [];
    for (let t = 0; t < TAGS_PER_IMAGE; t++) {
      const tag = `i${String(j).padStart(6, '0')}-${t}`;
      const entry: TagEntry = { digest: manifest, mediaType: MediaTypes.dockerManifest, size: text.length, validatedAt: opts.validatedAt };
      write(layout.tagPath(key, tag as Tag), JSON.stringify(entry));
      tags.push(tag);
      if (!tagIndex.has(key.repo)) tagIndex.set(key.repo, []);
      tagIndex.get(key.repo)!.push([tag, entry]);
    }
    images.push({ repository: key.repo, tags, manifest, blobs: refs });
  }
  if (indexes) {
    for (const [prefix, lines] of refsLines) write(layout.manifestRefsPath(prefix), lines);
    for (const [repo, entries] of tagIndex) {
      const key = { upstream: 'docker.io', repo: repo as RepoName };
      const at = statSync(layout.tagsDir(key), { bigint: true }).mtimeNs.toString();
      writeFileSync(layout.tagIndexPath(key), formatTagIndex(entries, at));
    }
  }
  return { blobs, images, tags: imageCount * TAGS_PER_IMAGE, repositories, unreferenced: opts.blobs - imageCount * 4 };
}
