import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sha256Digest, type Digest } from '../domain/digest.js';
import { MediaTypes } from '../domain/media-types.js';
import type { RepoName, Tag } from '../domain/reference.js';
import { MemoryBlobStore } from '../storage/memory/memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../storage/memory/memory-manifest-store.js';
import { formatAge, formatLs, listCached, matchesFilter } from './ls.js';

const T0 = Date.UTC(2025, 0, 1);

async function stores() {
  const s = { metadata: new MemoryMetadataStore(), manifests: new MemoryManifestStore(), blobs: new MemoryBlobStore() };
  const blob = async (text: string): Promise<Digest> => {
    const w = await s.blobs.create();
    await w.write(Buffer.from(text));
    return (await w.commit(sha256Digest(text))).digest;
  };
  const manifest = async (doc: unknown, mediaType: string) => (await s.manifests.put(Buffer.from(JSON.stringify(doc)), mediaType)).digest;
  const tag = async (repo: string, t: string, digest: Digest, mediaType: string, upstream = 'docker.io') =>
    s.metadata.setTag({ upstream, repo: repo as RepoName }, t as Tag, { digest, mediaType, size: 1, validatedAt: T0 });
  return { s, blob, manifest, tag };
}

const image = (config: string, ...layers: string[]) => ({ schemaVersion: 2, mediaType: MediaTypes.dockerManifest, config: { digest: config }, layers: layers.map((digest) => ({ digest })) });
const missing = (n: string) => sha256Digest(`missing-${n}`);

describe('listCached', () => {
  it('counts blobs once per image and once in the summary; missing blobs are referenced, not cached', async () => {
    const { s, blob, manifest, tag } = await stores();
    const config = await blob('config-a');
    const shared = await blob('shared-layer');
    const a = await manifest(image(config, shared, shared, missing('a')), MediaTypes.dockerManifest);
    const b = await manifest(image(await blob('config-b'), shared), MediaTypes.dockerManifest);
    await tag('library/a', '1', a, MediaTypes.dockerManifest);
    await tag('library/b', '1', b, MediaTypes.dockerManifest);
    await blob('unreferenced');
    const { rows, summary } = await listCached(s);
    assert.deepEqual(
      rows.map((r) => [r.repository, r.size, r.blobs, r.manifests, r.validatedAt]),
      [
        ['library/a', 'config-a'.length + 'shared-layer'.length, { cached: 2, referenced: 3 }, { cached: 1, referenced: 1 }, '2025-01-01T00:00:00.000Z'],
        ['library/b', 'config-b'.length + 'shared-layer'.length, { cached: 2, referenced: 2 }, { cached: 1, referenced: 1 }, '2025-01-01T00:00:00.000Z'],
      ],
    );
    const listed = 'config-a'.length + 'config-b'.length + 'shared-layer'.length;
    assert.deepEqual(summary, { repositories: 2, tags: 2, blobs: 3, bytes: listed, store: { blobs: 4, bytes: listed + 'unreferenced'.length } });
  });

  it('an index: blobs of the stored children only, children counted as manifests; a tag whose manifest is gone is 0/1', async () => {
    const { s, blob, manifest, tag } = await stores();
    const child = await manifest(image(await blob('cfg'), await blob('layer')), MediaTypes.dockerManifest);
    const index = await manifest({ schemaVersion: 2, manifests: [{ digest: child }, { digest: missing('arm64') }, { digest: 'not-a-digest' }] }, MediaTypes.ociIndex);
    await tag('library/multi', 'latest', index, MediaTypes.ociIndex);
    await tag('library/gone', '1', missing('manifest'), MediaTypes.dockerManifest);
    const { rows } = await listCached(s);
    assert.deepEqual(
      rows.map((r) => [r.repository, r.size, r.blobs, r.manifests]),
      [
        ['library/gone', 0, { cached: 0, referenced: 0 }, { cached: 0, referenced: 1 }],
        ['library/multi', 'cfg'.length + 'layer'.length, { cached: 2, referenced: 2 }, { cached: 1, referenced: 3 }],
      ],
    );
    const text = formatLs(await listCached(s), { now: T0 + 90_000, root: '/data' });
    assert.match(text, /library\/gone +1 +sha256:\S{12} +0 B +0\/0 blobs, 0\/1 manifests +1m ago/);
    assert.match(text, /library\/multi +latest +sha256:\S{12} +8 B +2\/2 blobs, 1\/3 manifests +1m ago/);
  });

  it('Docker schema 1 manifests reference their fsLayers', async () => {
    const { s, blob, manifest, tag } = await stores();
    const layer = await blob('v1-layer');
    const m = await manifest({ schemaVersion: 1, fsLayers: [{ blobSum: layer }, { blobSum: layer }, { blobSum: missing('v1') }] }, MediaTypes.dockerSchema1Signed);
    await tag('old/app', 'v1', m, MediaTypes.dockerSchema1Signed);
    const [row] = (await listCached(s)).rows;
    assert.deepEqual([row!.size, row!.blobs], ['v1-layer'.length, { cached: 1, referenced: 2 }]);
  });

  it('filters by prefix of the name, of upstream/name, or of the Docker Hub short name', async () => {
    const { s, blob, manifest, tag } = await stores();
    const m = await manifest(image(await blob('c')), MediaTypes.dockerManifest);
    await tag('library/alpine', '3', m, MediaTypes.dockerManifest);
    await tag('org/app', '1', m, MediaTypes.dockerManifest, 'ghcr.io');
    const repos = async (filter: string) => (await listCached(s, { filter })).rows.map((r) => `${r.upstream}/${r.repository}`);
    assert.deepEqual(await repos('alp'), ['docker.io/library/alpine']);
    assert.deepEqual(await repos('ghcr.io/'), ['ghcr.io/org/app']);
    assert.deepEqual(await repos('org/'), ['ghcr.io/org/app']);
    assert.deepEqual(await repos('app'), []);
    assert.equal(matchesFilter('ghcr.io', 'library/x', 'x'), false, 'short names are a Docker Hub convention only');
  });

  it('an empty store: no rows and a one-line message', async () => {
    const { s } = await stores();
    const result = await listCached(s);
    assert.deepEqual(result.rows, []);
    assert.equal(formatLs(result, { now: T0, root: '/data' }), 'nothing cached in /data (store: 0 blobs, 0 B)\n');
  });

  it('formats ages coarsely', () => {
    assert.deepEqual([0, 59_999, 60_000, 3_600_000, 86_400_000 * 3, -5].map(formatAge), ['0s', '59s', '1m', '1h', '3d', '0s']);
  });
});
