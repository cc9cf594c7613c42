import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sha256Digest, type Digest } from '../domain/digest.js';
import { MediaTypes } from '../domain/media-types.js';
import { HOSTED_UPSTREAM, type RepoKey, type RepoName } from '../domain/reference.js';
import { MemoryBlobStore } from '../storage/memory/memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../storage/memory/memory-manifest-store.js';
import { UploadSessions } from '../storage/upload-sessions.js';
import { HostedContent } from './hosted-content.js';
import { HostedRegistry } from './hosted-registry.js';
import { bodyOf } from '../storage/testing/helpers.js';

const key = (repo: string): RepoKey => ({ upstream: HOSTED_UPSTREAM, repo: repo as RepoName });

function setup() {
  const stores = { blobs: new MemoryBlobStore(), manifests: new MemoryManifestStore(), metadata: new MemoryMetadataStore() };
  const uploads = new UploadSessions({ blobs: stores.blobs, timeoutMs: 60_000, maxSessions: 10 });
  const hosted = new HostedRegistry({ ...stores, uploads, allowDelete: true });
  return { stores, uploads, hosted };
}

async function pushImage(hosted: HostedRegistry, repo: RepoKey, seed: string): Promise<{ config: Digest; layer: Digest; manifest: Digest; bytes: number }> {
  const config = Buffer.from(`{"seed":"${seed}"}`);
  const layer = Buffer.from(`layer of ${seed}`);
  await hosted.uploadWhole(repo, sha256Digest(config), bodyOf(config));
  await hosted.uploadWhole(repo, sha256Digest(layer), bodyOf(layer));
  const body = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256Digest(layer), size: layer.length }],
    }),
  );
  await hosted.putManifest(repo, { kind: 'tag', tag: 'v1' as never }, body, MediaTypes.ociManifest);
  return { config: sha256Digest(config), layer: sha256Digest(layer), manifest: sha256Digest(body), bytes: config.length + layer.length + body.length };
}

describe('HostedContent: what eviction must not take (isProtected) and the hosted gauges', () => {
  it('protects everything until the walk at start has finished; then exactly the hosted blobs and manifests', async () => {
    const { stores, uploads, hosted } = setup();
    const cached = sha256Digest('cached only');
    assert.equal(hosted.content.isProtected(cached), true, 'unknown yet: protected');
    assert.equal(hosted.content.usage(), undefined);
    await hosted.content.load(stores);
    assert.equal(hosted.content.isProtected(cached), false);
    const img = await pushImage(hosted, key('myorg/app'), 'a');
    for (const d of [img.config, img.layer, img.manifest]) assert.equal(hosted.content.isProtected(d), true, d);
    assert.deepEqual(hosted.content.usage(), { bytes: img.bytes, objects: 3 });
    await uploads.close();
  });

  it('counts links: content shared by two repositories stays protected until both let go (deletes)', async () => {
    const { stores, uploads, hosted } = setup();
    await hosted.content.load(stores);
    const a = await pushImage(hosted, key('myorg/a'), 'shared');
    await pushImage(hosted, key('myorg/b'), 'shared');
    assert.equal(hosted.content.usage()!.objects, 3, 'each digest once');
    await hosted.deleteBlob(key('myorg/a'), a.layer);
    assert.equal(hosted.content.isProtected(a.layer), true, 'still in myorg/b');
    await hosted.deleteBlob(key('myorg/b'), a.layer);
    assert.equal(hosted.content.isProtected(a.layer), false);
    await hosted.deleteManifest(key('myorg/a'), { kind: 'digest', digest: a.manifest });
    await hosted.deleteManifest(key('myorg/b'), { kind: 'digest', digest: a.manifest });
    assert.equal(hosted.content.isProtected(a.manifest), false);
    assert.equal(hosted.content.isProtected(a.config), true);
    assert.deepEqual(hosted.content.usage()!.objects, 1);
    await uploads.close();
  });

  it('load at start finds what earlier processes pushed, from the metadata store', async () => {
    const { stores, uploads, hosted } = setup();
    await hosted.content.load(stores);
    const img = await pushImage(hosted, key('myorg/app'), 'restart');
    const fresh = new HostedContent();
    assert.deepEqual(await fresh.load(stores), hosted.content.usage());
    for (const d of [img.config, img.layer, img.manifest]) assert.equal(fresh.isProtected(d), true);
    await uploads.close();
  });

  it('a blob is held while its upload commits: a failed verification leaves nothing protected', async () => {
    const { stores, uploads, hosted } = setup();
    await hosted.content.load(stores);
    const claimed = sha256Digest('claimed');
    await assert.rejects(hosted.uploadWhole(key('myorg/app'), claimed, bodyOf(Buffer.from('other bytes'))), /provided digest did not match/);
    assert.equal(hosted.content.isProtected(claimed), false);
    assert.deepEqual(hosted.content.usage(), { bytes: 0, objects: 0 });
    await uploads.close();
  });
});
