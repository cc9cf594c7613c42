/**
 * `tsx bench/tag-list.ts`: issue #11 point 10's figures. An upstream repository with a huge tag
 * list (BENCH_TAGS, default 1.5 M; served in one document in reverse order, ignoring n and last as
 * distribution 2.8 does, by bench/tag-list-upstream.ts in its own process), BENCH_TAG_CLIENTS
 * (default 8) concurrent `?n=10` requests through a hubcache process, while one client polls
 * `/v2/` back to back: upstream tag-list GETs, hubcache's
 * peak RSS (VmHWM) and the `/v2/` latency everyone else sees. Then the same burst again (a cached
 * list, when hubcache keeps one). Tags are `t` + 7 digits, 11 bytes each in the JSON (16.5 MB for
 * 1.5 M), under the 16 MiB cap the old code had, so that old and new code can both be measured.
 *
 * BENCH_HUBCACHE_BIN runs another build's CLI (e.g. a checkout of the old code); BENCH_CONFIG
 * passes a config file to it.
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { startHubcacheProcess } from '../test/support/hubcache-process.js';
import { RssSampler } from './rss-sampler.js';
import { fmt, max, median, MiB } from './stats.js';

const TAGS = Number(process.env.BENCH_TAGS ?? 1_500_000);
const CLIENTS = Number(process.env.BENCH_TAG_CLIENTS ?? 8);
const REPO = 'huge/app';

interface Burst {
  wallMs: number;
  statuses: number[];
  firstTags: string[];
  v2: number[];
}

/** `CLIENTS` concurrent `?n=10` GETs; `/v2/` polled back to back until they are all answered. */
async function burst(url: string): Promise<Burst> {
  const started = performance.now();
  let done = false;
  const lists = Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      const r = await fetch(`${url}/v2/${REPO}/tags/list?n=10`);
      const body = (await r.json()) as { tags?: string[] };
      return { status: r.status, tags: body.tags ?? [] };
    }),
  ).finally(() => (done = true));
  const v2: number[] = [];
  while (!done && !process.env.BENCH_NO_V2) {
    const t = performance.now();
    await (await fetch(`${url}/v2/`)).arrayBuffer();
    v2.push(performance.now() - t);
  }
  const results = await lists;
  if (v2.length === 0) v2.push(Number.NaN);
  return { wallMs: performance.now() - started, statuses: results.map((r) => r.status), firstTags: results[0]!.tags.slice(0, 3), v2 };
}

const upstream = fork(fileURLToPath(new URL('./tag-list-upstream.ts', import.meta.url)), { execArgv: ['--import', 'tsx'], env: { ...process.env, BENCH_TAGS: String(TAGS) } });
let tagListGets = 0;
upstream.on('message', (m: { tagListGet?: boolean }) => void (m.tagListGet && tagListGets++));
const [{ port }] = (await once(upstream, 'message')) as [{ port: number }];
const hc = await startHubcacheProcess({
  upstreamUrl: `http://127.0.0.1:${port}`,
  ...(process.env.BENCH_HUBCACHE_BIN ? { bin: process.env.BENCH_HUBCACHE_BIN } : {}),
  ...(process.env.BENCH_CONFIG ? { config: process.env.BENCH_CONFIG } : {}),
});
try {
  const rss = new RssSampler(hc.child.pid!, 20);
  const rounds: Array<Burst & { upstreamGets: number }> = [];
  for (let round = 0; round < 2; round++) {
    const before = tagListGets;
    rounds.push({ ...(await burst(hc.url)), upstreamGets: tagListGets - before });
  }
  const mem = rss.stop();
  if (process.env.BENCH_RSS_TIMELINE) for (const x of rss.samples.filter((_, i) => i % 10 === 0)) console.log(`  t=${x.t} ms rss ${fmt(x.rssBytes / MiB, 0)} MiB`);
  console.log(`${TAGS} tags, ${CLIENTS} concurrent ?n=10 requests, twice`);
  for (const [i, r] of rounds.entries()) {
    console.log(
      `round ${i + 1}: upstream tag-list GETs ${r.upstreamGets}; statuses ${[...new Set(r.statuses)].join(',')}; first tags ${JSON.stringify(r.firstTags)}; ` +
        `wall ${fmt(r.wallMs / 1000)} s; /v2/ latency during it: ${r.v2.length} requests, median ${fmt(median(r.v2), 1)} ms, max ${fmt(max(r.v2), 1)} ms`,
    );
  }
  console.log(`hubcache RSS: start ${fmt(mem.startRssBytes / MiB, 0)} MiB, peak sampled ${fmt(mem.peakRssBytes / MiB, 0)} MiB, VmHWM ${fmt(mem.hwmBytes / MiB, 0)} MiB`);
} finally {
  await hc.close();
  upstream.disconnect();
}
