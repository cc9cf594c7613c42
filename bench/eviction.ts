/**
 * The cap holds (issue #13): a concurrent pull load through hubcache's cache and HTTP layer
 * (test/support/app-harness.ts) into a real filesystem store with a tight `storage.maxSize`, the
 * Evictor wired as the server wires it (checked after every commit). Every commit is observed, so
 * the maximum is exact, not sampled:
 *
 *   - max store bytes ÷ cap, and the excess over the cap ÷ the blobs that can be in flight
 *     (cache.maxConcurrentFills × blob size): the target is ≤ 1, the store never exceeds the cap
 *     by more than the downloads running when it crossed the high watermark;
 *   - pulls/s with the cap ÷ pulls/s of the same load without a cap (no eviction), the two sides
 *     alternating (A,B,A,B,…), median of the per-pair ratios: what eviction costs while serving.
 *
 *   tsx bench/eviction.ts                    (also run by `npm run bench`, BENCH_ONLY=eviction)
 *   BENCH_RUNS=5 EVICT_BLOBS=400 EVICT_BLOB_KIB=64 EVICT_CAP_BLOBS=64 EVICT_CLIENTS=16 EVICT_FILLS=4
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { silentLogger } from '../src/lib/logger.js';
import type { BlobStore, BlobWriter } from '../src/storage/blob-store.js';
import { FsStorage } from '../src/storage/fs/fs-storage.js';
import { startApp } from '../test/support/app-harness.js';
import { seededBytes } from '../test/support/oci-fixtures.js';
import { fmt, median, ratios } from './stats.js';

const KiB = 1024;
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const BLOBS = Number(process.env.EVICT_BLOBS ?? 400);
const BLOB = Number(process.env.EVICT_BLOB_KIB ?? 64) * KiB;
const CAP = Number(process.env.EVICT_CAP_BLOBS ?? 64) * BLOB;
const CLIENTS = Number(process.env.EVICT_CLIENTS ?? 16);
const FILLS = Number(process.env.EVICT_FILLS ?? 4);

export interface EvictionRow {
  metric: string;
  median: number;
  unit: string;
  target: string;
  pass: boolean;
  detail: string;
}

interface RunResult {
  pullsPerSecond: number;
  maxBytes: number;
  finalBytes: number;
  evicted: number;
}

/** `inner` with every commit followed by a reading of the store's size (the moment it peaks). */
function observed(inner: BlobStore, seen: (bytes: number) => void): BlobStore {
  return {
    stat: (d) => inner.stat(d),
    open: (d, o) => inner.open(d, o),
    delete: (d) => inner.delete(d),
    list: () => inner.list(),
    usage: () => inner.usage?.(),
    create: async (): Promise<BlobWriter> => {
      const w = await inner.create();
      return {
        get written() {
          return w.written;
        },
        ...(w.localPath ? { localPath: w.localPath } : {}),
        write: (data) => w.write(data),
        commit: async (...args) => {
          const info = await w.commit(...args);
          const u = inner.usage?.();
          if (u) seen(u.bytes);
          return info;
        },
        abort: () => w.abort(),
      };
    },
  };
}

async function oneRun(capped: boolean, seed: number): Promise<RunResult> {
  const root = mkdtempSync(join(tmpdir(), 'hubcache-bench-evict-'));
  const storage = new FsStorage({ root, lockStaleMs: 30_000, logger: silentLogger() });
  const ownership = await storage.acquireOwnership({ failFast: true });
  const ready = await storage.init();
  await ready.usage;
  let maxBytes = 0;
  const blobs = observed(storage.blobs, (b) => (maxBytes = Math.max(maxBytes, b)));
  const hc = await startApp({
    stores: { blobs, manifests: storage.manifests, metadata: storage.metadata, access: storage.access },
    maxConcurrentFills: FILLS,
    ...(capped ? { eviction: { maxBytes: CAP } } : {}),
  });
  try {
    const digests = Array.from({ length: BLOBS }, (_, i) => hc.registry.putBlob(seededBytes(`evict-bench-${seed}-${i}`, BLOB)));
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CLIENTS }, async (_, c) => {
        for (let i = c; i < digests.length; i += CLIENTS) {
          const res = await fetch(`${hc.url}/v2/library/bench/blobs/${digests[i]}`);
          const body = await res.arrayBuffer();
          if (res.status !== 200 || body.byteLength !== BLOB) throw new Error(`pull ${i}: ${res.status}, ${body.byteLength} bytes`);
          hc.clock.advance(1);
        }
      }),
    );
    const ms = performance.now() - t0;
    await hc.settle();
    const evicted = capped ? (await hc.metrics.registry.getSingleMetric('hubcache_evictions_total')!.get()).values.reduce((n, v) => n + v.value, 0) : 0;
    await hc.evictor?.stop();
    return { pullsPerSecond: (BLOBS / ms) * 1000, maxBytes, finalBytes: storage.blobs.usage()?.bytes ?? 0, evicted };
  } finally {
    await hc.close();
    await storage.close();
    await ownership.release();
    rmSync(root, { recursive: true, force: true });
  }
}

/** Runs the section and returns its rows (bench/run.ts adds them to its table). */
export async function benchEviction(log: (msg: string) => void = () => {}): Promise<EvictionRow[]> {
  const capped: RunResult[] = [];
  const free: RunResult[] = [];
  for (let r = 0; r < RUNS; r++) {
    capped.push(await oneRun(true, r));
    free.push(await oneRun(false, r));
    log(`eviction run ${r + 1}/${RUNS}: capped ${fmt(capped[r]!.pullsPerSecond, 0)} pulls/s (max ${fmt(capped[r]!.maxBytes / CAP, 3)} × cap, ${capped[r]!.evicted} evicted), uncapped ${fmt(free[r]!.pullsPerSecond, 0)} pulls/s`);
  }
  const inFlight = FILLS * BLOB;
  const excess = capped.map((c) => Math.max(0, c.maxBytes - CAP) / inFlight);
  const speed = ratios(
    capped.map((c) => c.pullsPerSecond),
    free.map((f) => f.pullsPerSecond),
  );
  const setup = `${BLOBS} blobs × ${BLOB / KiB} KiB, ${CLIENTS} clients, cap ${CAP / KiB} KiB (${CAP / BLOB} blobs, watermarks 95/85), ${FILLS} downloads at once`;
  return [
    {
      metric: 'eviction: max store ÷ cap',
      median: median(capped.map((c) => c.maxBytes / CAP)),
      unit: '×',
      target: `≤ 1 + ${FILLS} blobs in flight (${fmt(1 + inFlight / CAP, 3)})`,
      pass: capped.every((c) => c.maxBytes <= CAP + inFlight),
      detail: `${setup}; max of every run ${fmt(Math.max(...capped.map((c) => c.maxBytes / CAP)), 3)}; every commit observed`,
    },
    {
      metric: 'eviction: excess over cap ÷ blobs in flight',
      median: median(excess),
      unit: '×',
      target: '≤ 1',
      pass: excess.every((e) => e <= 1),
      detail: `worst run ${fmt(Math.max(...excess), 3)}; store after the load ${fmt(median(capped.map((c) => c.finalBytes / CAP)), 3)} × cap; ${fmt(median(capped.map((c) => c.evicted)), 0)} evictions per run`,
    },
    {
      metric: 'eviction: pulls/s capped ÷ uncapped',
      median: median(speed),
      unit: '×',
      target: '≥ 0.8 (serving at full speed)',
      pass: median(speed) >= 0.8,
      detail: `capped ${fmt(median(capped.map((c) => c.pullsPerSecond)), 0)} pulls/s, uncapped ${fmt(median(free.map((f) => f.pullsPerSecond)), 0)} (every pull a miss: download, commit, and on the capped side eviction)`,
    },
  ];
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const rows = await benchEviction((m) => process.stderr.write(`[bench eviction] ${m}\n`));
  for (const r of rows) process.stdout.write(`${r.metric}: ${fmt(r.median, 3)} ${r.unit} (target ${r.target}) ${r.pass ? 'PASS' : 'FAIL'} — ${r.detail}\n`);
}
