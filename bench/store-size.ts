/**
 * The store-size section of `npm run bench` (issue #13, "Fast at any size"): synthetic stores of
 * 1k, 10k and 100k blobs in the real on-disk layout (src/storage/fs/testing/synthetic-store.ts: a
 * quarter as many manifests, as many tags as blobs, 1000 tags per repository, real sha256 names;
 * files written directly), then for each size, with a warm page cache:
 *
 *   - `hubcache ls` and `hubcache du` (the shipped build: `npm run build`'s esbuild bundle run by
 *     bin/hubcache.js, bench/build.ts; output to /dev/null): wall time
 *   - start-to-ready of a real `hubcache serve`: from spawn to the first `/readyz` 200 (polled every
 *     5 ms; the port refuses connections until it listens), the CPU time (user + system, from
 *     /proc/<pid>/stat) it had used by then (on a shared machine the load-independent figure), and
 *     to the first 200 of a cached blob (for reference, spawn → exit of `hubcache --version`:
 *     Node's own start and the module loading); and the same start-to-ready from a checkout (`node --import tsx src/cli.ts serve`: the sources
 *     compiled on the fly, as `npm start` runs them), for reference
 *   - RSS (VmRSS) once ready, and after the load below
 *   - spawn → the background usage count done (`hubcache_store_objects` has a sample); the load
 *     starts then, so every size is measured in the steady state
 *   - a bounded load, one request at a time on a keep-alive connection: HEAD and GET of random
 *     cached blobs, GET of manifests by digest, GET of tags within their TTL (cache hits: no
 *     upstream request may happen, checked on /metrics), and GET /metrics: p50/p99 of each
 *
 * Medians over BENCH_RUNS starts (and loads); ls and du run BENCH_STORE_CLI_RUNS times (default 3).
 * Targets: start-to-ready < 1 s at 100k and not growing with the store, p99 at 100k ≤ 1.5 × the 1k
 * figure, RSS < 150 MB at 100k, ls and du at 100k in a few seconds (≤ 5 s).
 *
 *   tsx bench/store-size.ts           this section alone; rewrites its part of bench/RESULTS.md
 *   BENCH_STORE_SIZES=1000,10000 …    other sizes
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { writeSyntheticStore, type SyntheticStore } from '../src/storage/fs/testing/synthetic-store.js';
import { metricValue } from '../test/support/hubcache-process.js';
import { buildHubcache } from './build.js';
import { cpuMs, readyzStatus, spawnServe, timeCli, untilReady } from './start-ab.js';
import { readRss } from './rss-sampler.js';
import { fmt, GiB, median, MiB } from './stats.js';
import { freePort } from '../test/support/distribution.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
export const SECTION_START = '<!-- store-size -->';
export const SECTION_END = '<!-- /store-size -->';

export interface StoreSizeOptions {
  readonly bin: string;
  readonly scratch: string;
  readonly sizes: readonly number[];
  readonly runs: number;
  readonly cliRuns: number;
  /** Requests of each kind per load. */
  readonly requests: number;
  readonly log: (msg: string) => void;
}

interface SizeResult {
  blobs: number;
  manifests: number;
  tags: number;
  generateMs: number;
  lsMs: number[];
  duMs: number[];
  /** CPU time (user + system) of the same runs. */
  lsCpuMs: number[];
  duCpuMs: number[];
  readyMs: number[];
  /** CPU time (user + system) the server had used when /readyz first answered 200. */
  readyCpuMs: number[];
  /** Spawn → /readyz 200 of the checkout's sources through tsx (no load). */
  checkoutReadyMs: number[];
  /** Spawn → exit of `hubcache --version`: Node's start and the CLI's module loading alone (the floor of start-to-ready). */
  versionMs: number[];
  firstBlobMs: number[];
  /** Spawn → the background usage count done (hubcache_store_objects has a sample). */
  countedMs: number[];
  rssReady: number[];
  rssLoaded: number[];
  /** p50 and p99 (ms) per kind, one per run. */
  latency: Record<string, { p50: number[]; p99: number[] }>;
  upstreamRequests: number;
}

export interface StoreSizeReport {
  readonly results: SizeResult[];
  /** The markdown section (between SECTION_START and SECTION_END). */
  readonly markdown: string;
  readonly pass: boolean;
}

const KINDS = ['HEAD blob', 'GET blob', 'GET manifest by digest', 'GET tag (within TTL)', 'GET /metrics'] as const;

export async function benchStoreSize(opts: StoreSizeOptions): Promise<StoreSizeReport> {
  const results: SizeResult[] = [];
  for (const size of opts.sizes) {
    const root = join(opts.scratch, `store-${size}`);
    let t0 = performance.now();
    const store = writeSyntheticStore({ root, blobs: size, validatedAt: Date.now() });
    const generateMs = performance.now() - t0;
    opts.log(`store-size ${size}: generated ${size} blobs, ${store.images.length} manifests, ${store.tags} tags in ${fmt(generateMs / 1000, 1)} s`);
    const r: SizeResult = { blobs: size, manifests: store.images.length, tags: store.tags, generateMs, lsMs: [], duMs: [], lsCpuMs: [], duCpuMs: [], readyMs: [], readyCpuMs: [], checkoutReadyMs: [], versionMs: [], firstBlobMs: [], countedMs: [], rssReady: [], rssLoaded: [], latency: {}, upstreamRequests: 0 };
    for (const k of KINDS) r.latency[k] = { p50: [], p99: [] };
    for (let i = 0; i < opts.cliRuns; i++) {
      r.lsMs.push(timeCliRun(opts.bin, ['ls', '--storage-path', root], r.lsCpuMs));
      r.duMs.push(timeCliRun(opts.bin, ['du', '--storage-path', root], r.duCpuMs));
      opts.log(`store-size ${size}: ls ${fmt(r.lsMs[i]! / 1000)} s (CPU ${fmt(r.lsCpuMs[i]! / 1000)} s), du ${fmt(r.duMs[i]! / 1000)} s (CPU ${fmt(r.duCpuMs[i]! / 1000)} s)`);
    }
    for (let i = 0; i < opts.runs; i++) {
      r.versionMs.push(timeCliRun(opts.bin, ['--version']));
      await serveRun(opts, root, store, r);
      r.checkoutReadyMs.push(await checkoutReady(root));
      opts.log(
        `store-size ${size} run ${i + 1}/${opts.runs}: ready ${fmt(r.readyMs[i]!, 0)} ms (CPU ${fmt(r.readyCpuMs[i]!, 0)} ms), first blob ${fmt(r.firstBlobMs[i]!, 0)} ms, RSS ${fmt(r.rssReady[i]! / MiB, 0)} → ${fmt(r.rssLoaded[i]! / MiB, 0)} MiB, ` +
          KINDS.map((k) => `${k} p99 ${fmt(r.latency[k]!.p99[i]!, 1)}`).join(', '),
      );
    }
    rmSync(root, { recursive: true, force: true });
    results.push(r);
  }
  return report(results, opts);
}

/**
 * Wall time of the CLI, and (when `cpu` is given) the CPU time it used (user + system, from
 * /usr/bin/time): on a shared machine the wall time depends on what else runs, the CPU time much less.
 */
function timeCliRun(bin: string, args: string[], cpu?: number[]): number {
  const run = timeCli(bin, args);
  cpu?.push(run.cpuMs);
  return run.wallMs;
}

/** Spawn → /readyz 200 of `hubcache serve` run from the sources through tsx (a checkout), then stopped. */
async function checkoutReady(root: string): Promise<number> {
  const port = await freePort();
  const t0 = performance.now();
  const server = spawnServe(['--import', 'tsx', join(HERE, '..', 'src', 'cli.ts')], root, { port, cwd: join(HERE, '..') });
  try {
    return await untilReady(server.child, () => readyzStatus(`http://127.0.0.1:${port}/readyz`), t0, server.stderr);
  } finally {
    await server.stop();
  }
}

async function serveRun(opts: StoreSizeOptions, root: string, store: SyntheticStore, r: SizeResult): Promise<void> {
  const [port, metricsPort] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${port}`;
  const metricsUrl = `http://127.0.0.1:${metricsPort}`;
  const agent = new Agent({ connections: 1, pipelining: 1, keepAliveTimeout: 30_000 });
  const t0 = performance.now();
  const server = spawnServe([opts.bin], root, { port, metricsPort });
  const { child } = server;
  try {
    const get = async (path: string, method: 'GET' | 'HEAD' = 'GET', base = url) => {
      const res = await request(`${base}${path}`, { method, dispatcher: agent });
      await res.body.dump({ limit: Number.MAX_SAFE_INTEGER });
      return res.statusCode;
    };
    // Until it listens the port refuses connections: poll.
    r.readyMs.push(await untilReady(child, () => get('/readyz').catch(() => undefined), t0, server.stderr));
    r.readyCpuMs.push(cpuMs(child.pid!));
    const first = store.images[0]!;
    const blobPath = (d: string, repo: string) => `/v2/${repo}/blobs/${d}`;
    if ((await get(blobPath(first.blobs[0]!, first.repository))) !== 200) throw new Error('first blob GET failed');
    r.firstBlobMs.push(performance.now() - t0);
    r.rssReady.push(readRss(child.pid!)!.rssBytes);
    // The store's usage is counted in the background after start (a walk of every blob): the load
    // runs once it is done, so every size is measured in the steady state.
    for (;;) {
      const text = await (await request(`${metricsUrl}/metrics`, { dispatcher: agent })).body.text();
      if (/^hubcache_store_objects \d/m.test(text)) break;
      await new Promise((res) => setTimeout(res, 20));
      if (performance.now() - t0 > 120_000) throw new Error('the store was not counted within 120 s');
    }
    r.countedMs.push(performance.now() - t0);

    // Deterministic random picks over the whole store, the same for every run of a size.
    let seed = 42;
    const pick = <T>(xs: readonly T[]): T => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return xs[seed % xs.length]!;
    };
    const timed: Record<string, number[]> = Object.fromEntries(KINDS.map((k) => [k, []]));
    const measure = async (kind: string, path: string, method: 'GET' | 'HEAD' = 'GET', base = url) => {
      const s = performance.now();
      const status = await get(path, method, base);
      timed[kind]!.push(performance.now() - s);
      if (status !== 200) throw new Error(`${method} ${path}: ${status}`);
    };
    for (let i = 0; i < opts.requests; i++) {
      const img = pick(store.images);
      const blob = pick(img.blobs);
      await measure('HEAD blob', blobPath(blob, img.repository), 'HEAD');
      await measure('GET blob', blobPath(pick(pick(store.images).blobs), img.repository));
      await measure('GET manifest by digest', `/v2/${img.repository}/manifests/${img.manifest}`);
      const tagged = pick(store.images);
      await measure('GET tag (within TTL)', `/v2/${tagged.repository}/manifests/${pick(tagged.tags)}`);
      if (i % 10 === 0) await measure('GET /metrics', '/metrics', 'GET', metricsUrl);
    }
    for (const k of KINDS) {
      const xs = timed[k]!.sort((a, b) => a - b);
      r.latency[k]!.p50.push(xs[Math.floor(xs.length * 0.5)]!);
      r.latency[k]!.p99.push(xs[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))]!);
    }
    r.rssLoaded.push(readRss(child.pid!)!.rssBytes);
    const text = await (await request(`${metricsUrl}/metrics`, { dispatcher: agent })).body.text();
    r.upstreamRequests += metricValue(text, 'hubcache_upstream_requests_total');
  } finally {
    await agent.close();
    await server.stop();
  }
}

function report(results: SizeResult[], opts: StoreSizeOptions): StoreSizeReport {
  const k = (n: number) => (n >= 1000 ? `${n / 1000}k` : String(n));
  const head = ['metric (median)', ...results.map((r) => `${k(r.blobs)} blobs`), 'target', 'result'];
  const rows: string[][] = [];
  let pass = true;
  const first = results[0]!;
  const last = results.at(-1)!;
  const row = (metric: string, values: string[], target: string, ok: boolean | undefined) => {
    if (ok === false) pass = false;
    rows.push([metric, ...values, target, ok === undefined ? 'info' : ok ? 'PASS' : 'FAIL']);
  };
  const ms = (xs: number[]) => `${fmt(median(xs), 0)} ms`;
  const s = (xs: number[]) => `${fmt(median(xs) / 1000, 2)} s`;
  row('store: manifests / tags', results.map((r) => `${r.manifests} / ${r.tags}`), '', undefined);
  row('start-to-ready (spawn → /readyz 200)', results.map((r) => ms(r.readyMs)), '< 1 s at the largest, flat', median(last.readyMs) < 1000 && median(last.readyMs) <= 1.5 * median(first.readyMs));
  row('… CPU (user + sys) used by then', results.map((r) => ms(r.readyCpuMs)), '(info: the load-independent figure)', undefined);
  row('reference: spawn → exit of `hubcache --version`', results.map((r) => ms(r.versionMs)), '(info: Node + module load)', undefined);
  row('start-to-ready from a checkout (tsx src/cli.ts)', results.map((r) => ms(r.checkoutReadyMs)), '(info: compiled on the fly)', undefined);
  row('spawn → first cached blob 200', results.map((r) => ms(r.firstBlobMs)), '(info)', undefined);
  row('spawn → store usage counted (background)', results.map((r) => ms(r.countedMs)), '(info)', undefined);
  row('RSS once ready', results.map((r) => `${fmt(median(r.rssReady) / MiB, 0)} MiB`), '(info)', undefined);
  row('RSS after the load', results.map((r) => `${fmt(median(r.rssLoaded) / MiB, 0)} MiB`), '< 150 MB', median(last.rssLoaded) < 150e6 && Math.max(...last.rssReady) < 150e6);
  for (const kind of KINDS) {
    const p99 = (r: SizeResult) => median(r.latency[kind]!.p99);
    row(
      `${kind}: p50 / p99`,
      results.map((r) => `${fmt(median(r.latency[kind]!.p50), 2)} / ${fmt(p99(r), 2)} ms`),
      `p99 ≤ 1.5 × ${k(first.blobs)} (${fmt(p99(last) / p99(first), 2)}×)`,
      p99(last) <= 1.5 * p99(first),
    );
  }
  row('hubcache ls (CLI, table): wall (CPU)', results.map((r) => `${s(r.lsMs)} (${s(r.lsCpuMs)})`), '≤ 5 s', median(last.lsMs) <= 5000);
  row('hubcache du (CLI, table): wall (CPU)', results.map((r) => `${s(r.duMs)} (${s(r.duCpuMs)})`), '≤ 5 s', median(last.duMs) <= 5000);
  row('upstream requests during the loads', results.map((r) => String(r.upstreamRequests)), '= 0', results.every((r) => r.upstreamRequests === 0));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  const table = [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
  const c = cpus();
  const markdown = [
    SECTION_START,
    '## Store size (issue #13)',
    '',
    `Latest run: ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC. Machine: ${c.length} × ${c[0]?.model.trim() ?? 'cpu'}, ${fmt(totalmem() / GiB, 0)} GiB RAM, Linux ${release()}, Node ${process.version}. Load average at the end: ${readFileSync('/proc/loadavg', 'utf8').trim()}.`,
    `Synthetic stores in the real layout (1 KiB blobs; a quarter as many manifests; as many tags as blobs, 1000 per repository), warm page cache, the shipped build (\`npm run build\`: the esbuild bundle, run by bin/hubcache.js). Medians of ${opts.runs} starts with a load of ${opts.requests} requests of each kind (one at a time, keep-alive; /metrics every tenth round), and of ${opts.cliRuns} runs of ls and du.`,
    '',
    table,
    '',
    'How each number is measured: see the header of bench/store-size.ts.',
    SECTION_END,
  ].join('\n');
  return { results, markdown, pass };
}

/** RESULTS.md with its store-size section replaced by `section` (appended when there is none). */
export function withSection(text: string, section: string): string {
  const start = text.indexOf(SECTION_START);
  const end = text.indexOf(SECTION_END);
  if (start < 0 || end < start) return `${text.trimEnd()}\n\n${section}\n`;
  return `${text.slice(0, start)}${section}${text.slice(end + SECTION_END.length)}`;
}

/** The store-size section of an existing RESULTS.md, or undefined. */
export function sectionOf(text: string): string | undefined {
  const start = text.indexOf(SECTION_START);
  const end = text.indexOf(SECTION_END);
  return start >= 0 && end > start ? text.slice(start, end + SECTION_END.length) : undefined;
}

export function storeSizeOptionsFromEnv(bin: string, scratch: string, log: (msg: string) => void): StoreSizeOptions {
  return {
    bin,
    scratch,
    sizes: (process.env.BENCH_STORE_SIZES ?? '1000,10000,100000').split(',').map(Number),
    runs: Number(process.env.BENCH_RUNS ?? 5),
    cliRuns: Number(process.env.BENCH_STORE_CLI_RUNS ?? 3),
    requests: Number(process.env.BENCH_STORE_REQUESTS ?? 1000),
    log,
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
  const scratch = mkdtempSync(join(tmpdir(), 'hubcache-bench-store-'));
  try {
    const bin = buildHubcache(scratch, log);
    const out = await benchStoreSize(storeSizeOptionsFromEnv(bin, scratch, log));
    process.stdout.write(`\n${out.markdown}\n`);
    const file = join(HERE, 'RESULTS.md');
    writeFileSync(file, withSection(readFileSync(file, 'utf8'), out.markdown));
    writeFileSync(join(HERE, 'results-store-size.json'), `${JSON.stringify(out.results, null, 2)}\n`);
    process.exitCode = out.pass ? 0 : 1;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
