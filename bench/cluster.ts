/**
 * Several replicas (issue #15): 3 hubcache replicas (the cache, HTTP app and follow endpoint of
 * test/support/app-harness.ts, in this process) sharing ONE store (the memory stores: like an
 * object store, no local file to borrow, fills spool their own copy) and a real redis-server, in
 * front of an upstream whose blob bodies are paced to a link speed (BlobTap's `bytesPerSecond`,
 * per connection, like the front's `rate` fault). curl clients (their own processes):
 *
 *   - 20 concurrent cold GETs of one blob spread over the three replicas (round robin): upstream
 *     blob GETs (target exactly 1) and every body's size checked;
 *   - slowest of the 20 ÷ one client alone against one replica (target ≤ 1.5), the two sides
 *     alternating (A,B,A,B,…), median of the per-pair ratios.
 *
 * Fresh store and a fresh key prefix every run (all cold). The three replicas share this process's
 * event loop and the machine's cores with the curls: a real deployment has a process (a pod) each.
 *
 *   tsx bench/cluster.ts                       (also run by `npm run bench`, BENCH_ONLY=cluster)
 *   BENCH_RUNS=5 CLUSTER_BLOB_MIB=64 CLUSTER_CLIENTS=20 BENCH_LINKS=30:50
 *   (the upstream's pace: the rate of the first link of BENCH_LINKS, `latency ms : MB/s` pairs as in
 *   bench/run.ts; its latency is not emulated here)
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { PullThroughRegistry } from '../src/cache/pull-through.js';
import { createPeerServer } from '../src/cluster/peer-server.js';
import { RedisCoordinator } from '../src/cluster/redis-coordinator.js';
import type { Digest } from '../src/domain/digest.js';
import { silentLogger } from '../src/lib/logger.js';
import { Metrics } from '../src/observability/metrics.js';
import { MemoryAccessRecord } from '../src/storage/memory/memory-access-record.js';
import { MemoryBlobStore } from '../src/storage/memory/memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../src/storage/memory/memory-manifest-store.js';
import { BlobTap, startHostileUpstream } from '../src/upstream/testing/hostile-registry.js';
import { startApp, type AppHarness, type Stores } from '../test/support/app-harness.js';
import { seededBytes } from '../test/support/oci-fixtures.js';
import { startRedis } from '../test/support/redis.js';
import { curlGet } from './curl-client.js';
import type { EvictionRow } from './eviction.js';
import { fmt, max, median, MiB, ratios } from './stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const BLOB = Number(process.env.CLUSTER_BLOB_MIB ?? 64) * MiB;
const CLIENTS = Number(process.env.CLUSTER_CLIENTS ?? 20);
const LINK = Number((process.env.BENCH_LINKS ?? '30:50').split(',')[0]!.split(':')[1] ?? 50) * 1e6;
const REPLICAS = 3;

interface Replica {
  readonly hc: AppHarness;
  close(): Promise<void>;
}

async function startReplicas(stores: Stores, redisUrl: string, upstreamUrl: string, prefix: string): Promise<Replica[]> {
  const logger = silentLogger();
  return Promise.all(
    Array.from({ length: REPLICAS }, async (_, i) => {
      let cache: PullThroughRegistry | undefined;
      const peer = createPeerServer({ source: { followFill: (d, s) => cache!.followFill(d, s) }, logger });
      peer.listen(0, '127.0.0.1');
      await once(peer, 'listening');
      const coordinator = new RedisCoordinator({
        redis: { url: redisUrl, keyPrefix: prefix },
        advertiseUrl: `http://127.0.0.1:${(peer.address() as AddressInfo).port}`,
        fillLeaseTtlMs: 10_000,
        holderId: `r${i}`,
        logger,
        metrics: new Metrics({ collectDefault: false }),
      });
      if (!(await coordinator.connected())) throw new Error('redis not reachable');
      const hc = await startApp({ instanceId: `r${i}`, stores, upstreams: { 'docker.io': { url: upstreamUrl } }, coordinator });
      cache = hc.cache;
      return {
        hc,
        close: async () => {
          await hc.close();
          peer.closeAllConnections();
          await new Promise<void>((r) => peer.close(() => r()));
          await coordinator.close();
        },
      };
    }),
  );
}

const freshStores = (): Stores => ({ blobs: new MemoryBlobStore(), manifests: new MemoryManifestStore(), metadata: new MemoryMetadataStore(), access: new MemoryAccessRecord() });

export async function benchCluster(log: (msg: string) => void): Promise<EvictionRow[]> {
  const redis = await startRedis();
  const up = await startHostileUpstream();
  const tap = new BlobTap({ bytesPerSecond: LINK });
  up.registry.behave('bench/', tap.behaviour);
  const bytes = seededBytes('cluster-bench', BLOB);
  const digest: Digest = up.registry.putBlob(bytes);
  const path = `/v2/bench/conc/blobs/${digest}`;
  const alone: number[] = [];
  const slowest: number[] = [];
  const gets: number[] = [];
  const linkName = `upstream link ${fmt(LINK / 1e6, 0)} MB/s`;
  try {
    for (let i = 0; i < RUNS; i++) {
      let replicas = await startReplicas(freshStores(), redis.url, up.url, `bench-${i}-a:`);
      let before = tap.transfers.length;
      const one = await curlGet(`${replicas[0]!.hc.url}${path}`);
      if (one.bytes !== BLOB) throw new Error(`cluster: short read ${one.bytes}`);
      alone.push(one.totalMs);
      await Promise.all(replicas.map((r) => r.close()));

      replicas = await startReplicas(freshStores(), redis.url, up.url, `bench-${i}-b:`);
      before = tap.transfers.length;
      const many = await Promise.all(Array.from({ length: CLIENTS }, (_, c) => curlGet(`${replicas[c % REPLICAS]!.hc.url}${path}`, { timeoutMs: 300_000 })));
      for (const t of many) if (t.bytes !== BLOB) throw new Error(`cluster: short read ${t.bytes}`);
      gets.push(tap.transfers.length - before);
      slowest.push(max(many.map((t) => t.totalMs)));
      await Promise.all(replicas.map((r) => r.close()));
      log(`cluster (${linkName}) run ${i + 1}/${RUNS}: alone ${fmt(alone[i]!, 0)} ms  slowest of ${CLIENTS} over ${REPLICAS} replicas ${fmt(slowest[i]!, 0)} ms  upstream blob GETs ${gets[i]}`);
    }
  } finally {
    await up.close();
    await redis.close();
  }
  const r = ratios(slowest, alone);
  return [
    {
      metric: `8a. ${REPLICAS} replicas, ${CLIENTS} concurrent cold GETs of one blob spread over them (${BLOB / MiB} MiB, ${linkName}): upstream GETs`,
      median: median(gets),
      unit: '',
      target: '= 1',
      pass: gets.every((g) => g === 1),
      detail: `per run: ${gets.join(',')}`,
    },
    {
      metric: `8b. ${REPLICAS} replicas: slowest of ${CLIENTS} ÷ one client alone (${linkName})`,
      median: median(r),
      unit: '×',
      target: '≤ 1.5',
      pass: median(r) <= 1.5,
      detail: `ms median: slowest ${fmt(median(slowest), 0)}, alone ${fmt(median(alone), 0)}; per run: ${r.map((x) => fmt(x, 2)).join(', ')}`,
    },
  ];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const rows = await benchCluster((m) => process.stderr.write(`[cluster ${new Date().toISOString().slice(11, 19)}] ${m}\n`));
  for (const row of rows) process.stdout.write(`${row.metric}: ${fmt(row.median, 2)}${row.unit} (target ${row.target}, ${row.pass ? 'PASS' : 'FAIL'}) — ${row.detail}\n`);
}
