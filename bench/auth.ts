/**
 * Authenticated warm pull ÷ anonymous (issue #14, target ≥ 0.95), each pull done the way real
 * clients (docker, containerd, skopeo) do it, from a new client (a new connection, as a new skopeo
 * process has), blobs fetched PARALLEL at a time (docker's max-concurrent-downloads), against
 * one `hubcache serve` with auth on (htpasswd, bcrypt cost 10 as `htpasswd -B -C 10`; token mode,
 * the default) in front of the fake Docker Hub, serving a mirrored image from its store (warm):
 *
 * - anonymous: no credentials: `GET /v2/` (401 with the challenge; a mirror client that pulls
 *   mirrored names anonymously goes on without a token), the manifest by tag, every blob.
 * - anonymous-token: what dockerd does without credentials against a token-mode registry: the
 *   token dance below without credentials (an anonymous token).
 * - basic: registry:2's htpasswd-mode clients: the same requests, each with `Authorization: Basic`.
 * - bearer: the full token dance once per pull: `GET /v2/` → 401 with the `Bearer realm,service`
 *   challenge → `GET realm?service&scope=repository:…:pull` with Basic credentials → manifest and
 *   blobs with `Authorization: Bearer`.
 *
 * - anonymous-floor: the floor of the token round trip: anonymous, plus in place of the token
 *   request a GET to a minimal node:http server (its own process) answering a fixed JSON body of a
 *   token response's size over a connection kept open. No token server can answer faster than
 *   that one, so anonymous-floor ÷ anonymous is the best Bearer ÷ anonymous any server reaches with
 *   this client on this machine.
 *
 * Ratios: each mode ÷ anonymous (the strict baseline: no token request), and bearer ÷
 * anonymous-token (a client doing the dance either way: what credentials cost).
 * At the end, the server's own time per route (hubcache_http_request_duration_seconds: sum ÷
 * count, from the request's arrival in express to the response's end) for all modes together.
 *
 * All modes against the same process: two processes (one without auth as the baseline) differed
 * by 10–60 % on identical anonymous requests on this machine, more than what is measured here.
 *
 * Two images: a realistic one (5 layers of BENCH_LARGE_LAYER_MIB, default 6: 30 MiB) and the small
 * worst case (5 layers of 64 KiB: the per-request and per-pull costs of auth are largest against
 * the bytes). Per round the four modes run back to back in a rotating order; each round gives a
 * per-pair ratio (the baseline's pull time ÷ the mode's pull time = the mode's speed ÷ the baseline's); each
 * run reports the median of its rounds' ratios, and the median over the runs is the figure.
 *
 *   npm run bench:auth    BENCH_RUNS (default 7), BENCH_PULLS (rounds per run, small image,
 *                         default 40), BENCH_LARGE_PULLS (large image, default 24),
 *                         (0: the small image only), BENCH_LARGE_LAYER_MIB (default 6), BIN (the CLI to run: npm run bench
 *                         passes its compiled build), BENCH_CPU_PROF (a directory: the auth
 *                         server runs with --cpu-prof and writes its profile there on exit)
 */
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { Agent } from 'undici';
import { startHubcacheProcess, type HubcacheProcess } from '../test/support/hubcache-process.js';
import { makeImage, type TestImage } from '../test/support/images.js';
import { startUpstream } from '../test/support/upstream-harness.js';
import { Authenticator } from '../src/auth/authenticator.js';
import { BcryptPool } from '../src/auth/bcrypt-pool.js';
import { Gatekeeper } from '../src/auth/gatekeeper.js';
import { AccessPolicy } from '../src/auth/policy.js';
import { TokenSigner } from '../src/auth/token.js';
import { fmt, max, median, min } from './stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const SMALL_PULLS = Number(process.env.BENCH_PULLS ?? 40);
const LARGE_PULLS = Number(process.env.BENCH_LARGE_PULLS ?? 24);
const LARGE_LAYER = Number(process.env.BENCH_LARGE_LAYER_MIB ?? 6) * 1024 * 1024;
const PARALLEL = 3;
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json';
const MODES = ['anonymous', 'anonymous-token', 'basic', 'bearer', 'anonymous-floor'] as const;
type Mode = (typeof MODES)[number];
/** The ratios reported: each mode ÷ anonymous, and Bearer ÷ anonymous with a token (both doing the token dance). */
const RATED = ['anonymous-token', 'basic', 'bearer', 'anonymous-floor', 'bearer/anonymous-token'] as const;
type Rated = (typeof RATED)[number];
const pairOf = (rated: Rated): [Mode, Mode] => (rated === 'bearer/anonymous-token' ? ['bearer', 'anonymous-token'] : [rated, 'anonymous']);

const dir = mkdtempSync(join(tmpdir(), 'hubcache-bench-auth-'));
const htpasswd = join(dir, 'htpasswd');
writeFileSync(htpasswd, `alice:${bcrypt.hashSync('alice-secret', 10).replace(/^\$2b\$/, '$2y$')}\n`);
const basic = `Basic ${Buffer.from('alice:alice-secret').toString('base64')}`;

interface BenchImage {
  readonly label: string;
  readonly repo: string;
  readonly image: TestImage;
  readonly pulls: number;
}

/** The server process's CPU time so far (user + sys), ms, from /proc (clock ticks of 10 ms). */
function serverCpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** Request latencies on the auth server by kind, µs (what a pull costs request by request). */
const latencies: Record<string, number[]> = {};
function record(kind: string, t0: number): void {
  (latencies[kind] ??= []).push((performance.now() - t0) * 1000);
}

async function request(agent: Agent, origin: string, path: string, headers: Record<string, string>, kind?: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  const t0 = performance.now();
  const res = await agent.request({ origin, path, method: 'GET', headers });
  const chunks: Buffer[] = [];
  for await (const chunk of res.body) chunks.push(chunk as Buffer);
  if (kind) record(kind, t0);
  return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) };
}

/** `Bearer realm="…",service="…"` → its parameters. */
function challengeParams(header: string | string[] | undefined): Record<string, string> {
  const text = Array.isArray(header) ? header[0]! : (header ?? '');
  return Object.fromEntries([...text.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
}

/** One pull as a client does it, from a new client; returns the bytes of the manifest and blobs. */
async function pull(server: HubcacheProcess, mode: Mode, img: BenchImage, measure: boolean): Promise<number> {
  const agent = new Agent({ connections: PARALLEL, pipelining: 1 });
  const origin = server.url;
  const k = (kind: string) => (measure ? `${mode} ${kind}` : undefined);
  try {
    let auth = mode === 'basic' ? basic : undefined;
    const ping = await request(agent, origin, '/v2/', auth ? { authorization: auth } : {}, k('GET /v2/'));
    if (mode === 'anonymous-floor') {
      if (ping.status !== 401) throw new Error(`${mode}: GET /v2/ answered ${ping.status}`);
      const res = await request(floor.agent, floor.url, `/token?service=hubcache&scope=repository:${img.repo}:pull`, {}, k('token'));
      if (res.status !== 200) throw new Error(`floor: ${res.status}`);
    } else if (mode === 'bearer' || mode === 'anonymous-token') {
      if (ping.status !== 401) throw new Error(`${mode}: GET /v2/ answered ${ping.status}, expected the 401 challenge`);
      const { realm, service } = challengeParams(ping.headers['www-authenticate']);
      const url = new URL(realm!);
      url.searchParams.set('service', service!);
      url.searchParams.set('scope', `repository:${img.repo}:pull`);
      const res = await request(agent, url.origin, url.pathname + url.search, mode === 'bearer' ? { authorization: basic } : {}, k('token'));
      if (res.status !== 200) throw new Error(`token: ${res.status} ${res.body.toString()}`);
      auth = `Bearer ${(JSON.parse(res.body.toString()) as { token: string }).token}`;
    } else if (ping.status !== (mode === 'anonymous' ? 401 : 200)) throw new Error(`${mode}: GET /v2/ answered ${ping.status}`);
    const headers = (extra: Record<string, string> = {}) => ({ ...extra, ...(auth ? { authorization: auth } : {}) });
    const manifest = await request(agent, origin, `/v2/${img.repo}/manifests/1`, headers({ accept: ACCEPT }), k('manifest'));
    if (manifest.status !== 200) throw new Error(`${mode} manifest: ${manifest.status} ${manifest.body.toString()}`);
    const digests = [...img.image.blobs.keys()];
    let bytes = manifest.body.length;
    let next = 0;
    await Promise.all(
      Array.from({ length: PARALLEL }, async () => {
        while (next < digests.length) {
          const digest = digests[next++]!;
          const blob = await request(agent, origin, `/v2/${img.repo}/blobs/${digest}`, headers(), img.label === 'small' ? k('blob') : undefined);
          if (blob.status !== 200) throw new Error(`${mode} blob: ${blob.status}`);
          bytes += blob.body.length;
        }
      }),
    );
    return bytes;
  } finally {
    await agent.close();
  }
}

/**
 * The auth layer's own cost, in process (no HTTP, no other process on the cores to blur it):
 * identify + check for a warm Basic request (credential cache hit), a warm Bearer request
 * (verified-token cache hit), the token endpoint's issue for a repeated (user, scope), the first
 * ECDSA verification of a token, in µs.
 */
async function perRequestCost(): Promise<Record<string, number>> {
  const users = { users: new Map([['alice', bcrypt.hashSync('alice-secret', 10)]]), onChange: () => undefined };
  const pool = new BcryptPool(1);
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const signer = new TokenSigner({ key: privateKey, service: 'hubcache' });
  const gk = new Gatekeeper({
    policy: new AccessPolicy({ rules: [{ repositories: ['myorg/**'], users: ['alice'], actions: ['pull', 'push'] }], groups: {}, anonymousPull: true, isHosted: (n) => n.startsWith('myorg/') }),
    authenticator: new Authenticator({ users, bcrypt: pool, maxFailedLogins: 10, maxFailedLoginsPerAddress: 50, failedLoginWindowMs: 300_000 }),
    signer,
    users,
    tokenTtlSeconds: 300,
    refreshTokenTtlSeconds: 3600,
  });
  const id = await gk.identify(basic, '10.0.0.1');
  if ('failure' in id) throw new Error('login failed');
  const scopes = [{ type: 'repository' as const, name: 'myorg/app', actions: ['pull' as const] }];
  const token = gk.issue(id, '10.0.0.1', scopes, false).token;
  const cost = async (f: () => Promise<unknown> | unknown, n = 20_000) => {
    const samples: number[] = [];
    for (let r = 0; r < 7; r++) {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await f();
      samples.push(((performance.now() - t0) * 1000) / n);
    }
    return median(samples);
  };
  const out = {
    anonymous: await cost(async () => gk.check((await gk.identify(undefined, '10.0.0.1')) as never, '10.0.0.1', 'library/alpine', 'pull')),
    basicCached: await cost(async () => gk.check((await gk.identify(basic, '10.0.0.1')) as never, '10.0.0.1', 'myorg/app', 'pull')),
    bearerCached: await cost(async () => gk.check((await gk.identify(`Bearer ${token}`, '10.0.0.1')) as never, '10.0.0.1', 'myorg/app', 'pull')),
    issueRepeated: await cost(() => gk.issue(id, '10.0.0.1', scopes, false), 2_000),
    verifyFirst: await cost(() => signer.verifyAccess(token), 2_000),
  };
  await pool.close();
  console.log('auth cost in process, µs (median of 7 × 20000; 7 × 2000 for issue and verify):');
  console.log(`  anonymous ${fmt(out.anonymous, 2)}, Basic (cached) ${fmt(out.basicCached, 2)}, Bearer (cached) ${fmt(out.bearerCached, 2)}; token issue, repeated (user, scope) ${fmt(out.issueRepeated, 2)}; first ES256 verification ${fmt(out.verifyFirst, 1)}`);
  return out;
}

/**
 * The floor server: node:http in a process of its own answering every request with the same JSON
 * body, about a token response's size (hubcache's: ~700 bytes), and nothing else.
 */
async function startFloor(): Promise<{ url: string; agent: Agent; close: () => Promise<void> }> {
  const body = JSON.stringify({ token: 'x'.repeat(300), access_token: 'x'.repeat(300), expires_in: 300, issued_at: '2026-01-01T00:00:00.000Z' });
  const code = `const body = Buffer.from(${JSON.stringify(body)});
require('node:http').createServer((req, res) => { req.resume(); res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length, 'cache-control': 'no-store' }); res.end(body); })
  .listen(0, '127.0.0.1', function () { process.stdout.write(this.address().port + '\\n'); });`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [chunk] = (await once(child.stdout!, 'data')) as [Buffer];
  const url = `http://127.0.0.1:${Number(chunk.toString().trim())}`;
  const agent = new Agent({ connections: 1, pipelining: 1 });
  return {
    url,
    agent,
    close: async () => {
      await agent.close();
      child.kill();
      await once(child, 'exit');
    },
  };
}

/** Mean server time per route, µs, from the process's request duration histogram. */
async function serverTimes(server: HubcacheProcess): Promise<Record<string, { count: number; meanUs: number }>> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const sums: Record<string, { sum: number; count: number }> = {};
  for (const m of text.matchAll(/^hubcache_http_request_duration_seconds_(sum|count)\{route="([^"]+)",method="([^"]+)"\} (\S+)$/gm)) {
    const key = `${m[3]} ${m[2]}`;
    (sums[key] ??= { sum: 0, count: 0 })[m[1] as 'sum' | 'count'] = Number(m[4]);
  }
  return Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, { count: v.count, meanUs: (v.sum / v.count) * 1e6 }]));
}

const floor = await startFloor();
const upstream = await startUpstream();
const small: BenchImage = { label: 'small', repo: 'library/bench-auth-small', image: await makeImage('oci', { seed: 'bench-auth-small', layerSize: 64 * 1024, layers: 5 }), pulls: SMALL_PULLS };
const large: BenchImage = { label: 'large', repo: 'library/bench-auth-large', image: await makeImage('oci', { seed: 'bench-auth-large', layerSize: LARGE_LAYER, layers: 5 }), pulls: LARGE_PULLS };
const images = LARGE_PULLS > 0 ? [small, large] : [small];
for (const img of images) await upstream.push(img.image, img.repo, '1');
const bin = process.env.BIN ? { bin: process.env.BIN } : {};
const hc = await startHubcacheProcess({
  upstream,
  ...bin,
  args: ['--auth-htpasswd', htpasswd, '--log-level', 'info'],
  ...(process.env.BENCH_CPU_PROF ? { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CPU_PROF] } : {}),
});
const empty = <T>(f: () => T) => Object.fromEntries(MODES.map((m) => [m, f()])) as Record<Mode, T>;
const emptyRated = <T>(f: () => T) => Object.fromEntries(RATED.map((m) => [m, f()])) as Record<Rated, T>;

try {
  const inProcess = await perRequestCost();
  // Warm: the stores (first pull fills), the credential cache, both processes' JIT.
  for (const img of images) for (let i = 0; i < 3; i++) for (const mode of MODES) await pull(hc, mode, img, false);
  const results: Record<string, { runs: Record<Mode, number[]>; cpu: Record<Mode, number[]>; ratios: Record<Rated, number[]> }> = {};
  for (const img of images) results[img.label] = { runs: empty(() => []), cpu: empty(() => []), ratios: emptyRated(() => []) };
  for (let r = 0; r < RUNS; r++) {
    for (const img of images) {
      const times = empty<number[]>(() => []);
      const cpu = empty<number>(() => 0);
      const pairs = emptyRated<number[]>(() => []);
      for (let i = 0; i < img.pulls; i++) {
        const t: Partial<Record<Mode, number>> = {};
        for (let j = 0; j < MODES.length; j++) {
          const mode = MODES[(i + j + r) % MODES.length]!;
          const c0 = serverCpuMs(hc.child.pid!);
          const t0 = performance.now();
          await pull(hc, mode, img, true);
          t[mode] = performance.now() - t0;
          cpu[mode] += serverCpuMs(hc.child.pid!) - c0;
          times[mode].push(t[mode]!);
        }
        for (const rated of RATED) {
          const [mode, base] = pairOf(rated);
          pairs[rated].push(t[base]! / t[mode]!);
        }
      }
      const res = results[img.label]!;
      for (const mode of MODES) res.runs[mode].push(1000 / median(times[mode]));
      for (const mode of MODES) res.cpu[mode].push(cpu[mode] / img.pulls);
      for (const mode of RATED) res.ratios[mode].push(median(pairs[mode]));
    }
  }
  const bytes = (img: BenchImage) => [...img.image.blobs.values()].reduce((s, b) => s + b.size, 0);
  for (const img of images) {
    const res = results[img.label]!;
    console.log(`\n${img.label} image: 5 layers of ${fmt(img.image.layers[0]!.size / 1024, 0)} KiB (${fmt(bytes(img) / 1024 / 1024, 2)} MiB), ${img.pulls} rounds per run, ${RUNS} runs, ${PARALLEL} blobs at a time, a new client per pull`);
    for (const mode of MODES) console.log(`  ${mode.padEnd(15)} ${fmt(median(res.runs[mode]), 1).padStart(8)} pulls/s median  (runs: ${res.runs[mode].map((x) => fmt(x, 1)).join(' ')}); server CPU ${fmt(median(res.cpu[mode]), 2)} ms per pull`);
    for (const rated of RATED) {
      const xs = res.ratios[rated];
      const [mode, base] = pairOf(rated);
      console.log(`  ${mode} ÷ ${base}: median ${fmt(median(xs), 3)} (runs: ${xs.map((x) => fmt(x, 3)).join(' ')}; min ${fmt(min(xs), 3)}, max ${fmt(max(xs), 3)})  target ≥ 0.95`);
    }
  }
  const routes = await serverTimes(hc);
  console.log('\nserver time per route (arrival in express → end of response), all modes and both images, mean µs:');
  for (const [route, { count, meanUs }] of Object.entries(routes).sort()) console.log(`  ${route.padEnd(26)} ${fmt(meanUs, 0).padStart(7)}  (n=${count})`);
  console.log('\nrequest latency, µs, median (small image, all runs; anonymous-floor token = the minimal server):');
  for (const [kind, xs] of Object.entries(latencies).sort()) console.log(`  ${kind.padEnd(26)} ${fmt(median(xs), 0).padStart(7)}  (n=${xs.length})`);
  // For bench/run.ts (npm run bench), which runs this file and reads this line.
  console.log(
    `BENCH_JSON ${JSON.stringify({
      runs: RUNS,
      parallel: PARALLEL,
      inProcess,
      serverTimes: routes,
      latencies: Object.fromEntries(Object.entries(latencies).map(([k, xs]) => [k, median(xs)])),
      images: Object.fromEntries(
        images.map((img) => {
          const res = results[img.label]!;
          return [img.label, { layerBytes: img.image.layers[0]!.size, totalBytes: bytes(img), pulls: img.pulls, rates: res.runs, serverCpuMsPerPull: res.cpu, ratios: res.ratios, basicRatio: median(res.ratios.basic), bearerRatio: median(res.ratios.bearer), floorRatio: median(res.ratios['anonymous-floor']), bearerToAnonymousTokenRatio: median(res.ratios['bearer/anonymous-token']) }];
        }),
      ),
    })}`,
  );
} finally {
  await hc.close();
  await upstream.close();
  await floor.close();
  small.image.dispose();
  large.image.dispose();
  rmSync(dir, { recursive: true, force: true });
}
