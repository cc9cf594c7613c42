/**
 * A store in the real on-disk layout (layout.ts) with a great many tags over a few images, for
 * `hubcache ls` at scale (issue #13): the blobs and manifests go through the fs stores, the tag files
 * are written directly (no temp + fsync + rename each), which takes seconds for 100k+ tags.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sha256Digest, type Digest } from '../../../domain/digest.js';
import { MediaTypes } from '../../../domain/media-types.js';
import type { RepoName } from '../../../domain/reference.js';
import { FsBlobStore } from '../fs-blob-store.js';
import { FsManifestStore } from '../fs-manifest-store.js';
import { StorageLayout } from '../layout.js';

export interface ManyTagsOptions {
  readonly root: string;
  readonly tags: number;
  /** Tags per repository (the last one may have fewer); default 1000. */
  readonly tagsPerRepository?: number;
  /** Distinct images (a config and a layer each) the tags point at, round robin; default 4. */
  readonly images?: number;
  /** `validatedAt` of every tag (ms since epoch); default 2025-01-01. */
  readonly validatedAt?: number;
}

export interface ManyTags {
  /** `bench/rNNNNNN`, in listing order. */
  repository(i: number): string;
  /** `tNNNNNNN`, sorted like the listing within a repository. */
  tag(i: number): string;
  readonly repositories: number;
  /** The images' blobs: `images` × 2, with their total bytes. */
  readonly blobs: number;
  readonly bytes: number;
}

export async function writeManyTags(opts: ManyTagsOptions): Promise<ManyTags> {
  const perRepo = opts.tagsPerRepository ?? 1000;
  const blobStore = new FsBlobStore({ root: opts.root });
  const manifestStore = new FsManifestStore({ root: opts.root });
  await blobStore.init();
  await manifestStore.init();
  const blob = async (text: string): Promise<{ digest: Digest; size: number }> => {
    const w = await blobStore.create();
    try {
      await w.write(Buffer.from(text));
      return await w.commit(sha256Digest(text));
    } catch (err) {
      await w.abort();
      throw err;
    }
  };
  const manifests: Digest[] = [];
  let bytes = 0;
  for (let i = 0; i < (opts.images ?? 4); i++) {
    const config = await blob(`config-${i}`);
    const layer = await blob(`layer-${i}-${'x'.repeat(i * 100)}`);
    bytes += config.size + layer.size;
    const doc = { schemaVersion: 2, mediaType: MediaTypes.dockerManifest, config: { digest: config.digest, size: config.size }, layers: [{ digest: layer.digest, size: layer.size }] };
    manifests.push((await manifestStore.put(Buffer.from(JSON.stringify(doc)), MediaTypes.dockerManifest)).digest);
  }

  const layout = new StorageLayout({ root: opts.root });
  const repository = (r: number) => `bench/r${String(r).padStart(6, '0')}`;
  const tag = (i: number) => `t${String(i).padStart(7, '0')}`;
  const validatedAt = opts.validatedAt ?? Date.UTC(2025, 0, 1);
  const repositories = Math.ceil(opts.tags / perRepo);
  for (let r = 0; r < repositories; r++) {
    const dir = layout.tagsDir({ upstream: 'docker.io', repo: repository(r) as RepoName });
    mkdirSync(dir, { recursive: true });
    for (let i = r * perRepo; i < Math.min(opts.tags, (r + 1) * perRepo); i++) {
      const digest = manifests[i % manifests.length]!;
      writeFileSync(join(dir, tag(i)), JSON.stringify({ digest, mediaType: MediaTypes.dockerManifest, size: 1, validatedAt }));
    }
  }
  return { repository: (i) => repository(Math.floor(i / perRepo)), tag, repositories, blobs: manifests.length * 2, bytes };
}
