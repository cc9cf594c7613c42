/**
 * What the cluster's last-access record costs (issue #15): the Redis record (one sorted set, ZADD GT
 * pipelines per flush, a ZSCAN of the whole set when eviction reads it) against the filesystem's
 * access.log (one append + fsync per flush, read once at start), for N entries:
 *
 *   - flush of N new touches (one replica's batch: a flush interval of a busy replica, or a start);
 *   - reading all N back in a fresh process (Redis: the ZSCAN a pass does; fs: the load at start).
 *
 * Real redis-server (test/support/redis.ts) on loopback and a temp directory; the two sides
 * alternate (A,B,A,B,…), medians of each side and of the per-pair ratios.
 *
 *   tsx bench/access-record.ts            ACCESS_ENTRIES=100000 BENCH_RUNS=5
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import winston from 'winston';
import { RedisCoordinator } from '../src/cluster/redis-coordinator.js';
import { sha256Digest } from '../src/domain/digest.js';
import { Metrics } from '../src/observability/metrics.js';
import type { AccessRecord } from '../src/storage/access-record.js';
import { FsAccessRecord } from '../src/storage/fs/fs-access-record.js';
import { startRedis } from '../test/support/redis.js';
import { fmt, median, ratios } from './stats.js';

const N = Number(process.env.ACCESS_ENTRIES ?? 100_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const quiet = winston.createLogger({ transports: [new winston.transports.Console({ silent: true })] });

const digests = Array.from({ length: N }, (_, i) => sha256Digest(`access bench ${i}`));

async function measure(open: () => AccessRecord): Promise<{ flushMs: number; readMs: number }> {
  const r = open();
  for (let i = 0; i < N; i++) r.touch({ kind: 'blob', digest: digests[i]! }, 1_700_000_000_000 + i);
  let t = performance.now();
  await r.flush();
  const flushMs = performance.now() - t;
  const again = open();
  t = performance.now();
  let n = 0;
  for await (const _e of again.entries()) n++;
  const readMs = performance.now() - t;
  if (n !== N) throw new Error(`read ${n} of ${N}`);
  return { flushMs, readMs };
}

async function main(): Promise<void> {
  const redis = await startRedis();
  const coordinators: RedisCoordinator[] = [];
  const flush = { redis: [] as number[], fs: [] as number[] };
  const read = { redis: [] as number[], fs: [] as number[] };
  try {
    for (let run = 0; run < RUNS; run++) {
      const c = new RedisCoordinator({ redis: { url: redis.url, keyPrefix: `bench${run}:` }, advertiseUrl: 'http://127.0.0.1:1', fillLeaseTtlMs: 10_000, holderId: 'bench', logger: quiet, metrics: new Metrics() });
      coordinators.push(c);
      if (!(await c.connected())) throw new Error('redis not reachable');
      const dir = mkdtempSync(join(tmpdir(), 'hubcache-access-bench-'));
      try {
        const sides = [
          ['redis', () => measure(() => c.accessRecord({ refreshMs: 0 }))],
          ['fs', () => measure(() => new FsAccessRecord({ path: join(dir, 'access.log'), tempPath: () => join(dir, `tmp-${Math.random()}`) }))],
        ] as const;
        for (const [name, fn] of run % 2 === 0 ? sides : [...sides].reverse()) {
          const m = await fn();
          flush[name].push(m.flushMs);
          read[name].push(m.readMs);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  } finally {
    await Promise.all(coordinators.map((c) => c.close()));
    await redis.close();
  }
  console.log(`access record, ${N} entries, ${RUNS} runs (alternating)`);
  console.log(`flush:  redis ${fmt(median(flush.redis), 0)} ms, fs ${fmt(median(flush.fs), 0)} ms, redis ÷ fs ${fmt(median(ratios(flush.redis, flush.fs)))}`);
  console.log(`read:   redis ${fmt(median(read.redis), 0)} ms, fs ${fmt(median(read.fs), 0)} ms, redis ÷ fs ${fmt(median(ratios(read.redis, read.fs)))}`);
}

await main();
