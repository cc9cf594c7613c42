/**
 * Same-run A/B of two compiled hubcache builds on the cold path (issue #16): for each run, each side
 * in turn (A,B,B,A,…: alternating which goes first), on loopback against the test upstream:
 *   - one cold GET of a BENCH_CONC_MIB blob (curl): wall time and hubcache's CPU (utime+stime)
 *   - BENCH_CLIENTS concurrent cold GETs of it: slowest client, CPU, peak RSS (VmRSS sampled)
 *   - one warm GET of the stored blob (no fill): wall time and CPU
 * Prints per-run figures and the medians of the per-run B ÷ A ratios.
 *
 *   npx tsx bench/cold-ab.ts <A cli.js> <B cli.js>
 *
 * Build a side as it ships with `node scripts/build.mjs /tmp/NAME/dist`, then copy package.json
 * and bin/ to /tmp/NAME and link node_modules there (bench/build.ts does the same).
 * BENCH_NODE_ARGS adds node flags to both sides (e.g. --trace-gc is printed to the child's stdout).
 * BENCH_FILL_LOG=1 prints each cold GET's 'fill committed' line (storeWaits/storeWaitMs: how long
 * the fill stopped reading the upstream for the store, on builds that log it).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { startHubcacheProcess, type HubcacheProcess } from '../test/support/hubcache-process.js';
import { startUpstream } from '../test/support/upstream-harness.js';
import { curlGet, curlMany } from './curl-client.js';
import { readRss, RssSampler } from './rss-sampler.js';
import { seededBlob } from './seeded-blob.js';
import { fmt, max, median, MiB } from './stats.js';

const [binA, binB] = process.argv.slice(2);
if (!binA || !binB) throw new Error('usage: cold-ab.ts <A cli.js> <B cli.js>');
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const SIZE = Number(process.env.BENCH_CONC_MIB ?? 128) * MiB;
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 20);
const NODE_ARGS = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
const SKIP = new Set((process.env.BENCH_SKIP ?? '').split(',').filter(Boolean));
const REPO = 'bench/cold-ab';
const log = (msg: string) => process.stderr.write(`[cold-ab ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

/** utime + stime of `pid` in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** utime/stime (s) of `pid`'s main thread and of its other threads together. */
function threadCpu(pid: number): Record<'main' | 'others', [number, number]> {
  const out: Record<'main' | 'others', [number, number]> = { main: [0, 0], others: [0, 0] };
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const t = out[tid === String(pid) ? 'main' : 'others'];
    t[0] += Number(f[11]) / 100;
    t[1] += Number(f[12]) / 100;
  }
  return out;
}

const threadDiff = (a: ReturnType<typeof threadCpu>, b: ReturnType<typeof threadCpu>): string =>
  (['main', 'others'] as const).map((k) => `${k} user ${(b[k][0] - a[k][0]).toFixed(2)} sys ${(b[k][1] - a[k][1]).toFixed(2)}`).join(', ');

/** Read and write syscalls of `pid` so far (/proc/PID/io: every thread, sockets and files). */
function ioCounts(pid: number): { syscr: number; syscw: number } {
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  return { syscr: Number(/syscr: (\d+)/.exec(io)?.[1]), syscw: Number(/syscw: (\d+)/.exec(io)?.[1]) };
}

/** --trace-gc lines (on stdout, kept as non-JSON log lines): count and pause ms per kind. */
function gcSummary(lines: Array<Record<string, unknown>>): string {
  const by = new Map<string, [number, number]>();
  for (const l of lines) {
    const m = /(Scavenge|Mark-Compact|Mark-sweep|Minor Mark-Sweep)[^,]*?, ([\d.]+) \/ [\d.]+ ms/.exec(String(l.message));
    if (!m) continue;
    const t = by.get(m[1]!) ?? [0, 0];
    by.set(m[1]!, [t[0] + 1, t[1] + Number(m[2])]);
  }
  return [...by].map(([k, [n, ms]]) => `${k} ×${n} ${ms.toFixed(0)} ms`).join(', ') || 'none';
}

const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

interface Side {
  coldMs: number[];
  coldCpu: number[];
  fanSlowestMs: number[];
  fanCpu: number[];
  fanPeakRss: number[];
  warmMs: number[];
  warmCpu: number[];
}

const up = await startUpstream();
try {
  log(`pushing a ${SIZE / MiB} MiB blob`);
  const blob = await seededBlob('cold-ab', SIZE);
  await up.client.pushBlob(REPO, blob);
  const path = `/v2/${REPO}/blobs/${blob.digest}`;
  // Each hubcache process first fills this smaller blob (not measured): the JIT is warm, as in a
  // long-running process, and its compile threads don't count in the figures.
  const warmup = await seededBlob('cold-ab-warmup', 16 * MiB);
  await up.client.pushBlob(REPO, warmup);
  const warmupPath = `/v2/${REPO}/blobs/${warmup.digest}`;
  const sides: Record<'A' | 'B', Side> = {
    A: { coldMs: [], coldCpu: [], fanSlowestMs: [], fanCpu: [], fanPeakRss: [], warmMs: [], warmCpu: [] },
    B: { coldMs: [], coldCpu: [], fanSlowestMs: [], fanCpu: [], fanPeakRss: [], warmMs: [], warmCpu: [] },
  };
  const start = async (bin: string): Promise<HubcacheProcess> => {
    const extra = bin === binB ? (process.env.BENCH_NODE_ARGS_B ?? '').split(' ').filter(Boolean) : [];
    const hc = await startHubcacheProcess({ upstream: up, bin, nodeArgs: [...NODE_ARGS, ...extra] });
    await curlGet(`${hc.url}${warmupPath}`);
    await curlGet(`${hc.url}${warmupPath}`);
    return hc;
  };
  for (let i = 0; i < RUNS; i++) {
    const order: Array<'A' | 'B'> = i % 2 === 0 ? ['A', 'B'] : ['B', 'A'];
    for (const name of order) {
      const bin = name === 'A' ? binA : binB;
      const s = sides[name];
      if (!SKIP.has('cold')) {
        const hc = await start(bin);
        const pid = hc.child.pid!;
        const c0 = cpuSeconds(pid);
        const t0 = threadCpu(pid);
        const logsBefore = hc.logs.length;
        const io0 = ioCounts(pid);
        const one = await curlGet(`${hc.url}${path}`);
        if (one.bytes !== SIZE) throw new Error(`short read ${one.bytes}`);
        s.coldMs.push(one.totalMs);
        s.coldCpu.push(cpuSeconds(pid) - c0);
        const io1 = ioCounts(pid);
        if (process.env.BENCH_THREADS) log(`${name} cold GET syscalls: read ${io1.syscr - io0.syscr}, write ${io1.syscw - io0.syscw}`);
        if (process.env.BENCH_GC_LINES) for (const l of hc.logs.slice(logsBefore)) if (/ms: /.test(String(l.message))) log(String(l.message));
        if (NODE_ARGS.includes('--trace-gc')) log(`${name} cold GET GCs: ${gcSummary(hc.logs.slice(logsBefore))}`);
        if (process.env.BENCH_THREADS) log(`${name} cold GET CPU by thread: ${threadDiff(t0, threadCpu(pid))}`);
        if (process.env.BENCH_NO_WARM) {
          await hc.close();
          continue;
        }
        const w0 = cpuSeconds(pid);
        // The commit may still run: wait for it before the warm GET (this blob's: the warm-up's
        // line is already there).
        const committed = await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === blob.digest);
        if (process.env.BENCH_FILL_LOG) log(`${name} fill committed: ${JSON.stringify(committed)}`);
        const warm = await curlGet(`${hc.url}${path}`);
        s.warmMs.push(warm.totalMs);
        s.warmCpu.push(cpuSeconds(pid) - w0);
        await hc.close();
      }
      if (!SKIP.has('fan')) {
        const hc = await start(bin);
        const pid = hc.child.pid!;
        const rss = new RssSampler(pid, 20);
        const parts = { anon: 0, file: 0, start: readRss(pid)?.rssBytes ?? 0 };
        const partsTimer = setInterval(() => {
          try {
            const st = readFileSync(`/proc/${pid}/status`, 'utf8');
            const kb = (f: string) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? 0) / 1024;
            parts.anon = Math.max(parts.anon, kb('RssAnon'));
            parts.file = Math.max(parts.file, kb('RssFile'));
          } catch {}
        }, 20);
        const c0 = cpuSeconds(pid);
        const io0 = ioCounts(pid);
        const many = await curlMany(`${hc.url}${path}`, CLIENTS, { timeoutMs: 300_000 });
        s.fanCpu.push(cpuSeconds(pid) - c0);
        const io1 = ioCounts(pid);
        if (process.env.BENCH_THREADS) log(`${name} fan-out syscalls: read ${io1.syscr - io0.syscr}, write ${io1.syscw - io0.syscw}`);
        s.fanPeakRss.push(rss.stop().peakRssBytes / MiB);
        clearInterval(partsTimer);
        log(`${name} fan-out RSS: start ${(parts.start / MiB).toFixed(0)} MiB, peak anon ${parts.anon.toFixed(0)} MiB, peak file ${parts.file.toFixed(0)} MiB`);
        for (const t of many.transfers) if (t.bytes !== SIZE) throw new Error(`short read ${t.bytes}`);
        s.fanSlowestMs.push(max(many.transfers.map((t) => t.totalMs)));
        await hc.close();
      }
      const last = (a: number[]) => (a.length ? fmt(a.at(-1)!, 2) : '-');
      log(`run ${i + 1}/${RUNS} ${name}: cold ${last(s.coldMs)} ms cpu ${last(s.coldCpu)} s | warm ${last(s.warmMs)} ms cpu ${last(s.warmCpu)} s | fan-out slowest ${last(s.fanSlowestMs)} ms cpu ${last(s.fanCpu)} s peak RSS ${last(s.fanPeakRss)} MiB | load ${load()}`);
    }
  }
  const rows: Array<[string, keyof Side]> = [
    ['cold GET wall ms', 'coldMs'],
    ['cold GET hubcache CPU s', 'coldCpu'],
    ['warm GET wall ms', 'warmMs'],
    ['warm GET hubcache CPU s', 'warmCpu'],
    [`${CLIENTS} cold GETs slowest ms`, 'fanSlowestMs'],
    [`${CLIENTS} cold GETs hubcache CPU s`, 'fanCpu'],
    [`${CLIENTS} cold GETs peak RSS MiB`, 'fanPeakRss'],
  ];
  process.stdout.write(`\n${RUNS} runs, ${SIZE / MiB} MiB, load now ${load()}\n| metric | A median | B median | B÷A median of per-run ratios | per run B÷A |\n|---|---|---|---|---|\n`);
  for (const [label, k] of rows) {
    const a = sides.A[k];
    const b = sides.B[k];
    if (!a.length) continue;
    const r = a.map((x, j) => b[j]! / x);
    process.stdout.write(`| ${label} | ${fmt(median(a), 2)} | ${fmt(median(b), 2)} | ${fmt(median(r), 3)} | ${r.map((x) => fmt(x, 2)).join(' ')} |\n`);
  }
} finally {
  await up.close();
}
