/**
 * Issue #15: a manifest PUT on one replica and hosted garbage collection on another, interleaved
 * deterministically (pause points in the store), with the per-digest guards in a REAL redis-server.
 * Replica A pushes (its own HostedContent, its own RedisCoordinator), replica B collects (its own
 * HostedContent and coordinator): one store, nothing shared in memory. The control runs the same
 * interleaving without the Redis guards and ends with a manifest whose blob is gone — what the
 * guards prevent.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import winston from 'winston';
import type { EvictedItem } from '../../src/cache/evictor.js';
import { RedisCoordinator } from '../../src/cluster/redis-coordinator.js';
import { sha256Digest } from '../../src/domain/digest.js';
import { RegistryError } from '../../src/domain/errors.js';
import { MediaTypes } from '../../src/domain/media-types.js';
import { HOSTED_UPSTREAM, type RepoKey, type RepoName, type Tag } from '../../src/domain/reference.js';
import { HostedContent } from '../../src/hosted/hosted-content.js';
import { HostedGc } from '../../src/hosted/hosted-gc.js';
import { HostedRegistry } from '../../src/hosted/hosted-registry.js';
import { Metrics } from '../../src/observability/metrics.js';
import { FsStorage } from '../../src/storage/fs/fs-storage.js';
import type { Ownership } from '../../src/storage/storage.js';
import { UploadSessions } from '../../src/storage/upload-sessions.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { imageManifestOf, bodyOf, gated } from '../../src/storage/testing/helpers.js';

const HOUR = 3_600_000;
const quiet = winston.createLogger({ transports: [new winston.transports.Console({ silent: true })] });
const key = (repo: string): RepoKey => ({ upstream: HOSTED_UPSTREAM, repo: repo as RepoName });

/** A pause point: `reached` resolves when the code gets there, `go()` lets it on. */
function pausePoint() {
  let reach!: () => void;
  let go!: () => void;
  const reached = new Promise<void>((r) => (reach = r));
  const mayGo = new Promise<void>((r) => (go = r));
  return { reached, go, gate: async () => (reach(), await mayGo) };
}

describe('a manifest PUT on one replica vs garbage collection on another: per-digest guards in Redis (issue #15)', () => {
  let redis: RedisServer;
  let root: string;
  let storage: FsStorage;
  let ownership: Ownership;
  let uploads: UploadSessions;
  const coordinators: RedisCoordinator[] = [];
  let n = 0;

  const coordinator = async (id: string, prefix: string) => {
    const c = new RedisCoordinator({ redis: { url: redis.url, keyPrefix: prefix }, advertiseUrl: `http://${id}.invalid:1`, fillLeaseTtlMs: 10_000, holderId: id, logger: quiet, metrics: new Metrics() });
    coordinators.push(c);
    assert.ok(await c.connected());
    return c;
  };
  /** Replica A (pushes) and B (collects), each with its own in-memory view; guarded through Redis unless `shared` is false. */
  const replicas = async (shared: boolean) => {
    const prefix = `guards${++n}:`;
    const contentA = new HostedContent(shared ? { shared: await coordinator('a', prefix) } : {});
    const contentB = new HostedContent(shared ? { shared: await coordinator('b', prefix) } : {});
    await contentA.load(storage);
    await contentB.load(storage);
    return { contentA, contentB };
  };
  const pusher = (content: HostedContent, metadata = storage.metadata) => new HostedRegistry({ blobs: storage.blobs, manifests: storage.manifests, metadata, uploads, allowDelete: true, content });
  const collector = (content: HostedContent, blobs = storage.blobs) =>
    new HostedGc({ storage: { blobs, manifests: storage.manifests, metadata: storage.metadata, access: storage.access }, content, gracePeriodMs: HOUR, clock: () => Date.now() + 2 * HOUR, logger: quiet });
  const collect = async (g: HostedGc) => {
    const removed: EvictedItem[] = [];
    await g.collect({ dryRun: false, record: (i) => removed.push(i) });
    return removed;
  };
  const has = async (b: Buffer) => (await storage.blobs.stat(sha256Digest(b))) !== undefined;

  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await Promise.all(coordinators.map((c) => c.close()));
    await redis.close();
  });
  beforeEach(async () => {
    root = mkdtempSync(join(tmpdir(), 'hubcache-guards-'));
    storage = new FsStorage({ root, lockStaleMs: 30_000, logger: quiet });
    ownership = await storage.acquireOwnership();
    await storage.init();
    uploads = new UploadSessions({ blobs: storage.blobs, timeoutMs: HOUR, maxSessions: 10 });
  });
  afterEach(async () => {
    await uploads.close();
    await storage.close();
    await ownership.release();
    rmSync(root, { recursive: true, force: true });
  });

  const image = async (content: HostedContent, label: string) => {
    const blobs = [Buffer.from(`{"config":"${label}"}`), Buffer.from(`layer of ${label}`)];
    const a = pusher(content);
    for (const b of blobs) await a.uploadWhole(key('myorg/app'), sha256Digest(b), bodyOf(b));
    return blobs;
  };

  it('the PUT (A) pauses after its checks; the sweep (B) meanwhile leaves its blobs; the PUT succeeds with every blob present', async () => {
    const { contentA, contentB } = await replicas(true);
    const blobs = await image(contentA, 'kept');
    const link = pausePoint();
    const put = pusher(contentA, gated(storage.metadata, 'linkManifest', link.gate)).putManifest(key('myorg/app'), { kind: 'tag', tag: 'v1' as Tag }, imageManifestOf(blobs), MediaTypes.ociManifest);
    await link.reached;
    const removed = await collect(collector(contentB));
    assert.deepEqual(removed.filter((r) => r.kind === 'blob'), [], 'in use by the PUT on the other replica');
    link.go();
    await put;
    for (const b of blobs) assert.ok(await has(b));
    assert.deepEqual(await collect(collector(contentB)), [], 'referenced now');
  });

  it('the sweep (B) pauses in a blob delete; the PUT (A) waits for it, then fails with MANIFEST_BLOB_UNKNOWN and leaves no tag', async () => {
    const { contentA, contentB } = await replicas(true);
    const blobs = await image(contentA, 'collected');
    const del = pausePoint();
    const pass = collect(collector(contentB, gated(storage.blobs, 'delete', del.gate)));
    await del.reached;
    // B holds the cluster's claim on the blob it is deleting: A's PUT waits for it (its checks
    // would otherwise see the blob still there), then finds it gone.
    const put = pusher(contentA).putManifest(key('myorg/app'), { kind: 'tag', tag: 'v1' as Tag }, imageManifestOf(blobs), MediaTypes.ociManifest);
    del.go();
    await pass;
    await assert.rejects(put, (err: unknown) => err instanceof RegistryError && err.code === 'MANIFEST_BLOB_UNKNOWN');
    assert.equal(await storage.metadata.getTag(key('myorg/app'), 'v1' as Tag), undefined);
  });

  it('control, without the Redis guards (what each process knew alone before): the same interleaving as the first test leaves a manifest whose blob is gone', async () => {
    const { contentA, contentB } = await replicas(false);
    const blobs = await image(contentA, 'lost');
    const link = pausePoint();
    const put = pusher(contentA, gated(storage.metadata, 'linkManifest', link.gate)).putManifest(key('myorg/app'), { kind: 'tag', tag: 'v1' as Tag }, imageManifestOf(blobs), MediaTypes.ociManifest);
    await link.reached;
    const removed = await collect(collector(contentB));
    assert.ok(removed.some((r) => r.kind === 'blob'), 'B swept the blobs A had just checked');
    link.go();
    await put;
    assert.ok(!(await has(blobs[1]!)), 'the pushed manifest points at a deleted blob');
  });
});
