/**
 * Pins (issue #13): what keeping images pinned costs, in the light in-process tier (memory stores,
 * FakeRegistry on loopback; test/support/app-harness.ts).
 *
 *   1. `PinSet.protects` (the evictor's isProtected) with every digest of N pinned images protected:
 *      ns per lookup, half hits, half misses ÷ a bare `Set.has` over the same digests.
 *   2. A refresh round with every pinned tag within its TTL (what most rounds are: no upstream
 *      request) ÷ one client pulling the same images (every manifest and blob, HEAD for blobs) as
 *      hits over HTTP; and a round after the TTL (one HEAD per pinned tag).
 *
 * Sides alternate (A,B,A,B,…); medians of BENCH_RUNS runs (default 7) and of the per-pair ratios.
 *   tsx bench/pins.ts [images]           default 50 (each a 2-platform index, 2 layers a platform)
 */
import { PinSet } from '../src/cache/pins.js';
import type { Digest } from '../src/domain/digest.js';
import { startApp } from '../test/support/app-harness.js';
import { putIndex } from '../test/support/oci-fixtures.js';
import { fmt, median, ratios } from './stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const IMAGES = Number(process.argv[2] ?? 50);
const TTL = 10 * 60_000;

const hc = await startApp({ tagTtlMs: TTL });
try {
  const indexes = Array.from({ length: IMAGES }, (_, i) => putIndex(hc.registry, `bench/img${i}`, 'v1', { seed: `bench-pin-${i}` }));
  const pins = new PinSet({
    pins: indexes.map((_, i) => `bench/img${i}:v1`),
    source: hc.cache,
    manifests: hc.stores.manifests,
    metadata: hc.stores.metadata,
    tagTtls: new Map([['docker.io', TTL]]),
    concurrency: 2,
    logger: hc.logger,
    metrics: hc.metrics,
  });
  const t0 = performance.now();
  const first = await pins.refresh();
  const coldMs = performance.now() - t0;
  process.stdout.write(`first round (everything fetched): ${IMAGES} images, ${pins.protectedCount} digests, ${fmt(coldMs, 0)} ms, results ${JSON.stringify(first.results)}\n`);

  // 1. protects() vs Set.has.
  const protectedDigests = indexes.flatMap((ix) => [ix.digest, ...ix.children.flatMap((c) => [c.digest, c.config.digest, ...c.layers.map((l) => l.digest)])]);
  const misses = protectedDigests.map((d) => `sha256:${'0'.repeat(8)}${d.slice(15)}` as Digest);
  const probe = protectedDigests.flatMap((d, i) => [d, misses[i]!]);
  const plain = new Set(protectedDigests);
  const LOOKUPS = 2_000_000;
  const time = (has: (d: Digest) => boolean) => {
    let hits = 0;
    const start = process.hrtime.bigint();
    for (let i = 0; i < LOOKUPS; i++) if (has(probe[i % probe.length]!)) hits++;
    const ns = Number(process.hrtime.bigint() - start) / LOOKUPS;
    if (hits !== LOOKUPS / 2) throw new Error(`expected half hits, got ${hits}`);
    return ns;
  };
  const a: number[] = [];
  const b: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    a.push(time(pins.protects));
    b.push(time((d) => plain.has(d)));
  }
  process.stdout.write(`protects(): ${fmt(median(a), 1)} ns/lookup; Set.has ${fmt(median(b), 1)} ns; ratio ${fmt(median(ratios(a, b)))} (median of ${RUNS})\n`);

  // 2. Refresh rounds vs a client pulling the same images as hits.
  const pullAll = async () => {
    for (const [i, ix] of indexes.entries()) {
      await hc.pull(`/v2/bench/img${i}/manifests/v1`);
      for (const c of ix.children) {
        await hc.pull(`/v2/bench/img${i}/manifests/${c.digest}`);
        for (const blob of [c.config, ...c.layers]) await hc.pull(`/v2/bench/img${i}/blobs/${blob.digest}`, { method: 'HEAD' });
      }
    }
  };
  const rounds: number[] = [];
  const clients: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    let t = performance.now();
    const fresh = await pins.refresh();
    rounds.push(performance.now() - t);
    if (fresh.results.fresh !== IMAGES) throw new Error(`not all fresh: ${JSON.stringify(fresh.results)}`);
    t = performance.now();
    await pullAll();
    clients.push(performance.now() - t);
  }
  process.stdout.write(`fresh round: ${fmt(median(rounds), 1)} ms for ${IMAGES} images (0 upstream requests); a client pulling them as hits: ${fmt(median(clients), 1)} ms; ratio ${fmt(median(ratios(rounds, clients)))}\n`);
  const expired: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    hc.clock.advance(TTL + 1);
    const before = hc.upstreamServer.requests.length;
    const t = performance.now();
    await pins.refresh();
    expired.push(performance.now() - t);
    const asked = hc.upstreamServer.requests.length - before;
    if (asked !== IMAGES) throw new Error(`expected ${IMAGES} HEADs, saw ${asked} upstream requests`);
  }
  process.stdout.write(`round after the TTL: ${fmt(median(expired), 1)} ms (${IMAGES} HEADs upstream, pinConcurrency 2); ratio to the fresh round ${fmt(median(ratios(expired, rounds)))}\n`);
} finally {
  await hc.close();
}
