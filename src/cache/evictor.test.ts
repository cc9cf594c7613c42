/**
 * The eviction policy (issue #13) over the memory stores and a manual clock: LRU by last access
 * down to the low watermark, what is never evicted, manifests with their tags and links in the
 * crash-safe order, tag retention with references from other tags and indexes, dry runs, the
 * emergency pass and the free-space floor.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sha256Digest, type Digest } from '../domain/digest.js';
import { MediaTypes } from '../domain/media-types.js';
import type { RepoKey, RepoName, Tag } from '../domain/reference.js';
import { silentLogger } from '../lib/logger.js';
import { MemoryStorage } from '../storage/memory/memory-storage.js';
import { Evictor, type EvictionKind, type EvictionMetrics, type EvictionReason, type EvictorOptions } from './evictor.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const k = (repo: string): RepoKey => ({ upstream: 'docker.io', repo: repo as RepoName });

function setup(opts: Partial<EvictorOptions> = {}) {
  const storage = new MemoryStorage();
  let now = Date.UTC(2030, 0, 1);
  const clock = { now: () => now, advance: (ms: number) => void (now += ms) };
  const events: Array<{ kind: EvictionKind; reason: EvictionReason; bytes: number }> = [];
  const gauges: { oldest?: number; free?: number; success?: number; errors: number } = { errors: 0 };
  const metrics: EvictionMetrics = {
    evicted: (kind, reason, bytes) => void events.push({ kind, reason, bytes }),
    evictionFailed: () => void gauges.errors++,
    evictionSucceeded: (at) => void (gauges.success = at),
    oldestAccess: (at) => void (gauges.oldest = at),
    freeSpace: (b) => void (gauges.free = b),
  };
  const evictor = new Evictor({
    storage,
    highWatermark: 95,
    lowWatermark: 85,
    tagRetentionMs: 90 * DAY,
    concurrency: 2,
    clock: clock.now,
    logger: silentLogger(),
    metrics,
    ...opts,
  });
  /** A blob of `size` bytes, last served `agoMs` before now. */
  const blob = async (seed: string, size: number, agoMs?: number): Promise<Digest> => {
    const data = Buffer.concat([Buffer.from(`${seed}:`), Buffer.alloc(size - seed.length - 1)]);
    const w = await storage.blobs.create();
    await w.write(data);
    const { digest } = await w.commit(sha256Digest(data), size);
    if (agoMs !== undefined) storage.access.touch({ kind: 'blob', digest }, now - agoMs);
    return digest;
  };
  const image = async (repo: string, tag: string | undefined, seed: string, agoMs: number) => {
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest(seed), size: 1 }, layers: [] }));
    const { digest } = await storage.manifests.put(body, MediaTypes.ociManifest);
    await storage.metadata.linkManifest(k(repo), digest);
    storage.access.touch({ kind: 'manifest', digest }, now - agoMs);
    if (tag) {
      await storage.metadata.setTag(k(repo), tag as Tag, { digest, mediaType: MediaTypes.ociManifest, size: body.length, validatedAt: now - agoMs });
      storage.access.touch({ kind: 'tag', key: k(repo), tag: tag as Tag }, now - agoMs);
    }
    return digest;
  };
  const index = async (repo: string, tag: string | undefined, children: Digest[], agoMs: number) => {
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: children.map((d) => ({ mediaType: MediaTypes.ociManifest, digest: d, size: 1 })) }));
    const { digest } = await storage.manifests.put(body, MediaTypes.ociIndex);
    await storage.metadata.linkManifest(k(repo), digest);
    storage.access.touch({ kind: 'manifest', digest }, now - agoMs);
    if (tag) {
      await storage.metadata.setTag(k(repo), tag as Tag, { digest, mediaType: MediaTypes.ociIndex, size: body.length, validatedAt: now - agoMs });
      storage.access.touch({ kind: 'tag', key: k(repo), tag: tag as Tag }, now - agoMs);
    }
    return digest;
  };
  return { storage, evictor, clock, events, gauges, blob, image, index };
}

describe('Evictor: LRU under a cap', () => {
  it('above the high watermark, the least recently accessed blobs go first, down to the low watermark', async () => {
    const t = setup({ maxBytes: 1_000 });
    const ds: Digest[] = [];
    for (let i = 0; i < 10; i++) ds.push(await t.blob(String(i), 100, (10 - i) * HOUR)); // ds[0] is the oldest
    assert.equal(t.storage.blobs.usage()!.bytes, 1_000);
    const report = await t.evictor.run();
    assert.deepEqual(
      report.removed.map((r) => r.digest),
      [ds[0], ds[1]],
    );
    assert.equal(t.storage.blobs.usage()!.bytes, 800);
    assert.equal(await t.storage.blobs.stat(ds[0]!), undefined);
    assert.ok(await t.storage.blobs.stat(ds[2]!));
    assert.equal(await t.storage.access.lastAccess({ kind: 'blob', digest: ds[0]! }), undefined, 'forgotten with the blob');
    assert.deepEqual(t.events, [
      { kind: 'blob', reason: 'lru', bytes: 100 },
      { kind: 'blob', reason: 'lru', bytes: 100 },
    ]);
    assert.equal(t.gauges.success, t.clock.now());
    assert.equal(t.gauges.oldest, t.clock.now() - 8 * HOUR, 'the oldest kept');
  });

  it('below the high watermark an automatic pass evicts nothing; check() starts one only above it', async () => {
    const t = setup({ maxBytes: 1_000 });
    for (let i = 0; i < 9; i++) await t.blob(String(i), 100, HOUR);
    t.evictor.check();
    assert.equal(t.evictor.running, false);
    assert.deepEqual((await t.evictor.run()).removed.filter((r) => r.kind === 'blob'), []);
    await t.blob('x', 100, HOUR);
    t.evictor.check();
    assert.equal(t.evictor.running, true);
    await t.evictor.stop();
    assert.ok(t.storage.blobs.usage()!.bytes <= 850);
  });

  it('never evicted: a blob being downloaded or served (claimBlob), and protected digests; the next ones go instead', async () => {
    const ds: Digest[] = [];
    const busy = new Set<Digest>();
    const t = setup({ maxBytes: 1_000, claimBlob: (d) => (busy.has(d) ? undefined : () => {}), isProtected: (d) => d === ds[1] });
    for (let i = 0; i < 10; i++) ds.push(await t.blob(String(i), 100, (10 - i) * HOUR));
    busy.add(ds[0]!);
    const report = await t.evictor.run();
    assert.deepEqual(report.removed.map((r) => r.digest), [ds[2], ds[3]]);
    assert.ok(await t.storage.blobs.stat(ds[0]!), 'in use');
    assert.ok(await t.storage.blobs.stat(ds[1]!), 'protected');
  });

  it('a blob served after the pass listed it is kept (it is no longer the least recently used)', async () => {
    const ds: Digest[] = [];
    let t!: ReturnType<typeof setup>;
    t = setup({
      maxBytes: 1_000,
      claimBlob: (d) => {
        if (d === ds[0]) t.storage.access.touch({ kind: 'blob', digest: d }, t.clock.now());
        return () => {};
      },
    });
    for (let i = 0; i < 10; i++) ds.push(await t.blob(String(i), 100, (10 - i) * HOUR));
    const report = await t.evictor.run();
    assert.deepEqual(report.removed.map((r) => r.digest), [ds[1], ds[2]]);
  });

  it('content with no record counts from when it was stored, else from its first scan (then ages from there)', async () => {
    const t = setup({ maxBytes: 1_000 });
    const old = await t.blob('old', 500, 5 * HOUR);
    const unknown = await t.blob('unknown', 500); // memory keeps no times: recorded at the scan
    const report = await t.evictor.run({ mode: 'gc' });
    assert.deepEqual(report.removed.map((r) => r.digest), [old]);
    assert.equal(await t.storage.access.lastAccess({ kind: 'blob', digest: unknown }), t.clock.now());
  });

  it('a dry run reports what would go and removes nothing', async () => {
    const t = setup({ maxBytes: 1_000 });
    const ds: Digest[] = [];
    for (let i = 0; i < 10; i++) ds.push(await t.blob(String(i), 100, (10 - i) * HOUR));
    const report = await t.evictor.run({ dryRun: true, mode: 'gc' });
    assert.equal(report.dryRun, true);
    assert.deepEqual(report.removed.map((r) => r.digest), [ds[0], ds[1]]);
    assert.equal(report.storeBytesAfter, 800);
    assert.equal(t.storage.blobs.usage()!.bytes, 1_000);
    assert.deepEqual(t.events, []);
  });

  it('manifests follow the same LRU; one goes with its tags and links, in that order (crash-safe)', async () => {
    const t = setup({ maxBytes: 1_000 });
    const m = await t.image('library/a', 'v1', 'a', 20 * HOUR);
    await t.storage.metadata.setTag(k('library/b'), 'latest' as Tag, { digest: m, mediaType: MediaTypes.ociManifest, size: 1, validatedAt: t.clock.now() });
    await t.storage.metadata.linkManifest(k('library/b'), m);
    const keep = await t.image('library/a', 'v2', 'b', 0);
    for (let i = 0; i < 10; i++) await t.blob(String(i), 100, (10 - i) * HOUR);
    const steps: string[] = [];
    const md = t.storage.metadata;
    const origDeleteTag = md.deleteTag.bind(md);
    const origUnlink = md.unlinkManifest.bind(md);
    const origDelete = t.storage.manifests.delete.bind(t.storage.manifests);
    md.deleteTag = async (key, tag) => (steps.push(`tag ${key.repo}:${tag}`), origDeleteTag(key, tag));
    md.unlinkManifest = async (key, d) => (steps.push(`link ${key.repo}`), origUnlink(key, d));
    t.storage.manifests.delete = async (d) => (steps.push('body'), origDelete(d));
    const report = await t.evictor.run();
    assert.deepEqual(steps, ['tag library/a:v1', 'tag library/b:latest', 'link library/a', 'link library/b', 'body']);
    assert.deepEqual(
      report.removed.filter((r) => r.kind !== 'blob').map((r) => `${r.kind} ${r.tag ?? r.digest}`),
      ['tag v1', 'tag latest', `manifest ${m}`],
    );
    assert.equal(await t.storage.manifests.get(m), undefined);
    assert.ok(await t.storage.manifests.get(keep));
    assert.deepEqual(await t.storage.metadata.listTags(k('library/a')), ['v2']);
  });
});

describe('Evictor: tag retention', () => {
  it('a tag not pulled for tagRetention expires with its manifest; one pulled recently stays', async () => {
    const t = setup();
    const old = await t.image('library/a', 'old', 'old', 91 * DAY);
    const recent = await t.image('library/a', 'recent', 'recent', 89 * DAY);
    const report = await t.evictor.run({ mode: 'gc' });
    assert.deepEqual(
      report.removed.map((r) => `${r.kind}:${r.tag ?? r.digest}`),
      ['tag:old', `manifest:${old}`],
    );
    assert.ok(report.removed.every((r) => r.reason === 'retention'));
    assert.equal(await t.storage.manifests.get(old), undefined);
    assert.deepEqual(await t.storage.metadata.listManifests(k('library/a')), [recent]);
    assert.deepEqual(await t.storage.metadata.listTags(k('library/a')), ['recent']);
    // Time passes (the injected clock): the other one expires too.
    t.clock.advance(2 * DAY);
    const later = await t.evictor.run({ mode: 'gc' });
    assert.deepEqual(later.removed.map((r) => r.kind), ['tag', 'manifest']);
  });

  it('the manifest stays while another tag or a stored index references it; an expired index takes its unreferenced children', async () => {
    const t = setup();
    const shared = await t.image('library/a', 'old', 'shared', 100 * DAY);
    await t.storage.metadata.setTag(k('library/b'), 'fresh' as Tag, { digest: shared, mediaType: MediaTypes.ociManifest, size: 1, validatedAt: t.clock.now() });
    const child = await t.image('library/c', 'child-old', 'child', 100 * DAY);
    const parent = await t.index('library/c', undefined, [child], DAY);
    const lonely1 = await t.image('library/d', undefined, 'l1', 100 * DAY);
    const lonely2 = await t.image('library/d', undefined, 'l2', 100 * DAY);
    const idx = await t.index('library/d', 'idx', [lonely1, lonely2], 100 * DAY);
    const report = await t.evictor.run({ mode: 'gc' });
    const gone = report.removed.filter((r) => r.kind === 'manifest').map((r) => r.digest);
    assert.deepEqual(new Set(gone), new Set([idx, lonely1, lonely2]));
    assert.ok(await t.storage.manifests.get(shared), 'another tag names it');
    assert.ok(await t.storage.manifests.get(child), 'an index references it');
    assert.ok(await t.storage.manifests.get(parent));
    assert.deepEqual(await t.storage.metadata.listTags(k('library/a')), []);
    assert.deepEqual(await t.storage.metadata.listTags(k('library/c')), []);
  });

  it('the walk reads each repository\'s tags in one listing where the store keeps a tag index, and builds no index of the whole store while no tag has expired', async () => {
    const t = setup();
    for (let i = 0; i < 5; i++) await t.image('library/a', `t${i}`, `s${i}`, (80 + i) * DAY);
    await t.image('library/b', 'only', 'b', DAY);
    // The metadata store as the filesystem's (one read per repository: `listTagEntries`), counted.
    const m = t.storage.metadata;
    const calls = new Map<string, number>();
    const metadata = new Proxy(m, {
      get(target, prop) {
        if (prop === 'listTagEntries') {
          return async (key: RepoKey) => {
            calls.set('listTagEntries', (calls.get('listTagEntries') ?? 0) + 1);
            return Promise.all((await m.listTags(key)).map(async (tag) => [tag, await m.getTag(key, tag as Tag)] as const));
          };
        }
        const value: unknown = Reflect.get(target, prop, target);
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          calls.set(String(prop), (calls.get(String(prop)) ?? 0) + 1);
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const evictor = new Evictor({ storage: { ...t.storage, metadata, freeSpace: async () => undefined }, highWatermark: 95, lowWatermark: 85, tagRetentionMs: 90 * DAY, concurrency: 2, clock: t.clock.now, logger: silentLogger() });
    assert.deepEqual((await evictor.run({ mode: 'gc' })).removed, []);
    assert.equal(calls.get('listTagEntries'), 2, 'one listing per repository');
    assert.equal(calls.get('getTag'), undefined, 'no tag read one by one');
    assert.equal(calls.get('listManifests'), undefined, 'no index of the whole store');
    // Days later the two pulled over 90 days ago expire: found by the same walk, then removed through the whole index.
    t.clock.advance(8 * DAY);
    calls.clear();
    const report = await evictor.run({ mode: 'gc' });
    assert.deepEqual(report.removed.filter((r) => r.kind === 'tag').map((r) => r.tag).sort(), ['t3', 't4']);
    assert.deepEqual(await m.listTags(k('library/a')), ['t0', 't1', 't2']);
    assert.deepEqual(await m.listTags(k('library/b')), ['only']);
    assert.ok((calls.get('listManifests') ?? 0) > 0, 'the whole index was built to check references');
  });

  it('a tag naming a protected manifest never expires', async () => {
    let pinned: Digest | undefined;
    const t = setup({ isProtected: (d) => d === pinned });
    pinned = await t.image('library/a', 'pinned', 'p', 365 * DAY);
    const report = await t.evictor.run({ mode: 'gc' });
    assert.deepEqual(report.removed, []);
    assert.deepEqual(await t.storage.metadata.listTags(k('library/a')), ['pinned']);
  });
});

describe('Evictor: emergency and free space', () => {
  it('emergency with a cap: down to the low watermark even below the high one', async () => {
    const t = setup({ maxBytes: 1_000 });
    for (let i = 0; i < 9; i++) await t.blob(String(i), 100, (10 - i) * HOUR);
    const report = await t.evictor.run({ mode: 'emergency' });
    assert.equal(report.removed.length, 1);
    assert.equal(report.removed[0]!.reason, 'emergency');
    assert.equal(t.storage.blobs.usage()!.bytes, 800);
  });

  it('emergency without a cap frees a fixed fraction of the store', async () => {
    const t = setup();
    for (let i = 0; i < 20; i++) await t.blob(String(i), 100, (20 - i) * HOUR);
    await t.evictor.run({ mode: 'emergency' });
    assert.equal(t.storage.blobs.usage()!.bytes, 1_800);
  });

  it('below storage.minFreeSpace, content goes until the floor plus the watermarks gap is free; the free-space gauge follows', async () => {
    let freeBytes = 5_000;
    const t = setup({ minFreeSpace: { percent: 10 } });
    (t.storage as { freeSpace?: () => Promise<{ freeBytes: number; totalBytes: number }> }).freeSpace = async () => ({ freeBytes: freeBytes + (2_000 - t.storage.blobs.usage()!.bytes), totalBytes: 100_000 });
    for (let i = 0; i < 20; i++) await t.blob(String(i), 100, (20 - i) * HOUR);
    // 10% of 100 000 = 10 000 to keep free; 5 000 are: free 10 000 × 1.1 − 5 000 = 6 000 → the whole store can't cover it; all 20 go.
    freeBytes = 9_500;
    const report = await t.evictor.tick();
    // 11 000 − 9 500 = 1 500 bytes: 15 blobs of 100.
    assert.equal(report?.removed.filter((r) => r.kind === 'blob').length, 15);
    assert.equal(t.gauges.free, 9_500);
  });
});
