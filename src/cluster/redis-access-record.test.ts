import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import winston from 'winston';
import { sha256Digest } from '../domain/digest.js';
import { Metrics } from '../observability/metrics.js';
import { describeAccessRecord } from '../storage/testing/access-record.conformance.js';
import { startRedis, type RedisServer } from '../../test/support/redis.js';
import { RedisCoordinator } from './redis-coordinator.js';

const quiet = winston.createLogger({ transports: [new winston.transports.Console({ silent: true })] });

let redis: RedisServer;
let n = 0;
const open: RedisCoordinator[] = [];

async function coordinator(prefix: string, id = 'r'): Promise<RedisCoordinator> {
  const c = new RedisCoordinator({ redis: { url: redis.url, keyPrefix: prefix }, advertiseUrl: 'http://127.0.0.1:1', fillLeaseTtlMs: 10_000, holderId: id, logger: quiet, metrics: new Metrics() });
  open.push(c);
  assert.ok(await c.connected());
  return c;
}

before(async () => {
  redis = await startRedis();
});
after(async () => {
  await Promise.all(open.map((c) => c.close()));
  await redis.close();
});

// Each `open` is a replica (re)starting: a new record on the same Redis and prefix.
describeAccessRecord('RedisAccessRecord (the cluster record, real redis-server)', async () => {
  const c = await coordinator(`access${++n}:`);
  return { open: () => c.accessRecord({ refreshMs: 0 }), persistent: true, cleanup: async () => {} };
});

describe('RedisAccessRecord: several replicas', () => {
  const blob = (s: string) => ({ kind: 'blob' as const, digest: sha256Digest(s) });

  it('max-merge: a replica flushing an older time after another flushed a newer one does not make the content look older', async () => {
    const prefix = `merge${++n}:`;
    const a = (await coordinator(prefix, 'a')).accessRecord({ refreshMs: 0 });
    const b = (await coordinator(prefix, 'b')).accessRecord({ refreshMs: 0 });
    a.touch(blob('x'), 5_000);
    await a.flush();
    b.touch(blob('x'), 3_000); // b served it earlier (or its clock lags)
    b.touch(blob('y'), 1_000);
    await b.flush();
    const reader = (await coordinator(prefix, 'evictor')).accessRecord({ refreshMs: 0 });
    assert.equal(await reader.lastAccess(blob('x')), 5_000);
    assert.equal(await reader.lastAccess(blob('y')), 1_000, 'what only b served is seen by every replica');
    assert.equal(await b.lastAccess(blob('x')), 5_000, "b reads the cluster's time, not only its own");
  });

  it("a replica's touches not flushed yet count on that replica; the others see them after its flush", async () => {
    const prefix = `pending${++n}:`;
    const a = (await coordinator(prefix, 'a')).accessRecord({ refreshMs: 0 });
    const b = (await coordinator(prefix, 'b')).accessRecord({ refreshMs: 0 });
    a.touch(blob('z'), 7_000);
    assert.equal(await a.lastAccess(blob('z')), 7_000);
    assert.equal(await b.lastAccess(blob('z')), undefined);
    await a.flush();
    assert.equal(await b.lastAccess(blob('z')), 7_000);
  });

  it('Redis unreachable: a flush fails and keeps its batch, reads answer from what was read; Redis back: the batch goes out', async () => {
    const prefix = `down${++n}:`;
    const c = await coordinator(prefix, 'a');
    const a = c.accessRecord({ refreshMs: 0 });
    a.touch(blob('before'), 1_000);
    await a.flush();
    assert.equal(await a.lastAccess(blob('before')), 1_000);
    await redis.stop();
    await c.until(false);
    a.touch(blob('during'), 2_000);
    await assert.rejects(a.flush());
    assert.equal(await a.lastAccess(blob('before')), 1_000, 'the copy read before');
    assert.equal(await a.lastAccess(blob('during')), 2_000);
    await redis.start();
    await c.until(true);
    await a.flush();
    const other = (await coordinator(prefix, 'b')).accessRecord({ refreshMs: 0 });
    assert.equal(await other.lastAccess(blob('during')), 2_000, 'the failed batch was sent by the next flush');
  });
});
