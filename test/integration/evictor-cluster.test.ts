/**
 * Issue #15: the evictor under the cluster's maintenance lock, with a REAL redis-server: replicas
 * that can't take the lock skip their pass (deleting nothing), a pass that loses the lock stops
 * deleting, what one replica ran lately isn't run again by the others, and without Redis no pass
 * deletes. One store (the memory stores) shared by two evictors, as by two replicas.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import winston from 'winston';
import { Evictor, type EvictorOptions } from '../../src/cache/evictor.js';
import { RedisCoordinator, type ClusterMetrics } from '../../src/cluster/redis-coordinator.js';
import { sha256Digest, type Digest } from '../../src/domain/digest.js';
import { MemoryStorage } from '../../src/storage/memory/memory-storage.js';
import { startRedis, type RedisServer } from '../support/redis.js';

const quiet = winston.createLogger({ transports: [new winston.transports.Console({ silent: true })] });

class Seen implements ClusterMetrics {
  readonly maintenance = { acquired: 0, busy: 0, unavailable: 0, lost: 0 };
  onLost: (() => void) | undefined;
  fillLease(): void {}
  peerFollowBytes(): void {}
  redisUp(): void {}
  maintenanceHeld(): void {}
  maintenanceLock(o: 'acquired' | 'busy' | 'unavailable' | 'lost'): void {
    this.maintenance[o]++;
    if (o === 'lost') this.onLost?.();
  }
}

describe('Evictor with the cluster maintenance lock (real redis-server)', () => {
  let redis: RedisServer;
  const open: RedisCoordinator[] = [];
  let n = 0;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await Promise.all(open.map((c) => c.close()));
    await redis.close();
  });

  const coordinator = async (id: string, prefix: string, ttlMs = 30_000) => {
    const metrics = new Seen();
    const c = new RedisCoordinator({ redis: { url: redis.url, keyPrefix: prefix }, advertiseUrl: 'http://127.0.0.1:1', fillLeaseTtlMs: 10_000, holderId: id, logger: quiet, metrics, maintenanceLockTtlMs: ttlMs });
    open.push(c);
    assert.ok(await c.connected());
    return { c, metrics };
  };
  /** A store of `count` blobs of 100 bytes, each last served a minute apart. */
  const store = async (count: number) => {
    const storage = new MemoryStorage();
    const digests: Digest[] = [];
    for (let i = 0; i < count; i++) {
      const data = Buffer.alloc(100, i);
      const w = await storage.blobs.create();
      await w.write(data);
      const { digest } = await w.commit(sha256Digest(data), 100);
      storage.access.touch({ kind: 'blob', digest }, 1_000_000 + i * 60_000);
      digests.push(digest);
    }
    return { storage, digests };
  };
  const evictor = (storage: MemoryStorage, lock: RedisCoordinator, over: Partial<EvictorOptions> = {}) =>
    new Evictor({ storage, maxBytes: 1_000, highWatermark: 95, lowWatermark: 50, tagRetentionMs: 3_600_000, concurrency: 1, logger: quiet, lock, clock: () => 2_000_000_000, ...over });

  it('another replica holds the lock: the pass is skipped (busy, the holder named) and deletes nothing; released: it runs', async () => {
    const prefix = `ev${++n}:`;
    const { storage } = await store(12);
    const { c: other } = await coordinator('other', prefix);
    const { c: mine, metrics } = await coordinator('mine', prefix);
    const held = await other.acquire();
    assert.equal(held.kind, 'held');
    const e = evictor(storage, mine);
    const skipped = await e.run({ mode: 'gc' });
    assert.deepEqual({ skipped: skipped.skipped, holder: skipped.holder, removed: skipped.removed.length }, { skipped: 'busy', holder: 'other', removed: 0 });
    const dry = await e.run({ mode: 'gc', dryRun: true });
    assert.ok(dry.removed.length > 0 && dry.skipped === undefined, 'a dry run needs no lock');
    if (held.kind === 'held') await held.release();
    const ran = await e.run({ mode: 'gc' });
    assert.equal(ran.skipped, undefined);
    assert.equal(ran.removed.length, 7, '1200 bytes down to 500');
    assert.equal(await mine.maintenanceHolder(), null, 'released after the pass');
    assert.deepEqual(metrics.maintenance, { acquired: 1, busy: 1, unavailable: 0, lost: 0 });
  });

  it('a pass that loses the lock (not renewed: taken over or expired) stops deleting', async () => {
    const prefix = `ev${++n}:`;
    const { storage } = await store(12);
    const { c: mine, metrics } = await coordinator('mine', prefix, 3_000);
    const lost = new Promise<void>((r) => (metrics.onLost = r));
    let deletes = 0;
    const blobs = new Proxy(storage.blobs, {
      get(t, p) {
        const v = Reflect.get(t, p, t) as unknown;
        if (p !== 'delete' || typeof v !== 'function') return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
        return async (d: Digest) => {
          if (++deletes === 1) {
            // The lock vanishes under the first deletion (as if this replica had stalled past its
            // TTL); the pass hears it at the next renewal.
            await mine.forceDropMaintenanceForTest();
            await lost;
          }
          return (v as (d: Digest) => Promise<void>).call(t, d);
        };
      },
    });
    const e = evictor(Object.assign(Object.create(storage) as MemoryStorage, { blobs }), mine);
    const report = await e.run({ mode: 'gc' });
    assert.equal(report.removed.length, 1, 'the deletion in progress ends, no new one starts');
    assert.equal(metrics.maintenance.lost, 1);
  });

  it("what another replica ran lately (retention, garbage collection) is not due here: the replicas' ticks run one pass per period for the cluster", async () => {
    const prefix = `ev${++n}:`;
    const { storage } = await store(2);
    const { c: ca, metrics: ma } = await coordinator('a', prefix);
    const { c: cb, metrics: mb } = await coordinator('b', prefix);
    const a = evictor(storage, ca, { maxBytes: undefined });
    const b = evictor(storage, cb, { maxBytes: undefined });
    const ranA = await a.tick();
    assert.ok(ranA && ranA.skipped === undefined, 'a: retention due at its first tick');
    const ranB = await b.tick();
    assert.equal(ranB, undefined, 'b: retention ran a moment ago on a');
    assert.deepEqual([ma.maintenance.acquired, mb.maintenance.acquired], [1, 0]);
  });

  it('Redis unreachable: no pass deletes (skipped as unavailable); Redis back: it runs', async () => {
    const prefix = `ev${++n}:`;
    const { storage } = await store(12);
    const { c: mine } = await coordinator('mine', prefix);
    const e = evictor(storage, mine);
    await redis.stop();
    await mine.until(false);
    const skipped = await e.run({ mode: 'gc' });
    assert.equal(skipped.skipped, 'unavailable');
    assert.equal(skipped.removed.length, 0);
    let stored = 0;
    for await (const b of storage.blobs.list()) stored += b.size > 0 ? 1 : 0;
    assert.equal(stored, 12, 'nothing deleted');
    await redis.start();
    await mine.until(true);
    assert.equal((await e.run({ mode: 'gc' })).removed.length, 7);
  });
});
