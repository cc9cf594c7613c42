/**
 * `hubcache du` and `hubcache ls` A/B (issue #13: "ls and du at 100k in a few seconds"): two builds
 * of the CLI run in turn on one synthetic store (src/storage/fs/testing/synthetic-store.ts, the real
 * layout with the derived files a running hubcache keeps, warm page cache), output to /dev/null; per
 * pair side A then side B (the first side alternates per pair), BENCH_PAIRS pairs (default 7). Each
 * run: wall time (spawn → exit) and CPU time (user + system, /usr/bin/time). Reports each side's
 * medians and the median of the per-pair ratios B ÷ A, with the load average before and after.
 *
 *   tsx bench/walk-ab.ts A_CLI B_CLI             e.g. /tmp/main-build/bin/hubcache.js /tmp/br-build/bin/hubcache.js
 *   BENCH_STORE_BLOBS=100000 BENCH_PAIRS=9 …      store size (default 100000), pairs
 *   BENCH_STORE_ROOT=/tmp/store-100k …            reuse (or create once) a store there
 *   BENCH_WALKS=du                                only du (default du,ls)
 */
import { timeCli } from './start-ab.js';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSyntheticStore } from '../src/storage/fs/testing/synthetic-store.js';
import { fmt, median } from './stats.js';

async function main(): Promise<void> {
  const [a, b] = process.argv.slice(2);
  if (!a || !b) throw new Error('usage: tsx bench/walk-ab.ts A_CLI B_CLI');
  const pairs = Number(process.env.BENCH_PAIRS ?? 7);
  const blobs = Number(process.env.BENCH_STORE_BLOBS ?? 100_000);
  const walks = (process.env.BENCH_WALKS ?? 'du,ls').split(',');
  const scratch = process.env.BENCH_STORE_ROOT ? undefined : mkdtempSync(join(tmpdir(), 'hubcache-walk-ab-'));
  const root = process.env.BENCH_STORE_ROOT ?? join(scratch!, 'store');
  try {
    if (!existsSync(join(root, 'blobs'))) {
      console.log(`writing a synthetic store of ${blobs} blobs in ${root}`);
      writeSyntheticStore({ root, blobs, validatedAt: Date.now() });
    }
    const load0 = loadavg();
    for (const walk of walks) {
      const runs = { a: [] as Array<{ wallMs: number; cpuMs: number }>, b: [] as Array<{ wallMs: number; cpuMs: number }> };
      for (let i = 0; i < pairs; i++) {
        const order = i % 2 === 0 ? (['a', 'b'] as const) : (['b', 'a'] as const);
        for (const side of order) runs[side].push(timeCli(side === 'a' ? a : b, [walk, '--storage-path', root]));
        console.log(`${walk} pair ${i + 1}: A ${fmt(runs.a[i]!.wallMs / 1000)} s (CPU ${fmt(runs.a[i]!.cpuMs / 1000)} s), B ${fmt(runs.b[i]!.wallMs / 1000)} s (CPU ${fmt(runs.b[i]!.cpuMs / 1000)} s)`);
      }
      const med = (side: 'a' | 'b', k: 'wallMs' | 'cpuMs') => median(runs[side].map((r) => r[k])) / 1000;
      const ratio = (k: 'wallMs' | 'cpuMs') => median(runs.b.map((r, i) => r[k] / runs.a[i]![k]));
      console.log(
        `${walk}: A wall ${fmt(med('a', 'wallMs'))} s CPU ${fmt(med('a', 'cpuMs'))} s; B wall ${fmt(med('b', 'wallMs'))} s CPU ${fmt(med('b', 'cpuMs'))} s; ` +
          `B ÷ A (median of ${pairs} per-pair ratios): wall ${fmt(ratio('wallMs'))}×, CPU ${fmt(ratio('cpuMs'))}×`,
      );
    }
    console.log(`load average before ${load0.map((l) => fmt(l)).join(' ')}, after ${loadavg().map((l) => fmt(l)).join(' ')}`);
  } finally {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
