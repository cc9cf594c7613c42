/**
 * Several replicas as real processes (issue #15, "Figures"): one Ceph RGW (test/support/rgw.ts,
 * memstore), one redis-server, the token-auth upstream of test/support (distribution behind the
 * recording front, whose `setLink` paces every connection to the first link of BENCH_LINKS) and
 * three compiled `hubcache serve` processes on one bucket (test/support/replicas.ts), curl and
 * skopeo as clients (their own processes):
 *
 *   a. 20 concurrent cold GETs of one blob spread round robin over the 3 → upstream blob GETs with
 *      a body (target exactly 1), slowest ÷ one client alone on a replica (a fresh blob each,
 *      curl to /dev/null, median of the per-run ratios; target ≤ 1.5 at the first link of
 *      REPLICAS_A_LINKS, 30 ms / 20 MB/s by default; measured for information at the others, by
 *      default the bench's link: at 50 MB/s a 3-replica round's CPU — replicas, RGW, twenty curls,
 *      this process pacing the link — keeps both cores busy for ~1.7× the lone client's time, which
 *      the row shows as "the round's CPU … takes N× the lone client"); then one more untimed
 *      round of 20 with every body's sha256 checked (curl | sha256sum: hashing 20 bodies at once
 *      would cost the two cores more than the fan-out under test). Each run has three sides in a
 *      rotating order: alone, the 3-replica round, and the floor — the same 20 GETs all on ONE
 *      replica (the one-process fan-out over the same bucket, link and blob), which tells what
 *      the replication costs from what the two cores cost. Before the timed runs, REPLICAS_WARMUP
 *      (default 1) untimed rounds of every side, reported apart: replicas run warm in production,
 *      and a cold process's first relay and follow (JIT, connection pools) cost the 3-replica
 *      round more than the one-client side. Each round's CPU time (user+sys) is read from /proc
 *      for every process (the replicas, RGW, redis, the upstream registry, this process — whose
 *      front paces the link — and the reaped curls). REPLICAS_REF_BIN=<cli.js of another build>
 *      adds that build's three replicas on the same bucket and Redis (own prefixes), measured
 *      alternating with this build's: a same-run A/B;
 *   b. 10 concurrent skopeo pulls of a ~100 MB image spread over the 3 → upstream bytes ÷ image size
 *      (target 1.0×) and upstream manifest GETs (target 1);
 *   c. warm 1 GiB blob from one replica: S3 only ÷ the filesystem driver (a fourth, single hubcache
 *      on a local directory), and a replica with storage.hotCache ÷ the filesystem driver; the
 *      three sides alternate, median of the per-round ratios;
 *   d. `kill -9` of the replica filling the biggest layer during 20 concurrent cold pulls (manifest,
 *      config, layers, each by curl | sha256sum; a failed or wrong request retried on the next
 *      replica): pulls completed, retries, pull times, and every object under blobs/ in the bucket
 *      hashed against its key. Last: the killed replica stays down.
 *
 * Bounded: every step has its own timeout, and the whole bench stops itself after
 * REPLICAS_DEADLINE_MIN (default 15) minutes, cleaning up what it started.
 *
 *   tsx bench/replicas.ts   (writes only its section of bench/RESULTS.md; also `npm run bench`, BENCH_ONLY=replicas)
 *   env: BENCH_RUNS (5), BENCH_LINKS ('30:50,…': the first is used), REPLICAS_A_LINKS ('30:20,<that one>'),
 *   REPLICAS_BLOB_MIB (64),
 *   REPLICAS_CLIENTS (20), REPLICAS_PULLS (10), REPLICAS_LAYER_MIB (20, × 5 layers),
 *   REPLICAS_WARM_MIB (1024), REPLICAS_WARM_RUNS (3), REPLICAS_KILL_LAYER_MIB (32, × 2 layers),
 *   REPLICAS_ONLY ('concurrent,skopeo,warm,kill'), REPLICAS_WARMUP (1), REPLICAS_FLOOR (1; 0: no
 *   floor side), REPLICAS_REF_BIN, REPLICAS_BIN (a prebuilt CLI instead of building this checkout),
 *   REPLICAS_CPU_PROF (a directory: every replica runs with --cpu-prof), BENCH_NODE_ARGS
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GetObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { startHubcacheProcess, type HubcacheProcess } from '../test/support/hubcache-process.js';
import { digestOf, makeImage, type TestImage } from '../test/support/images.js';
import { startRedis, type RedisServer } from '../test/support/redis.js';
import { startReplica, startReplicas, type ReplicaOptions } from '../test/support/replicas.js';
import { startRgw, type Rgw } from '../test/support/rgw.js';
import { skopeoCopy } from '../test/support/skopeo.js';
import type { LinkShape, UpstreamRequest } from '../test/support/upstream-front.js';
import { startUpstream, type Upstream } from '../test/support/upstream-harness.js';
import { buildHubcache } from './build.js';
import { curlGet, curlHash, type HashedTransfer } from './curl-client.js';
import type { EvictionRow } from './eviction.js';
import { seededBlob } from './seeded-blob.js';
import { fmt, max, mbps, median, MiB, ratios } from './stats.js';

const env = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const RUNS = env('BENCH_RUNS', 5);
const parseLink = (spec: string): LinkShape => {
  const [ms, mbs] = spec.split(':').map(Number);
  return { latencyMs: ms!, bytesPerSecond: mbs! * 1e6 };
};
const LINK: LinkShape = parseLink((process.env.BENCH_LINKS ?? '30:50').split(',')[0]!);
/**
 * The links figure a runs at, each its own rows: 30 ms / 20 MB/s (a far upstream's share per
 * connection, where the target applies) and the bench's link (BENCH_LINKS' first: 50 MB/s), where
 * on two cores the round is bound by its CPU (the rows say by how much).
 */
const A_LINKS: LinkShape[] = (process.env.REPLICAS_A_LINKS ?? `30:20,${(process.env.BENCH_LINKS ?? '30:50').split(',')[0]!}`)
  .split(',')
  .filter((spec, i, all) => all.indexOf(spec) === i)
  .map(parseLink);
/** The link whose figure a is held to ≤ 1.5 (the first of A_LINKS); the others are measured for information. */
const TARGET_LINK = A_LINKS[0]!;
const CORES = availableParallelism();
const BLOB = env('REPLICAS_BLOB_MIB', 64) * MiB;
const CLIENTS = env('REPLICAS_CLIENTS', 20);
const PULLS = env('REPLICAS_PULLS', 10);
const LAYER = env('REPLICAS_LAYER_MIB', 20) * MiB;
const WARM = env('REPLICAS_WARM_MIB', 1024) * MiB;
const WARM_RUNS = env('REPLICAS_WARM_RUNS', 3);
const KILL_LAYER = env('REPLICAS_KILL_LAYER_MIB', 32) * MiB;
const ONLY = new Set((process.env.REPLICAS_ONLY ?? 'concurrent,skopeo,warm,kill').split(','));
const DEADLINE_MS = env('REPLICAS_DEADLINE_MIN', 15) * 60_000;
const REPLICAS = 3;
const PREFIX = 'bench/';
/** REPLICAS_REF_BIN: a reference build's CLI (e.g. main's, compiled elsewhere): its own 3 replicas, measured alternating in a. */
const REF_BIN = process.env.REPLICAS_REF_BIN;
/** REPLICAS_FLOOR=0: no floor side (the same 20 GETs on one replica) in a. */
const FLOOR = process.env.REPLICAS_FLOOR !== '0';
/** REPLICAS_WARMUP: untimed rounds of every side before the timed ones (reported apart; 0: none). */
const WARMUP = env('REPLICAS_WARMUP', 1);
/** REPLICAS_CPU_PROF=dir: every replica runs with --cpu-prof and writes its profile there when stopped. */
const CPU_PROF = process.env.REPLICAS_CPU_PROF;
/** BENCH_NODE_ARGS="--flag …": node flags for every replica (e.g. --perf-basic-prof for `perf record`). */
const NODE_ARGS = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);

/** The header of this bench's section of bench/RESULTS.md (bench/run.ts replaces the section). */
export const REPLICAS_SECTION = '## Several replicas as real processes (bench/replicas.ts, issue #15)';

export interface ReplicasBenchResult {
  readonly rows: EvictionRow[];
  readonly results: Record<string, unknown>;
  /** The RESULTS.md section: REPLICAS_SECTION, the table of rows and the run's conditions. */
  readonly markdown: string;
}

const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const bodyGets = (reqs: UpstreamRequest[], digest?: string) =>
  reqs.filter((r) => r.method === 'GET' && (r.status === 200 || r.status === 206) && (digest === undefined || r.digest === digest));

export async function benchReplicas(log: (msg: string) => void, opts: { bin?: string; scratch?: string } = {}): Promise<ReplicasBenchResult> {
  const started = Date.now();
  const scratch = mkdtempSync(join(opts.scratch ?? tmpdir(), 'hubcache-bench-replicas-'));
  const cleanups: Array<() => Promise<unknown> | unknown> = [() => rmSync(scratch, { recursive: true, force: true })];
  const cleanup = async () => {
    for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch((e: unknown) => log(`replicas: cleanup: ${String(e)}`));
  };
  let timedOut = false;
  const deadline = setTimeout(() => {
    timedOut = true;
    log(`replicas: deadline of ${DEADLINE_MS / 60_000} min reached: stopping everything`);
    void cleanup();
  }, DEADLINE_MS);
  const rows: EvictionRow[] = [];
  const results: Record<string, unknown> = { link: LINK };
  const loads: string[] = [];
  try {
    const bin = opts.bin ?? process.env.REPLICAS_BIN ?? buildHubcache(scratch, log);
    log('replicas: starting Ceph RGW, redis-server and the upstream');
    const [rgw, redis, up] = await Promise.all([startRgw(), startRedis(), startUpstream()]);
    cleanups.push(() => rgw.stop(), () => redis.close(), () => up.close());
    const bucket = await rgw.createBucket();
    const o: ReplicaOptions = { upstream: up, rgw, bucket, redisUrl: redis.url, prefix: PREFIX, scratch, bin, partSize: '16MiB', fillLeaseTtl: '2s', nodeArgs: [...NODE_ARGS, ...(CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${CPU_PROF}`] : [])] };
    const track = (hc: HubcacheProcess) => (cleanups.push(() => hc.close()), hc);
    const replicas = (await startReplicas(o, REPLICAS)).map(track);
    log(`replicas: ${REPLICAS} replicas up (${replicas.map((r) => r.host).join(', ')}), RGW started in ${fmt(rgw.startMs / 1000, 1)} s; link ${LINK.latencyMs} ms, ${fmt(LINK.bytesPerSecond! / 1e6, 0)} MB/s per connection; load ${load()}`);
    const ctx = { log, up, rgw, redis, bucket, replicas, o, rows, results, loads, track, scratch };
    if (ONLY.has('concurrent')) for (const link of A_LINKS) await concurrent(ctx, link);
    if (ONLY.has('skopeo')) await skopeoPulls(ctx);
    if (ONLY.has('warm')) await warm(ctx);
    if (ONLY.has('kill')) await kill(ctx);
  } finally {
    clearTimeout(deadline);
    await cleanup();
  }
  if (timedOut) throw new Error('replicas: deadline reached');
  const seconds = (Date.now() - started) / 1000;
  results.seconds = seconds;
  results.loads = loads;
  const markdown = section(rows, seconds, loads);
  return { rows, results, markdown };
}

interface Ctx {
  log(msg: string): void;
  up: Upstream;
  rgw: Rgw;
  redis: RedisServer;
  bucket: string;
  replicas: HubcacheProcess[];
  o: ReplicaOptions;
  rows: EvictionRow[];
  results: Record<string, unknown>;
  loads: string[];
  track(hc: HubcacheProcess): HubcacheProcess;
  scratch: string;
}

const linkName = (link: LinkShape = LINK) => `${link.latencyMs} ms, ${fmt(link.bytesPerSecond! / 1e6, 0)} MB/s per connection`;

// ---- a. 20 concurrent cold GETs ------------------------------------------------------------------

/** CPU time (user + sys, ms) so far of every long-lived child of this process by role, and of the reaped ones (curl). */
function cpuByRole(c: Ctx, clusters: Cluster[]): Map<string, number> {
  const tick = 10; // CLK_TCK 100
  const stat = (pid: number | string) => {
    try {
      const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      return { ppid: Number(f[1]), comm: s.slice(s.indexOf('(') + 1, s.lastIndexOf(')')), own: (Number(f[11]) + Number(f[12])) * tick, reaped: (Number(f[13]) + Number(f[14])) * tick };
    } catch {
      return undefined;
    }
  };
  const out = new Map<string, number>();
  const add = (k: string, v: number) => out.set(k, (out.get(k) ?? 0) + v);
  const replicaPids = new Map<number, string>();
  for (const cl of clusters) cl.replicas.forEach((r, i) => r.child.pid !== undefined && replicaPids.set(r.child.pid, `${cl.name} replica ${i}`));
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    const s = stat(pid);
    if (!s || s.ppid !== process.pid) continue;
    const role = replicaPids.get(Number(pid)) ?? (/radosgw|ceph/.test(s.comm) ? 'rgw' : /redis/.test(s.comm) ? 'redis' : /registry/.test(s.comm) ? 'upstream registry' : undefined);
    if (role) add(role, s.own);
  }
  const me = stat('self')!;
  add('bench (front, link pacing)', me.own);
  add('curl (reaped)', me.reaped);
  void c;
  return out;
}

const diff = (a: Map<string, number>, b: Map<string, number>) => new Map([...b].map(([k, v]) => [k, v - (a.get(k) ?? 0)]));

/**
 * A round's CPU by what each process does: the replicas of `cluster` summed and the busiest of them
 * (which replica fills rotates), the other cluster's idle replicas left out, the rest as is.
 */
function byFunction(spent: Map<string, number>, cluster: string): Map<string, number> {
  const mine = [...spent].filter(([k]) => k.startsWith(`${cluster} replica`)).map(([, v]) => v);
  const out = new Map<string, number>([
    ['replicas', mine.reduce((a, b) => a + b, 0)],
    ['busiest replica', max(mine)],
  ]);
  for (const [k, v] of spent) if (!/ replica \d+$/.test(k)) out.set(k, v);
  return out;
}

/** A round's CPU in all (ms), the busiest replica being counted in `replicas` already. */
const cpuTotal = (m: Map<string, number>) => [...m].reduce((a, [role, v]) => a + (role === 'busiest replica' ? 0 : v), 0);

interface Cluster {
  readonly name: string;
  readonly replicas: HubcacheProcess[];
}

type Side = 'alone' | 'many' | 'floor';
/** The reference build's replicas (REPLICAS_REF_BIN), started once for every link. */
let refReplicas: HubcacheProcess[] | undefined;

async function concurrent(c: Ctx, link: LinkShape): Promise<void> {
  const clusters: Cluster[] = [{ name: 'this build', replicas: c.replicas }];
  if (REF_BIN) {
    // The reference build (another checkout's compiled CLI): three more replicas on the same bucket
    // (their own prefix) and Redis (their own key prefix), measured alternating with this build's.
    if (!refReplicas) {
      refReplicas = await startReplicas({ ...c.o, bin: REF_BIN, prefix: 'ref/', args: ['--cluster-redis-key-prefix', 'ref:'], ...(c.o.nodeArgs ? { nodeArgs: c.o.nodeArgs } : {}) }, REPLICAS);
      for (const r of refReplicas) c.track(r);
      c.log(`replicas a. reference build ${REF_BIN}: ${refReplicas.map((r) => r.host).join(', ')}`);
    }
    clusters.push({ name: 'reference', replicas: refReplicas });
  }
  const sides: Side[] = FLOOR ? ['alone', 'many', 'floor'] : ['alone', 'many'];
  /** ms per cluster, side, run. */
  const ms = new Map<string, number[]>();
  const cpu = new Map<string, Map<string, number>[]>();
  const gets: number[] = [];
  const wrong: number[] = [];
  const warmups: string[] = [];
  const key = (cl: Cluster, s: Side) => `${cl.name}/${s}`;
  let seeded = 0;
  const blob = async () => {
    // Seeded per link too: a blob of an earlier link's rounds is stored already (warm, not cold).
    const b = await seededBlob(`replicas-conc-${link.latencyMs}-${link.bytesPerSecond}-${seeded++}`, BLOB);
    await c.up.client.pushBlob('bench/conc', b);
    return b;
  };
  const url = (cl: Cluster, r: number, digest: string) => `${cl.replicas[r % REPLICAS]!.url}/v2/bench/conc/blobs/${digest}`;
  /** One side's round on a fresh (cold) blob: the slowest client's time (ms). */
  const round = async (cl: Cluster, side: Side, i: number, digest: string) => {
    const n = side === 'alone' ? 1 : CLIENTS;
    c.up.front.reset();
    const before = cpuByRole(c, clusters);
    const ts = await Promise.all(Array.from({ length: n }, (_, k) => curlGet(url(cl, side === 'many' ? k : i, digest), { timeoutMs: 300_000 })));
    const spent = byFunction(diff(before, cpuByRole(c, clusters)), cl.name);
    for (const t of ts) if (t.bytes !== BLOB) throw new Error(`replicas: ${side}: ${t.bytes} of ${BLOB} bytes`);
    const g = bodyGets(c.up.front.filter({ kind: 'blob', digest })).length;
    if (side !== 'alone') gets.push(g);
    return { slowest: max(ts.map((t) => t.totalMs)), spent, gets: g };
  };
  c.up.front.setLink(link);
  try {
    for (let w = 0; w < WARMUP; w++) {
      // Untimed warm-up rounds (reported apart): every process's JIT and connection pools, as after any first pull.
      for (const cl of clusters) {
        const parts: string[] = [];
        const took = new Map<Side, number>();
        for (const side of sides) {
          c.up.front.setLink(undefined);
          const b = await blob();
          c.up.front.setLink(link);
          const r = await round(cl, side, w, b.digest);
          if (side !== 'alone') gets.pop();
          took.set(side, r.slowest);
          parts.push(`${side} ${fmt(r.slowest, 0)} ms`);
        }
        parts.push(`many ÷ alone ${fmt(took.get('many')! / took.get('alone')!, 2)}×`);
        warmups.push(`${cl.name}: ${parts.join(', ')}`);
        c.log(`replicas a. warm-up ${w + 1}/${WARMUP}, ${cl.name}: ${parts.join(', ')}; load ${load()}`);
      }
    }
    for (let i = 0; i < RUNS; i++) {
      // Every side's order rotates from run to run, and the clusters swap.
      const order: Array<[Cluster, Side]> = [];
      const cls = i % 2 === 0 ? clusters : [...clusters].reverse();
      const rot = sides.map((_, k) => sides[(k + i) % sides.length]!);
      for (const s of rot) for (const cl of cls) order.push([cl, s]);
      const parts: string[] = [];
      for (const [cl, side] of order) {
        c.up.front.setLink(undefined);
        const b = await blob();
        c.up.front.setLink(link);
        const r = await round(cl, side, i, b.digest);
        (ms.get(key(cl, side)) ?? ms.set(key(cl, side), []).get(key(cl, side))!).push(r.slowest);
        (cpu.get(key(cl, side)) ?? cpu.set(key(cl, side), []).get(key(cl, side))!).push(r.spent);
        parts.push(`${cl.name} ${side} ${fmt(r.slowest, 0)} ms${side === 'alone' ? '' : ` (GETs ${r.gets})`}`);
      }
      const ratioOf = (cl: Cluster, s: Side) => ms.get(key(cl, s))![i]! / ms.get(key(cl, 'alone'))![i]!;
      c.log(`replicas a. run ${i + 1}/${RUNS}: ${parts.join(', ')}; ${clusters.map((cl) => `${cl.name}: many ÷ alone ${fmt(ratioOf(cl, 'many'), 2)}×${FLOOR ? `, floor ÷ alone ${fmt(ratioOf(cl, 'floor'), 2)}×` : ''}`).join('; ')}; load ${load()}`);
      c.loads.push(`a${i + 1}: ${load()}`);
    }
    // Untimed: every body hashed.
    c.up.front.setLink(undefined);
    const pending = await blob();
    c.up.front.setLink(link);
    c.up.front.reset();
    const ts = await Promise.all(Array.from({ length: CLIENTS }, (_, k) => curlHash(url(clusters[0]!, k, pending.digest), { timeoutMs: 300_000 })));
    wrong.push(ts.filter((t) => t.digest !== pending.digest || t.bytes !== BLOB).length);
    gets.push(bodyGets(c.up.front.filter({ kind: 'blob', digest: pending.digest })).length);
    c.log(`replicas a. verification round: ${CLIENTS - wrong[0]!}/${CLIENTS} bodies with the right sha256, upstream GETs ${gets.at(-1)}; load ${load()}`);
  } finally {
    c.up.front.setLink(undefined);
  }
  // Followers that found no fill to follow at their peer and waited for its lease (the slow path).
  const peerWaits = clusters.map((cl) => cl.replicas.reduce((n, r) => n + r.logs.filter((l) => l.message === 'peer unavailable: waiting for its lease').length, 0));
  const mine = clusters[0]!;
  const r = ratios(ms.get(key(mine, 'many'))!, ms.get(key(mine, 'alone'))!);
  const cpuMedian = (k: string) => {
    const runs = cpu.get(k)!;
    const roles = [...new Set(runs.flatMap((m) => [...m.keys()]))];
    return Object.fromEntries(roles.map((role) => [role, median(runs.map((m) => m.get(role) ?? 0))]));
  };
  const cpuText = (k: string) => {
    const m = cpuMedian(k);
    // The median of the rounds' totals (as the row's median), not the sum of the roles' medians.
    const total = median(cpu.get(k)!.map(cpuTotal));
    return `${fmt(total / 1000, 2)} s in all: ${Object.entries(m).map(([role, v]) => `${role} ${fmt(v / 1000, 2)}`).join(', ')}`;
  };
  ((c.results.concurrent ??= {}) as Record<string, unknown>)[linkName(link)] = {
    blobBytes: BLOB,
    clients: CLIENTS,
    runs: RUNS,
    warmups,
    ms: Object.fromEntries(ms),
    cpuMedianMs: Object.fromEntries([...cpu.keys()].map((k) => [k, cpuMedian(k)])),
    ratio: r,
    upstreamGets: gets,
    wrongBodies: wrong,
    peerWaits,
  };
  const alone = ms.get(key(mine, 'alone'))!;
  const slowest = ms.get(key(mine, 'many'))!;
  const held = link === TARGET_LINK;
  // How long the 3-replica round's CPU (replicas, RGW, curls, the pacing front) takes on these cores at best, ÷ the lone client.
  const cpuBound = median(cpu.get(key(mine, 'many'))!.map(cpuTotal)) / CORES / median(alone);
  c.rows.push(
    { metric: `a. ${CLIENTS} concurrent cold GETs of one ${BLOB / MiB} MiB blob over ${REPLICAS} replicas (${linkName(link)}): upstream GETs`, median: median(gets), unit: '', target: '= 1', pass: gets.every((g) => g === 1), detail: `per round (${FLOOR ? '3 replicas and one replica alternating; ' : ''}the last: the verification round): ${gets.join(',')}` },
    { metric: `a'. … bodies with the right sha256 (an untimed round, curl piped to sha256sum)`, median: CLIENTS - median(wrong), unit: '', target: `= ${CLIENTS}`, pass: wrong.every((w) => w === 0), detail: `upstream GETs in that round: ${gets.at(-1)}` },
    {
      metric: `a". … slowest of ${CLIENTS} ÷ one client alone (${linkName(link)})`,
      median: median(r),
      unit: '×',
      target: held ? '≤ 1.5' : '(info)',
      pass: !held || median(r) <= 1.5,
      detail: `ms median: slowest ${fmt(median(slowest), 0)}, alone ${fmt(median(alone), 0)}; ${held ? '' : `the target is held at ${linkName(TARGET_LINK)}; `}the round's CPU on ${CORES} cores, perfectly shared, takes ${fmt(cpuBound, 2)}× the lone client; per run ${r.map((x) => fmt(x, 2)).join(' ')}${WARMUP ? `; after ${WARMUP} untimed warm-up round(s): ${warmups.join('; ')}` : '; no warm-up round'}; followers that waited for a lease: ${peerWaits[0]}`,
    },
  );
  if (FLOOR) {
    const f = ratios(ms.get(key(mine, 'floor'))!, alone);
    c.rows.push({ metric: `a‴. floor: the same ${CLIENTS} GETs all on ONE replica (alternating with a"), slowest ÷ alone`, median: median(f), unit: '×', target: '(info)', pass: true, detail: `ms median ${fmt(median(ms.get(key(mine, 'floor'))!), 0)}; per run ${f.map((x) => fmt(x, 2)).join(' ')}; 3 replicas ÷ one: ${fmt(median(ratios(slowest, ms.get(key(mine, 'floor'))!)), 2)}×` });
  }
  c.rows.push({ metric: `a⁗. CPU (user+sys) per round, median: 3 replicas / one replica / alone`, median: median(cpu.get(key(mine, 'many'))!.map(cpuTotal)) / 1000, unit: 's', target: '(info)', pass: true, detail: [key(mine, 'many'), ...(FLOOR ? [key(mine, 'floor')] : []), key(mine, 'alone')].map((k) => `${k.split('/')[1]}: ${cpuText(k)}`).join('; ') });
  if (REF_BIN) {
    const ref = clusters[1]!;
    const rr = ratios(ms.get(key(ref, 'many'))!, ms.get(key(ref, 'alone'))!);
    const ab = ratios(slowest, ms.get(key(ref, 'many'))!);
    c.rows.push(
      { metric: `a⁵. reference build (${REF_BIN}), same rounds alternating: slowest ÷ alone`, median: median(rr), unit: '×', target: '(info)', pass: true, detail: `ms median: slowest ${fmt(median(ms.get(key(ref, 'many'))!), 0)}, alone ${fmt(median(ms.get(key(ref, 'alone'))!), 0)}; per run ${rr.map((x) => fmt(x, 2)).join(' ')}; CPU of a 3-replica round: ${cpuText(key(ref, 'many'))}` },
      { metric: `a⁶. this build's slowest ÷ the reference's (per-run pairs)`, median: median(ab), unit: '×', target: '(info)', pass: true, detail: `per run ${ab.map((x) => fmt(x, 2)).join(' ')}; CPU of a 3-replica round, this ÷ reference: ${fmt(median(cpu.get(key(mine, 'many'))!.map((m, i) => cpuTotal(m) / cpuTotal(cpu.get(key(ref, 'many'))![i]!))), 2)}×` },
    );
  }
}

// ---- b. 10 skopeo pulls ----------------------------------------------------------------------------

async function skopeoPulls(c: Ctx): Promise<void> {
  const image = await makeImage('docker', { seed: 'bench-replicas-pull', layers: 5, layerSize: LAYER, inMemoryMaxBytes: 4 * MiB });
  try {
    await c.up.push(image, 'bench/pull', 'v1');
    const imageBytes = image.size + [...image.blobs.values()].reduce((n, b) => n + b.size, 0);
    c.up.front.setLink(LINK);
    c.up.front.reset();
    const t0 = performance.now();
    const times: number[] = [];
    try {
      await Promise.all(
        Array.from({ length: PULLS }, async (_, k) => {
          const dir = join(c.scratch, `pull-${k}`);
          const t = performance.now();
          await skopeoCopy(`docker://${c.replicas[k % REPLICAS]!.host}/bench/pull:v1`, `dir:${dir}`, { timeoutMs: 300_000 });
          times.push(performance.now() - t);
          if (digestOf(readFileSync(join(dir, 'manifest.json'))) !== image.digest) throw new Error(`replicas: pull ${k}: wrong manifest`);
          rmSync(dir, { recursive: true, force: true });
        }),
      );
    } finally {
      c.up.front.setLink(undefined);
    }
    const wallMs = performance.now() - t0;
    const reqs = [...c.up.front.requests];
    const served = bodyGets(reqs.filter((r) => r.kind === 'blob' || r.kind === 'manifest'));
    const upstreamBytes = served.reduce((n, r) => n + r.bytesSent, 0);
    const manifestGets = served.filter((r) => r.kind === 'manifest').length;
    const ratio = upstreamBytes / imageBytes;
    c.log(`replicas b. ${PULLS} skopeo pulls of ${fmt(imageBytes / 1e6, 0)} MB over ${REPLICAS} replicas: upstream ${upstreamBytes} B (${fmt(ratio, 4)}× the image), manifest GETs ${manifestGets}, slowest pull ${fmt(max(times) / 1000, 2)} s, all in ${fmt(wallMs / 1000, 2)} s; load ${load()}`);
    c.loads.push(`b: ${load()}`);
    c.results.skopeo = { pulls: PULLS, imageBytes, upstreamBytes, ratio, manifestGets, pullMs: times, wallMs, upstreamRequests: reqs.map((r) => `${r.method} ${r.kind} ${r.status} ${r.bytesSent}B`) };
    c.rows.push(
      { metric: `b. ${PULLS} concurrent skopeo pulls of a ${fmt(imageBytes / 1e6, 0)} MB image over ${REPLICAS} replicas (${linkName()}): upstream bytes ÷ image`, median: ratio, unit: '×', target: '= 1.0', pass: Math.abs(ratio - 1) < 1e-9, detail: `${upstreamBytes} of ${imageBytes} B; slowest pull ${fmt(max(times) / 1000, 2)} s, median ${fmt(median(times) / 1000, 2)} s` },
      { metric: `b'. … upstream manifest GETs`, median: manifestGets, unit: '', target: '= 1', pass: manifestGets === 1, detail: 'GETs answered 200 by the upstream (tag and digest)' },
    );
  } finally {
    image.dispose();
  }
}

// ---- c. warm 1 GiB: S3, hot cache, filesystem driver -------------------------------------------------

async function warm(c: Ctx): Promise<void> {
  const blob = await seededBlob('bench-replicas-warm', WARM);
  await c.up.client.pushBlob('bench/warm', blob);
  const path = `/v2/bench/warm/blobs/${blob.digest}`;
  // A fourth replica of the cluster with a hot cache, and a single hubcache on the filesystem driver.
  const hot = c.track(await startReplica(c.o, 3, { hotCache: `${Math.ceil((2 * WARM) / MiB)}MiB` }));
  const fsHc = c.track(await startHubcacheProcess({ upstream: c.up, bin: c.o.bin!, storagePath: mkdtempSync(join(c.scratch, 'fs-')) }));
  const s3 = c.replicas[1]!;
  const check = (t: { bytes: number }, what: string) => {
    if (t.bytes !== WARM) throw new Error(`replicas: warm ${what}: ${t.bytes} of ${WARM} bytes`);
  };
  // Cold fills (untimed): into the bucket through one replica, into the local store of the fs one.
  check(await curlGet(`${s3.url}${path}`, { timeoutMs: 600_000 }), 'fill s3');
  check(await curlGet(`${fsHc.url}${path}`, { timeoutMs: 600_000 }), 'fill fs');
  // The hot replica's first read comes from the bucket and is teed into its directory.
  check(await curlGet(`${hot.url}${path}`, { timeoutMs: 600_000 }), 'hot miss');
  await hot.waitForLog((l) => l.message === 'hot cache: blob copied' && l.digest === blob.digest, 120_000);
  const t = { fs: [] as number[], s3: [] as number[], hot: [] as number[] };
  const sides = [
    ['fs', fsHc],
    ['s3', s3],
    ['hot', hot],
  ] as const;
  for (let i = 0; i < WARM_RUNS; i++) {
    // Rotated start (fs,s3,hot / s3,hot,fs / …): no side always follows the same one.
    for (let k = 0; k < sides.length; k++) {
      const [name, hc] = sides[(i + k) % sides.length]!;
      const tr = await curlGet(`${hc.url}${path}`, { timeoutMs: 600_000 });
      check(tr, name);
      t[name].push(mbps(tr.bytes, tr.totalMs));
    }
    c.log(`replicas c. round ${i + 1}/${WARM_RUNS}: fs driver ${fmt(t.fs[i]!, 0)} MiB/s, S3 ${fmt(t.s3[i]!, 0)} MiB/s, S3 + hot cache ${fmt(t.hot[i]!, 0)} MiB/s; load ${load()}`);
    c.loads.push(`c${i + 1}: ${load()}`);
  }
  const s3Ratio = median(ratios(t.s3, t.fs));
  const hotRatio = median(ratios(t.hot, t.fs));
  c.results.warm = { blobBytes: WARM, runs: WARM_RUNS, mibps: t };
  c.rows.push(
    { metric: `c. warm ${WARM / MiB} MiB blob from one replica: S3 (RGW) ÷ filesystem driver`, median: s3Ratio, unit: '×', target: '(info)', pass: true, detail: `MiB/s median: S3 ${fmt(median(t.s3), 0)}, fs ${fmt(median(t.fs), 0)}` },
    { metric: `c'. … S3 + hot cache ÷ filesystem driver`, median: hotRatio, unit: '×', target: '≥ 0.8', pass: hotRatio >= 0.8, detail: `MiB/s median: hot ${fmt(median(t.hot), 0)}, fs ${fmt(median(t.fs), 0)}` },
  );
  await hot.close();
  await fsHc.close();
}

// ---- d. kill -9 of one replica during 20 concurrent cold pulls --------------------------------------

interface Pull {
  ms: number;
  retries: number;
  errors: string[];
}

async function kill(c: Ctx): Promise<void> {
  const image = await makeImage('docker', { seed: 'bench-replicas-kill', layers: 2, layerSize: KILL_LAYER, inMemoryMaxBytes: 4 * MiB });
  try {
    await c.up.push(image, 'bench/kill', 'v1');
    const layers = image.layers.map((l) => l.digest);
    const alive = new Set(c.replicas);
    /** One request of a pull, retried on the next live replica until the body is right (≤ 10 tries). */
    const fetchRight = async (start: number, path: string, expect: string | undefined, accept: string | undefined, pull: Pull): Promise<HashedTransfer> => {
      for (let attempt = 0, r = start; attempt < 10; attempt++, r++) {
        const hc = c.replicas[r % REPLICAS]!;
        if (!alive.has(hc)) continue;
        try {
          const t = await curlHash(`${hc.url}${path}`, { timeoutMs: 120_000, ...(accept ? { headers: { accept } } : {}) });
          if (expect === undefined || t.digest === expect) return t;
          pull.errors.push(`wrong body from ${hc.host}: ${t.digest}`);
        } catch (err) {
          pull.errors.push(String((err as Error).message).slice(0, 200));
        }
        pull.retries++;
      }
      throw new Error(`replicas d.: ${path} failed 10 times: ${pull.errors.join('; ')}`);
    };
    c.up.front.setLink(LINK);
    c.up.front.reset();
    const biggest = layers[0]!;
    let victim: HubcacheProcess | undefined;
    // The replica that starts the fill of the first layer dies with kill -9 as soon as it logs it.
    const killed = Promise.race(c.replicas.map((hc) => hc.waitForLog((l) => l.message === 'fill started' && l.digest === biggest, 120_000).then(() => hc))).then(async (hc) => {
      victim = hc;
      alive.delete(hc);
      const at = performance.now();
      await hc.stop('SIGKILL');
      return at;
    });
    const t0 = performance.now();
    const pulls = await Promise.all(
      Array.from({ length: CLIENTS }, async (_, k): Promise<Pull> => {
        const pull: Pull = { ms: 0, retries: 0, errors: [] };
        const start = performance.now();
        await fetchRight(k, '/v2/bench/kill/manifests/v1', image.digest, image.mediaType, pull);
        await fetchRight(k, `/v2/bench/kill/blobs/${image.config!.digest}`, image.config!.digest, undefined, pull);
        for (const d of layers) await fetchRight(k, `/v2/bench/kill/blobs/${d}`, d, undefined, pull);
        pull.ms = performance.now() - start;
        return pull;
      }),
    );
    const killedAt = (await killed) - t0;
    c.up.front.setLink(undefined);
    const wallMs = performance.now() - t0;
    const retries = pulls.reduce((n, p) => n + p.retries, 0);
    const retried = pulls.filter((p) => p.retries > 0).length;
    const upstreamGets = Object.fromEntries(layers.map((d) => [d.slice(7, 19), bodyGets(c.up.front.filter({ kind: 'blob', digest: d })).length]));
    // Every object under blobs/ hashes to its key; unfinished uploads are invisible.
    let objects = 0;
    const corrupt: string[] = [];
    let token: string | undefined;
    do {
      const page = await c.rgw.client.send(new ListObjectsV2Command({ Bucket: c.bucket, Prefix: `${PREFIX}blobs/`, ...(token ? { ContinuationToken: token } : {}) }));
      for (const obj of page.Contents ?? []) {
        objects++;
        const body = await c.rgw.client.send(new GetObjectCommand({ Bucket: c.bucket, Key: obj.Key! }));
        const h = createHash('sha256');
        for await (const chunk of body.Body as AsyncIterable<Buffer>) h.update(chunk);
        if (h.digest('hex') !== obj.Key!.split('/').pop()) corrupt.push(obj.Key!);
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    const uploads = (await c.rgw.client.send(new ListMultipartUploadsCommand({ Bucket: c.bucket, Prefix: PREFIX }))).Uploads?.length ?? 0;
    const ms = pulls.map((p) => p.ms);
    c.log(`replicas d. killed ${victim?.host} (kill -9) ${fmt(killedAt / 1000, 2)} s in: ${pulls.length}/${CLIENTS} pulls completed, ${retried} retried (${retries} retries), pull time median ${fmt(median(ms) / 1000, 2)} s, max ${fmt(max(ms) / 1000, 2)} s, all in ${fmt(wallMs / 1000, 2)} s; upstream GETs per layer ${JSON.stringify(upstreamGets)}; bucket: ${objects} blobs, ${corrupt.length} corrupt, ${uploads} unfinished uploads (invisible); load ${load()}`);
    c.loads.push(`d: ${load()}`);
    c.results.kill = { clients: CLIENTS, layerBytes: KILL_LAYER, killedAtMs: killedAt, pullMs: ms, retries, retried, errors: pulls.flatMap((p) => p.errors), upstreamGets, objects, corrupt, unfinishedUploads: uploads, wallMs };
    c.rows.push(
      { metric: `d. kill -9 of the filling replica during ${CLIENTS} concurrent cold pulls (2 × ${KILL_LAYER / MiB} MiB, ${linkName()}): pulls completed after retries`, median: pulls.length, unit: '', target: `= ${CLIENTS}`, pass: pulls.length === CLIENTS, detail: `${retried} pulls retried (${retries} requests retried on another replica); killed ${fmt(killedAt / 1000, 2)} s in` },
      { metric: `d'. … pull time (median; max in detail)`, median: median(ms) / 1000, unit: 's', target: '(info)', pass: true, detail: `max ${fmt(max(ms) / 1000, 2)} s; upstream GETs per layer ${Object.values(upstreamGets).join(', ')}` },
      { metric: `d". … objects under blobs/ that don't hash to their key`, median: corrupt.length, unit: '', target: '= 0', pass: corrupt.length === 0, detail: `${objects} objects checked; ${uploads} unfinished multipart uploads (invisible, swept after 24 h)` },
    );
  } finally {
    image.dispose();
  }
}

// ---- report ----------------------------------------------------------------------------------------

function section(rows: EvictionRow[], seconds: number, loads: string[]): string {
  const cell = (r: EvictionRow) => `${fmt(r.median, r.unit === '' ? 0 : 2)}${r.unit === '×' ? '×' : r.unit ? ` ${r.unit}` : ''}`;
  return [
    REPLICAS_SECTION,
    '',
    `Latest run: ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${seconds.toFixed(0)} s. Three compiled \`hubcache serve\` processes on one bucket of a Ceph RGW (memstore) and one redis-server, the token-auth upstream (distribution behind the recording front) paced to ${linkName()}; curl (piped to sha256sum where bodies are checked) and skopeo as clients. How each number is measured: the header of bench/replicas.ts.`,
    `Load averages (1/5/15 min) after each step: ${loads.join('; ')}.`,
    '',
    '| metric | median | target | result | detail |',
    '|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.metric} | ${cell(r)} | ${r.target} | ${r.target === '(info)' ? 'info' : r.pass ? 'PASS' : 'FAIL'} | ${r.detail} |`),
    '',
  ].join('\n');
}

/** Replaces this bench's section in `text` (up to the next `## ` header), or appends it. */
export function withReplicasSection(text: string, markdown: string): string {
  const start = text.indexOf(REPLICAS_SECTION);
  if (start < 0) return `${text.replace(/\n*$/, '\n\n')}${markdown}`;
  const next = text.indexOf('\n## ', start + REPLICAS_SECTION.length);
  return `${text.slice(0, start)}${markdown}${next < 0 ? '' : `\n${text.slice(next + 1)}`}`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
  const r = await benchReplicas(log);
  process.stdout.write(`${r.markdown}\n`);
  // Standalone: only this bench's section of RESULTS.md is replaced (npm run bench rewrites the table too).
  const file = fileURLToPath(new URL('RESULTS.md', import.meta.url));
  writeFileSync(file, withReplicasSection(readFileSync(file, 'utf8'), r.markdown));
  log('replicas: wrote its section of bench/RESULTS.md');
  process.exitCode = r.rows.every((row) => row.pass) ? 0 : 1;
}
