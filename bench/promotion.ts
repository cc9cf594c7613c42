/**
 * What each kind of request leaves in V8's old generation (issue #13: RSS after a load): for each
 * build of the CLI given, `hubcache serve` on one synthetic store with `--trace-gc-nvp`; once ready,
 * the store counted and BENCH_IDLE_MS (2000) of quiet for the background checks, BENCH_REQUESTS
 * (1000) requests of one kind, one at a time on one keep-alive connection, summing the bytes the
 * young generation's collections promoted meanwhile. Kinds (BENCH_KINDS): head (HEAD of a stored
 * blob: undici closes the connection after a HEAD), get (GET of one), manifest (GET by digest),
 * tag (GET of a tag within its TTL), metrics (GET /metrics), all (the rss-ab.ts load: the four, and
 * /metrics every 10th round). One server per kind and build, builds alternating.
 *
 * A request's objects die when it ends: a healthy server promotes next to nothing per request. What
 * outlives the young generation is garbage the old generation holds until its next full collection,
 * and the heap grows to hold it (docs/architecture.md, "Memory under load"). Promotion is a count,
 * not a timing: it is stable on a busy machine.
 *
 *   tsx bench/promotion.ts A_CLI [B_CLI…]     e.g. /tmp/main-build/bin/hubcache.js
 *   BENCH_STORE_BLOBS=100000 BENCH_REQUESTS=1000 BENCH_KINDS=get,all BENCH_NODE_ARGS='…'
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { writeSyntheticStore } from '../src/storage/fs/testing/synthetic-store.js';
import { readRss } from './rss-sampler.js';
import { spawnServe, untilReady } from './start-ab.js';
import { fmt, MiB } from './stats.js';
import { freePort } from '../test/support/distribution.js';

const KINDS = ['head', 'get', 'manifest', 'tag', 'metrics', 'all'] as const;
type Kind = (typeof KINDS)[number];
const env = (name: string, fallback: number) => Number(process.env[name] ?? fallback);

interface Run {
  promotedBytes: number;
  scavenges: number;
  markCompacts: number;
  rssBefore: number;
  rssAfter: number;
}

async function measure(bin: string, root: string, store: ReturnType<typeof writeSyntheticStore>, kind: Kind, requests: number): Promise<Run> {
  const [port, metricsPort] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${port}`;
  const metricsUrl = `http://127.0.0.1:${metricsPort}`;
  const agent = new Agent({ connections: 1, pipelining: 1, keepAliveTimeout: 30_000 });
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const t0 = performance.now();
  const server = spawnServe(['--trace-gc-nvp', ...nodeArgs, bin], root, { port, metricsPort, stdout: 'pipe' });
  const run: Run = { promotedBytes: 0, scavenges: 0, markCompacts: 0, rssBefore: 0, rssAfter: 0 };
  let counting = false;
  let partial = '';
  server.child.stdout!.on('data', (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop()!;
    if (!counting) return;
    for (const line of lines) {
      const promoted = /\bpromoted=(\d+)/.exec(line);
      const gc = /\bgc=(\w+)/.exec(line);
      if (promoted) run.promotedBytes += Number(promoted[1]);
      if (gc?.[1] === 's') run.scavenges++;
      else if (gc) run.markCompacts++;
    }
  });
  try {
    const get = async (path: string, method: 'GET' | 'HEAD' = 'GET', base = url) => {
      const res = await request(`${base}${path}`, { method, dispatcher: agent });
      await res.body.dump({ limit: Number.MAX_SAFE_INTEGER });
      return res.statusCode;
    };
    const must = async (path: string, method: 'GET' | 'HEAD' = 'GET', base = url) => {
      const status = await get(path, method, base);
      if (status !== 200) throw new Error(`${method} ${path}: ${status}`);
    };
    await untilReady(server.child, () => get('/readyz').catch(() => undefined), t0, server.stderr);
    for (;;) {
      const text = await (await request(`${metricsUrl}/metrics`, { dispatcher: agent })).body.text();
      if (/^hubcache_store_objects \d/m.test(text)) break;
      await new Promise((res) => setTimeout(res, 20));
      if (performance.now() - t0 > 120_000) throw new Error('the store was not counted within 120 s');
    }
    await new Promise((res) => setTimeout(res, env('BENCH_IDLE_MS', 2000)));
    // The same deterministic picks as bench/store-size.ts and rss-ab.ts.
    let seed = 42;
    const pick = <T>(xs: readonly T[]): T => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return xs[seed % xs.length]!;
    };
    run.rssBefore = readRss(server.child.pid!)!.rssBytes;
    counting = true;
    for (let i = 0; i < requests; i++) {
      const img = pick(store.images);
      if (kind === 'head' || kind === 'all') await must(`/v2/${img.repository}/blobs/${pick(img.blobs)}`, 'HEAD');
      if (kind === 'get' || kind === 'all') await must(`/v2/${img.repository}/blobs/${pick(pick(store.images).blobs)}`);
      if (kind === 'manifest' || kind === 'all') await must(`/v2/${img.repository}/manifests/${img.manifest}`);
      if (kind === 'tag' || kind === 'all') {
        const tagged = pick(store.images);
        await must(`/v2/${tagged.repository}/manifests/${pick(tagged.tags)}`);
      }
      if (kind === 'metrics' || (kind === 'all' && i % 10 === 0)) await must('/metrics', 'GET', metricsUrl);
    }
    run.rssAfter = readRss(server.child.pid!)!.rssBytes;
    // The trace line of a collection during the last requests is printed when it ends: wait for it.
    await new Promise((res) => setTimeout(res, 200));
    counting = false;
    return run;
  } finally {
    await agent.close();
    await server.stop();
  }
}

async function main(): Promise<void> {
  const bins = process.argv.slice(2);
  if (bins.length === 0) throw new Error('usage: tsx bench/promotion.ts CLI [CLI…] (a build\'s bin/hubcache.js)');
  const kinds = (process.env.BENCH_KINDS ?? KINDS.join(',')).split(',') as Kind[];
  for (const k of kinds) if (!KINDS.includes(k)) throw new Error(`BENCH_KINDS: unknown kind ${k} (${KINDS.join(', ')})`);
  const requests = env('BENCH_REQUESTS', 1000);
  const blobs = env('BENCH_STORE_BLOBS', 100_000);
  const scratch = mkdtempSync(join(tmpdir(), 'hubcache-promotion-'));
  try {
    const root = join(scratch, 'store');
    const store = writeSyntheticStore({ root, blobs, validatedAt: Date.now() });
    console.log(`| kind | build | promoted per request | scavenges | full GCs | RSS before → after |`);
    console.log(`|---|---|---|---|---|---|`);
    for (const [k, kind] of kinds.entries()) {
      // Builds alternate which goes first, kind by kind.
      const order = k % 2 === 0 ? bins : [...bins].reverse();
      for (const bin of order) {
        const r = await measure(bin, root, store, kind, requests);
        console.log(`| ${kind} | ${bin} | ${fmt(r.promotedBytes / requests / 1024, 1)} KiB | ${r.scavenges} | ${r.markCompacts} | ${fmt(r.rssBefore / MiB, 0)} → ${fmt(r.rssAfter / MiB, 0)} MiB |`);
      }
    }
    console.log(`\n${blobs} blobs, ${requests} requests per kind and build.`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
