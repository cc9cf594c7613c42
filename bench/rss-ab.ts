/**
 * RSS-after-load A/B (issue #13): two builds of the CLI (`npm run build`'s bundle, laid out as
 * bench/build.ts does) served in turn on one synthetic store (src/storage/fs/testing/synthetic-store.ts),
 * side A then B then A… (the first side alternates per pair), BENCH_PAIRS pairs (default 4). Each
 * start runs what bench/store-size.ts runs: spawn → /readyz 200 (wall, and CPU from /proc), RSS once
 * ready, wait for the background usage count, then the same load (BENCH_REQUESTS rounds, default
 * 1000, one request at a time on one keep-alive connection: HEAD blob, GET blob, GET manifest by
 * digest, GET tag within TTL, /metrics every 10th), then VmRSS. Reports medians per side and the
 * median of the per-pair ratios B ÷ A, with the load average.
 *
 * BENCH_RSS_PROBE=1 also preloads bench/rss-probe-preload.cjs (with --expose-gc) and, after the RSS
 * reading, asks it for process.memoryUsage() before and after a full GC: the breakdown of the RSS
 * (V8 heap used / heap reserved / external / the rest: code, native allocations). The probe runs
 * after the reading, so it does not change the RSS figure. RSS_PROBE_SNAPSHOT=/tmp/x writes a heap
 * snapshot too (summarise it with bench/heap-summary.ts); BENCH_RSS_SAMPLE=1 samples, from the end of
 * the usage count to the end of the load, the allocations that outlived the young generation.
 * BENCH_TRACE_GC=FILE runs the servers with --trace-gc (lines tagged with the run's phase).
 * BENCH_NODE_ARGS_A / BENCH_NODE_ARGS_B add node flags to one side (A = B = one build: a flag's A/B).
 *
 *   tsx bench/rss-ab.ts A_CLI B_CLI      e.g. /tmp/main-build/bin/hubcache.js /tmp/my-build/bin/hubcache.js
 *   BENCH_STORE_BLOBS=100000 BENCH_PAIRS=4 BENCH_REQUESTS=1000 …
 */
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { writeSyntheticStore, type SyntheticStore } from '../src/storage/fs/testing/synthetic-store.js';
import { readRss } from './rss-sampler.js';
import { cpuMs, spawnServe, untilReady } from './start-ab.js';
import { fmt, median, MiB } from './stats.js';
import { freePort } from '../test/support/distribution.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const PROBE = process.env.BENCH_RSS_PROBE === '1';
/** BENCH_TRACE_GC=FILE: run the servers with --trace-gc, their GC lines appended to FILE. */
const TRACE_GC = process.env.BENCH_TRACE_GC;

interface MemoryBreakdown {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}
interface ServeResult {
  readyMs: number;
  readyCpuMs: number;
  rssReady: number;
  /** Once the background usage count is done, before the load. */
  rssCounted: number;
  rssLoaded: number;
  /** The probe once ready (no GC) and after the load (then a full GC), with BENCH_RSS_PROBE=1. */
  probeReady?: Probe;
  /** Once the background usage count is done, before the load (no GC). */
  probeCounted?: Probe;
  probe?: Probe;
}
interface Probe {
  before: MemoryBreakdown;
  afterGc?: MemoryBreakdown;
  spaces: Array<{ name: string; size: number; used: number }>;
  spacesAfterGc?: Array<{ name: string; size: number; used: number }>;
}

async function askProbe(pid: number, out: string, what: 'nogc' | 'sample' | 'gc'): Promise<Probe> {
  rmSync(out, { force: true });
  writeFileSync(`${out}.req`, what);
  process.kill(pid, 'SIGUSR2');
  const deadline = performance.now() + 60_000;
  while (!existsSync(out)) {
    if (performance.now() > deadline) throw new Error('the probe did not answer');
    await new Promise((res) => setTimeout(res, 20));
  }
  return JSON.parse(readFileSync(out, 'utf8')) as Probe;
}

// Node flags for one side only (a V8 flag measured against the same build without it).
const NODE_ARGS_A = (process.env.BENCH_NODE_ARGS_A ?? '').split(' ').filter(Boolean);
const NODE_ARGS_B = (process.env.BENCH_NODE_ARGS_B ?? '').split(' ').filter(Boolean);

export async function serveAndLoad(bin: string, root: string, store: SyntheticStore, requests: number, probeOut?: string, extraNodeArgs: readonly string[] = []): Promise<ServeResult> {
  const [port, metricsPort] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${port}`;
  const metricsUrl = `http://127.0.0.1:${metricsPort}`;
  const agent = new Agent({ connections: 1, pipelining: 1, keepAliveTimeout: 30_000 });
  const nodeArgs = [...(probeOut ? ['--expose-gc', '--require', join(HERE, 'rss-probe-preload.cjs')] : []), ...(TRACE_GC ? ['--trace-gc'] : []), ...extraNodeArgs];
  const t0 = performance.now();
  const server = spawnServe([...nodeArgs, bin], root, {
    port,
    metricsPort,
    stdout: TRACE_GC ? 'pipe' : 'ignore',
    env: probeOut ? { RSS_PROBE_OUT: probeOut, RSS_PROBE_SNAPSHOT: process.env.RSS_PROBE_SNAPSHOT ?? '' } : {},
  });
  const { child } = server;
  // --trace-gc lines, each prefixed with the phase of the run it was printed in.
  let phase = 'start';
  if (TRACE_GC) child.stdout!.on('data', (d: Buffer) => appendFileSync(TRACE_GC, d.toString().replace(/^(?=.)/gm, `[${phase}] `)));
  try {
    const get = async (path: string, method: 'GET' | 'HEAD' = 'GET', base = url) => {
      const res = await request(`${base}${path}`, { method, dispatcher: agent });
      await res.body.dump({ limit: Number.MAX_SAFE_INTEGER });
      return res.statusCode;
    };
    const readyMs = await untilReady(child, () => get('/readyz').catch(() => undefined), t0, server.stderr);
    const readyCpuMs = cpuMs(child.pid!);
    const rssReady = readRss(child.pid!)!.rssBytes;
    // After the RSS reading: the probe's own allocations do not count.
    const probeReady = probeOut ? await askProbe(child.pid!, probeOut, 'nogc') : undefined;
    phase = 'counting';
    for (;;) {
      const text = await (await request(`${metricsUrl}/metrics`, { dispatcher: agent })).body.text();
      if (/^hubcache_store_objects \d/m.test(text)) break;
      await new Promise((res) => setTimeout(res, 20));
      if (performance.now() - t0 > 120_000) throw new Error('the store was not counted within 120 s');
    }
    const probeCounted = probeOut ? await askProbe(child.pid!, probeOut, process.env.BENCH_RSS_SAMPLE === '1' ? 'sample' : 'nogc') : undefined;
    const rssCounted = readRss(child.pid!)!.rssBytes;
    phase = 'load';
    // The same deterministic picks as bench/store-size.ts.
    let seed = 42;
    const pick = <T>(xs: readonly T[]): T => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return xs[seed % xs.length]!;
    };
    const must = async (path: string, method: 'GET' | 'HEAD' = 'GET', base = url) => {
      const status = await get(path, method, base);
      if (status !== 200) throw new Error(`${method} ${path}: ${status}`);
    };
    const blobPath = (d: string, repo: string) => `/v2/${repo}/blobs/${d}`;
    for (let i = 0; i < requests; i++) {
      const img = pick(store.images);
      await must(blobPath(pick(img.blobs), img.repository), 'HEAD');
      await must(blobPath(pick(pick(store.images).blobs), img.repository));
      await must(`/v2/${img.repository}/manifests/${img.manifest}`);
      const tagged = pick(store.images);
      await must(`/v2/${tagged.repository}/manifests/${pick(tagged.tags)}`);
      if (i % 10 === 0) await must('/metrics', 'GET', metricsUrl);
    }
    const rssLoaded = readRss(child.pid!)!.rssBytes;
    phase = 'after';
    if (TRACE_GC) appendFileSync(TRACE_GC, `[after] RSS after the load ${mib(rssLoaded)} MiB\n`);
    const result: ServeResult = { readyMs, readyCpuMs, rssReady, rssCounted, rssLoaded };
    if (probeOut) {
      result.probeReady = probeReady;
      result.probeCounted = probeCounted;
      result.probe = await askProbe(child.pid!, probeOut, 'gc');
      if (existsSync(`${probeOut}.heapprofile`)) console.log(`    sampled heap profile: ${summariseProfile(`${probeOut}.heapprofile`)}`);
    }
    return result;
  } finally {
    await agent.close();
    await server.stop();
  }
}

const mib = (n: number) => fmt(n / MiB, 1);

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}
/** The sampled allocations (of objects that outlived the young generation) by allocating function, largest first. */
function summariseProfile(file: string, top = 15): string {
  const root = JSON.parse(readFileSync(file, 'utf8')) as { head: ProfileNode };
  const byFn = new Map<string, number>();
  let total = 0;
  const walk = (n: ProfileNode, stack: string[]) => {
    const here = `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*\//, '')}:${n.callFrame.lineNumber + 1}`;
    const path = [...stack, here];
    if (n.selfSize > 0) {
      const key = path.slice(-4).join(' < ');
      byFn.set(key, (byFn.get(key) ?? 0) + n.selfSize);
      total += n.selfSize;
    }
    for (const c of n.children) walk(c, path);
  };
  walk(root.head, []);
  rmSync(file);
  return `${mib(total)} MiB sampled\n` + [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => `      ${mib(v)} MiB  ${k.split(' < ').reverse().join(' < ')}`).join('\n');
}

function describeProbe(p: Probe): string {
  const b = p.before;
  const line = (m: MemoryBreakdown) => `rss ${mib(m.rss)}, heapTotal ${mib(m.heapTotal)}, heapUsed ${mib(m.heapUsed)}, external ${mib(m.external)} (arrayBuffers ${mib(m.arrayBuffers)}), rss − heapTotal − external ${mib(m.rss - m.heapTotal - m.external)}`;
  const spaces = p.spaces.filter((s) => s.size > 0).map((s) => `${s.name} ${mib(s.size)}/${mib(s.used)}`).join(', ');
  const spacesGc = p.spacesAfterGc?.filter((s) => s.size > 0).map((s) => `${s.name} ${mib(s.size)}/${mib(s.used)}`).join(', ');
  return `    ${line(b)}\n    spaces (reserved/used): ${spaces}` + (p.afterGc ? `\n    after a full GC: ${line(p.afterGc)}\n    spaces after GC: ${spacesGc}` : '');
}

async function main(): Promise<void> {
  const [a, b] = process.argv.slice(2);
  if (!a || !b) throw new Error('usage: tsx bench/rss-ab.ts A_CLI B_CLI');
  const blobs = Number(process.env.BENCH_STORE_BLOBS ?? 100_000);
  const pairs = Number(process.env.BENCH_PAIRS ?? 4);
  const requests = Number(process.env.BENCH_REQUESTS ?? 1000);
  const scratch = mkdtempSync(join(tmpdir(), 'hubcache-rss-ab-'));
  const root = join(scratch, 'store');
  const probeOut = PROBE ? join(scratch, 'probe.json') : undefined;
  try {
    let t0 = performance.now();
    const store = writeSyntheticStore({ root, blobs, validatedAt: Date.now() });
    console.log(`generated ${blobs} blobs in ${fmt((performance.now() - t0) / 1000, 1)} s`);
    const before = loadavg();
    type K = 'readyMs' | 'readyCpuMs' | 'rssReady' | 'rssCounted' | 'rssLoaded';
    const keys: K[] = ['readyMs', 'readyCpuMs', 'rssReady', 'rssCounted', 'rssLoaded'];
    const sides = { a: [] as ServeResult[], b: [] as ServeResult[] };
    const ratios: Record<K, number[]> = { readyMs: [], readyCpuMs: [], rssReady: [], rssCounted: [], rssLoaded: [] };
    for (let i = 0; i < pairs; i++) {
      const order: Array<'a' | 'b'> = i % 2 === 0 ? ['a', 'b'] : ['b', 'a'];
      const got: Partial<Record<'a' | 'b', ServeResult>> = {};
      for (const side of order) {
        t0 = performance.now();
        const r = await serveAndLoad(side === 'a' ? a : b, root, store, requests, probeOut, side === 'a' ? NODE_ARGS_A : NODE_ARGS_B);
        got[side] = r;
        sides[side].push(r);
        console.log(`pair ${i + 1} ${side.toUpperCase()}: ready ${fmt(r.readyMs, 0)} ms (CPU ${fmt(r.readyCpuMs, 0)}), RSS ready ${mib(r.rssReady)} → counted ${mib(r.rssCounted)} → after the load ${mib(r.rssLoaded)} MiB (run ${fmt((performance.now() - t0) / 1000, 1)} s; load ${loadavg().map((x) => fmt(x, 2)).join(' ')})`);
        if (r.probeReady) console.log(`  once ready:\n${describeProbe(r.probeReady)}`);
        if (r.probeCounted) console.log(`  counted, before the load:\n${describeProbe(r.probeCounted)}`);
        if (r.probe) console.log(`  after the load:\n${describeProbe(r.probe)}`);
      }
      for (const k of keys) ratios[k].push(got.b![k] / got.a![k]);
    }
    const after = loadavg();
    const row = (name: string, k: K, unit: (n: number) => string) =>
      `| ${name} | ${unit(median(sides.a.map((r) => r[k])))} | ${unit(median(sides.b.map((r) => r[k])))} | ${fmt(median(ratios[k]), 2)}× | ${ratios[k].map((x) => fmt(x, 2)).join(' ')} |`;
    const ms = (n: number) => `${fmt(n, 0)} ms`;
    const mb = (n: number) => `${mib(n)} MiB`;
    console.log(`\n${blobs} blobs, ${pairs} pairs, ${requests} load rounds; A = ${a}, B = ${b}; load average before ${before.map((x) => fmt(x, 2)).join(' ')}, after ${after.map((x) => fmt(x, 2)).join(' ')}`);
    console.log('| metric (median) | A | B | B ÷ A (median of per-pair ratios) | per pair |');
    console.log('|---|---|---|---|---|');
    console.log(row('RSS after the load', 'rssLoaded', mb));
    console.log(row('RSS once ready', 'rssReady', mb));
    console.log(row('RSS once the usage is counted (before the load)', 'rssCounted', mb));
    console.log(row('start-to-ready (spawn → /readyz 200), wall', 'readyMs', ms));
    console.log(row('… CPU (user + sys) used by then', 'readyCpuMs', ms));
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
