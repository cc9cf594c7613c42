import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, beforeEach, describe, it } from 'node:test';
import type { EvictedItem } from '../cache/evictor.js';
import { Evictor } from '../cache/evictor.js';
import { sha256Digest, type Digest } from '../domain/digest.js';
import { RegistryError } from '../domain/errors.js';
import { MediaTypes } from '../domain/media-types.js';
import { HOSTED_UPSTREAM, type RepoKey, type RepoName, type Tag } from '../domain/reference.js';
import { createLogger } from '../lib/logger.js';
import { FsStorage } from '../storage/fs/fs-storage.js';
import type { Ownership } from '../storage/storage.js';
import { UploadSessions } from '../storage/upload-sessions.js';
import { HostedGc } from './hosted-gc.js';
import { HostedRegistry } from './hosted-registry.js';
import { imageManifestOf, bodyOf, gated } from '../storage/testing/helpers.js';

const HOUR = 3_600_000;
const logger = createLogger({ level: 'error', format: 'json' });
const key = (repo: string): RepoKey => ({ upstream: HOSTED_UPSTREAM, repo: repo as RepoName });
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('HostedGc (garbage collection of hosted content after deletes)', () => {
  let storage: FsStorage;
  let ownership: Ownership;
  let uploads: UploadSessions;
  let hosted: HostedRegistry;
  /** The GC's clock; the store's own times are the real ones (files' mtimes). */
  let now: number;

  beforeEach(async () => {
    const root = mkdtempSync(join(tmpdir(), 'hubcache-gc-'));
    dirs.push(root);
    storage = new FsStorage({ root, lockStaleMs: 30_000, logger });
    ownership = await storage.acquireOwnership();
    await storage.init();
    uploads = new UploadSessions({ blobs: storage.blobs, timeoutMs: HOUR, maxSessions: 10 });
    hosted = new HostedRegistry({ blobs: storage.blobs, manifests: storage.manifests, metadata: storage.metadata, uploads, allowDelete: true });
    await hosted.content.load(storage);
    now = Date.now();
  });
  afterEach(async () => {
    await uploads.close();
    await storage.close();
    await ownership.release();
  });

  const gc = (over: Partial<ConstructorParameters<typeof HostedGc>[0]> = {}) => new HostedGc({ storage, content: hosted.content, gracePeriodMs: HOUR, clock: () => now, logger, ...over });
  const run = async (g = gc(), dryRun = false) => {
    const removed: EvictedItem[] = [];
    const result = await g.collect({ dryRun, record: (i) => removed.push(i) });
    return { removed, ...result };
  };
  const push = async (repo: string, tag: string, blobs: Buffer[]) => {
    for (const b of blobs) await hosted.uploadWhole(key(repo), sha256Digest(b), bodyOf(b));
    const body = imageManifestOf(blobs);
    await hosted.putManifest(key(repo), { kind: 'tag', tag: tag as Tag }, body, MediaTypes.ociManifest);
    return sha256Digest(body);
  };
  const has = async (d: Digest) => (await storage.blobs.stat(d)) !== undefined;

  it("push A and B sharing a layer, delete A: after the grace period A's unique blobs and its manifest go, the shared layer stays; before it nothing goes", async () => {
    const shared = Buffer.from('shared base layer');
    const aOnly = [Buffer.from('{"config":"a"}'), Buffer.from('layer only in a')];
    const bOnly = Buffer.from('{"config":"b"}');
    const a = await push('myorg/app', 'a', [aOnly[0]!, shared, aOnly[1]!]);
    const b = await push('myorg/app', 'b', [bOnly, shared]);
    await hosted.deleteManifest(key('myorg/app'), { kind: 'digest', digest: a });

    now += HOUR / 2;
    const early = await run();
    assert.deepEqual(early.removed, [], 'nothing within the grace period');

    now += HOUR;
    const dry = await run(gc(), true);
    assert.deepEqual(dry.removed.map((r) => r.digest).sort(), [...aOnly.map((x) => sha256Digest(x)), a].sort());
    assert.ok(await has(sha256Digest(aOnly[1]!)), 'a dry run removes nothing');

    const { removed, errors } = await run();
    assert.equal(errors, 0);
    assert.deepEqual(removed.filter((r) => r.kind === 'blob').map((r) => r.digest).sort(), aOnly.map((x) => sha256Digest(x)).sort());
    assert.deepEqual(removed.filter((r) => r.kind === 'manifest').map((r) => r.digest), [a]);
    assert.ok(removed.every((r) => r.reason === 'unreferenced'));
    for (const x of aOnly) {
      assert.equal(await has(sha256Digest(x)), false);
      assert.equal(await storage.metadata.hasBlob(key('myorg/app'), sha256Digest(x)), false, 'its link went too');
    }
    assert.ok(await has(sha256Digest(shared)), 'the layer B shares stays');
    assert.equal(await storage.manifests.get(a), undefined);
    // B still pulls whole.
    const got = await hosted.getManifest(key('myorg/app'), { kind: 'tag', tag: 'b' as Tag }, { signal: AbortSignal.timeout(5_000) });
    assert.equal(got.descriptor.digest, b);
    for (const d of [bOnly, shared]) await hosted.getBlob(key('myorg/app'), sha256Digest(d), { head: true, signal: AbortSignal.timeout(5_000) });
    assert.equal(hosted.content.holds(sha256Digest(aOnly[1]!)), false, 'no longer counted as hosted');
    assert.deepEqual((await run()).removed, [], 'a second pass finds nothing');
  });

  it('keeps a blob uploaded but not referenced yet within the grace period; collects it after', async () => {
    const orphan = Buffer.from('uploaded, manifest not pushed yet');
    await hosted.uploadWhole(key('myorg/app'), sha256Digest(orphan), bodyOf(orphan));
    now += HOUR / 2;
    assert.deepEqual((await run()).removed, []);
    assert.ok(await has(sha256Digest(orphan)));
    now += HOUR;
    assert.deepEqual((await run()).removed.map((r) => r.digest), [sha256Digest(orphan)]);
  });

  it('an upload (or mount) again restarts the grace period of the link', async () => {
    const blob = Buffer.from('uploaded twice');
    await hosted.uploadWhole(key('myorg/app'), sha256Digest(blob), bodyOf(blob));
    const linkedFirst = await storage.metadata.blobLinkedAt(key('myorg/app'), sha256Digest(blob));
    // The link's time is the file's mtime: moved back by hand as if the upload were 2 h old.
    const { utimes } = await import('node:fs/promises');
    const old = new Date(now - 2 * HOUR);
    await utimes(storage.layout.blobLinkPath(key('myorg/app'), sha256Digest(blob)), old, old);
    assert.ok((await storage.metadata.blobLinkedAt(key('myorg/app'), sha256Digest(blob)))! < linkedFirst!);
    await hosted.mount(key('myorg/app'), sha256Digest(blob));
    assert.deepEqual((await run()).removed, [], 'mounted again just now: young');
  });

  it('keeps a blob a cached (mirrored) manifest references, dropping only its hosted link', async () => {
    const layer = Buffer.from('a layer also in a public image');
    const config = Buffer.from('{"config":"private"}');
    const a = await push('myorg/app', 'v1', [config, layer]);
    // The cache stored a public image with the same layer.
    const publicManifest = imageManifestOf([Buffer.from('{"config":"public"}'), layer]);
    const cached = await storage.manifests.put(publicManifest, MediaTypes.ociManifest);
    await storage.metadata.linkManifest({ upstream: 'docker.io', repo: 'library/base' as RepoName }, cached.digest);
    await hosted.deleteManifest(key('myorg/app'), { kind: 'digest', digest: a });
    now += 2 * HOUR;
    const { removed } = await run();
    assert.deepEqual(removed.filter((r) => r.kind === 'blob').map((r) => r.digest), [sha256Digest(config)]);
    assert.ok(await has(sha256Digest(layer)), 'the cache still references it');
    assert.equal(await storage.metadata.hasBlob(key('myorg/app'), sha256Digest(layer)), false, 'no longer hosted');
    assert.ok(await storage.manifests.get(cached.digest), 'the cached manifest is linked: kept');
  });

  it('keeps what another hosted repository links, and what is protected (pins)', async () => {
    const layer = Buffer.from('mounted into a second repository');
    const config = Buffer.from('{"config":"one"}');
    const a = await push('myorg/one', 'v1', [config, layer]);
    await hosted.mount(key('myorg/two'), sha256Digest(layer));
    await push('myorg/two', 'v1', [Buffer.from('{"config":"two"}'), layer]);
    await hosted.deleteManifest(key('myorg/one'), { kind: 'digest', digest: a });
    now += 2 * HOUR;
    const { removed } = await run(gc({ isProtected: (d) => d === sha256Digest(config) }));
    assert.deepEqual(removed.filter((r) => r.kind === 'blob'), [], 'the layer is in myorg/two, the config pinned');
    assert.ok(await has(sha256Digest(layer)));
    assert.ok(await has(sha256Digest(config)));
    assert.equal(await storage.metadata.hasBlob(key('myorg/one'), sha256Digest(layer)), false, "myorg/one's garbage link is gone");
  });

  it('a manifest PUT arriving while its blob is being collected waits, then fails with MANIFEST_BLOB_UNKNOWN: never a manifest with a missing blob', async () => {
    const layer = Buffer.from('collected under a push');
    const config = Buffer.from('{"config":"race"}');
    await hosted.uploadWhole(key('myorg/app'), sha256Digest(config), bodyOf(config));
    await hosted.uploadWhole(key('myorg/app'), sha256Digest(layer), bodyOf(layer));
    now += 2 * HOUR; // both uploads are garbage to the pass: no manifest references them
    let enterDelete!: () => void;
    const inDelete = new Promise<void>((r) => (enterDelete = r));
    let letDelete!: () => void;
    const deleteMayGo = new Promise<void>((r) => (letDelete = r));
    const g = gc({
      storage: {
        ...storage,
        blobs: gated(storage.blobs, 'delete', async () => {
          enterDelete();
          await deleteMayGo;
        }),
        manifests: storage.manifests,
        metadata: storage.metadata,
        access: storage.access,
      },
    });
    const pass = run(g);
    await inDelete;
    // The pass holds the first blob: the PUT waits for it.
    const put = hosted.putManifest(key('myorg/app'), { kind: 'tag', tag: 'v1' as Tag }, imageManifestOf([config, layer]), MediaTypes.ociManifest);
    letDelete();
    await pass;
    await assert.rejects(put, (err: unknown) => err instanceof RegistryError && err.code === 'MANIFEST_BLOB_UNKNOWN');
    assert.equal(await storage.metadata.getTag(key('myorg/app'), 'v1' as Tag), undefined);
  });

  it('a blob a manifest PUT is using is left alone by the pass; the PUT succeeds with every blob present', async () => {
    const layer = Buffer.from('kept by its push');
    const config = Buffer.from('{"config":"kept"}');
    await hosted.uploadWhole(key('myorg/app'), sha256Digest(config), bodyOf(config));
    await hosted.uploadWhole(key('myorg/app'), sha256Digest(layer), bodyOf(layer));
    now += 2 * HOUR;
    // The PUT pauses after its checks, just before it links the manifest; the pass runs then.
    let enterLink!: () => void;
    const inLink = new Promise<void>((r) => (enterLink = r));
    let letLink!: () => void;
    const linkMayGo = new Promise<void>((r) => (letLink = r));
    const pausing = new HostedRegistry({
      blobs: storage.blobs,
      manifests: storage.manifests,
      metadata: gated(storage.metadata, 'linkManifest', async () => {
        enterLink();
        await linkMayGo;
      }),
      uploads,
      allowDelete: true,
      content: hosted.content,
    });
    const put = pausing.putManifest(key('myorg/app'), { kind: 'tag', tag: 'v1' as Tag }, imageManifestOf([config, layer]), MediaTypes.ociManifest);
    await inLink;
    const during = await run();
    assert.deepEqual(during.removed.filter((r) => r.kind === 'blob'), [], 'in use by the PUT');
    letLink();
    const { descriptor } = await put;
    for (const d of [config, layer]) assert.ok(await has(sha256Digest(d)));
    const after = await run();
    assert.deepEqual(after.removed, [], 'referenced now');
    assert.equal((await storage.metadata.getTag(key('myorg/app'), 'v1' as Tag))?.digest, descriptor.digest);
  });

  it('a pass that died between deleting the bytes and the links is finished by the next; a PUT meanwhile is refused', async () => {
    const layer = Buffer.from('crash in the middle');
    await hosted.uploadWhole(key('myorg/app'), sha256Digest(layer), bodyOf(layer));
    const config = Buffer.from('{"config":"crash"}');
    await hosted.uploadWhole(key('myorg/app'), sha256Digest(config), bodyOf(config));
    // What the crashed pass left: the bytes gone, the link still there.
    await storage.blobs.delete(sha256Digest(layer));
    await assert.rejects(
      hosted.putManifest(key('myorg/app'), { kind: 'tag', tag: 'v1' as Tag }, imageManifestOf([config, layer]), MediaTypes.ociManifest),
      (err: unknown) => err instanceof RegistryError && err.code === 'MANIFEST_BLOB_UNKNOWN',
    );
    now += 2 * HOUR;
    await run();
    assert.equal(await storage.metadata.hasBlob(key('myorg/app'), sha256Digest(layer)), false);
  });

  it('runs periodically online: the first automatic pass collects, the next within the hour leaves it out', async () => {
    const a = await push('myorg/app', 'v1', [Buffer.from('{"config":"tick"}'), Buffer.from('tick layer')]);
    await hosted.deleteManifest(key('myorg/app'), { kind: 'digest', digest: a });
    now += 2 * HOUR;
    const g = gc();
    let calls = 0;
    const evictor = new Evictor({
      storage,
      highWatermark: 90,
      lowWatermark: 80,
      tagRetentionMs: 1000 * HOUR,
      concurrency: 2,
      isProtected: hosted.content.isProtected,
      clock: () => now,
      logger,
      collectGarbage: (o) => (calls++, g.collect(o)),
    });
    const first = await evictor.tick();
    assert.equal(first?.mode, 'auto');
    assert.equal(first?.removed.filter((r) => r.reason === 'unreferenced').length, 3);
    now += HOUR / 2;
    assert.equal(await evictor.tick(), undefined, 'not due again within the hour');
    assert.equal(calls, 1);
    now += HOUR;
    await evictor.tick();
    assert.equal(calls, 2);
    await evictor.stop();
  });

  it('runs in the evictor\'s gc pass and reports its removals there (reason "unreferenced")', async () => {
    const a = await push('myorg/app', 'v1', [Buffer.from('{"config":"e"}'), Buffer.from('evictor layer')]);
    await hosted.deleteManifest(key('myorg/app'), { kind: 'digest', digest: a });
    now += 2 * HOUR;
    const g = gc();
    const evictor = new Evictor({ storage, highWatermark: 90, lowWatermark: 80, tagRetentionMs: 1000 * HOUR, concurrency: 2, isProtected: hosted.content.isProtected, clock: () => now, logger, collectGarbage: (o) => g.collect(o) });
    const report = await evictor.run({ mode: 'gc' });
    assert.equal(report.errors, 0);
    assert.equal(report.removed.filter((r) => r.reason === 'unreferenced' && r.kind === 'blob').length, 2);
    assert.equal(report.removed.filter((r) => r.reason === 'unreferenced' && r.kind === 'manifest').length, 1);
  });
});
