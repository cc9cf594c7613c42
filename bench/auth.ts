/**
 * Authenticated warm pull ÷ anonymous (issue #14, target ≥ 0.95): a real `hubcache serve` with auth
 * on in front of the fake Docker Hub, an image pulled once (warm), then pulled again and again —
 * the manifest by tag and every blob, sequentially over one keep-alive connection, the way a client
 * pulls — anonymously, with Basic credentials on every request (registry:2 htpasswd clients; bcrypt
 * cost 10 as `htpasswd -B -C 10`), and with a bearer token (fetched once per pull, as clients do per
 * repository). The three alternate pull by pull so drift hits all of them; each run reports, per
 * mode, the pulls/s of its median pull, and the medians of the per-run ratios are printed.
 *
 *   npm run bench:auth          BENCH_RUNS (default 7), BENCH_PULLS per run (default 20),
 *                               BIN (the CLI to run: npm run bench passes its compiled build),
 *                               BENCH_LAYER_KIB (default 64: small layers, where per-request cost shows)
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { Agent } from 'undici';
import { startHubcacheProcess } from '../test/support/hubcache-process.js';
import { makeImage } from '../test/support/images.js';
import { startUpstream } from '../test/support/upstream-harness.js';
import { Authenticator } from '../src/auth/authenticator.js';
import { BcryptPool } from '../src/auth/bcrypt-pool.js';
import { Gatekeeper } from '../src/auth/gatekeeper.js';
import { AccessPolicy } from '../src/auth/policy.js';
import { TokenSigner } from '../src/auth/token.js';
import { generateKeyPairSync } from 'node:crypto';
import { fmt, median, ratios } from './stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const PULLS = Number(process.env.BENCH_PULLS ?? 20);
const LAYER = Number(process.env.BENCH_LAYER_KIB ?? 64) * 1024;
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json';

const dir = mkdtempSync(join(tmpdir(), 'hubcache-bench-auth-'));
const htpasswd = join(dir, 'htpasswd');
writeFileSync(htpasswd, `alice:${bcrypt.hashSync('alice-secret', 10).replace(/^\$2b\$/, '$2y$')}\n`);
const image = await makeImage('oci', { seed: 'bench-auth', layerSize: LAYER, layers: 5 });
const upstream = await startUpstream();
await upstream.push(image, 'library/bench-auth', '1');
const hc = await startHubcacheProcess({ upstream, ...(process.env.BIN ? { bin: process.env.BIN } : {}), args: ['--auth-htpasswd', htpasswd, '--log-level', 'info'] });
const dispatcher = new Agent({ connections: 1, pipelining: 1 });
const basic = `Basic ${Buffer.from('alice:alice-secret').toString('base64')}`;

async function get(path: string, authorization?: string): Promise<number> {
  const res = await fetch(`${hc.url}${path}`, { headers: { accept: ACCEPT, ...(authorization ? { authorization } : {}) }, dispatcher } as RequestInit);
  const body = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`${path}: ${res.status} ${body.toString()}`);
  return body.length;
}

type Mode = 'anonymous' | 'basic' | 'bearer';
/** One pull: (token,) manifest, every blob. Returns bytes. */
async function pull(mode: Mode): Promise<number> {
  let auth = mode === 'basic' ? basic : undefined;
  if (mode === 'bearer') {
    const res = await fetch(`${hc.url}/auth/token?service=hubcache&scope=repository:library/bench-auth:pull`, { headers: { authorization: basic }, dispatcher } as RequestInit);
    auth = `Bearer ${((await res.json()) as { token: string }).token}`;
  }
  let bytes = await get('/v2/library/bench-auth/manifests/1', auth);
  for (const digest of image.blobs.keys()) bytes += await get(`/v2/library/bench-auth/blobs/${digest}`, auth);
  return bytes;
}

/** One run: PULLS pulls of each mode, interleaved pull by pull (A,B,C,B,C,A,…); per mode, pulls/s of its median pull. */
async function run(seed: number): Promise<Record<Mode, number>> {
  const times: Record<Mode, number[]> = { anonymous: [], basic: [], bearer: [] };
  const modes: Mode[] = ['anonymous', 'basic', 'bearer'];
  for (let i = 0; i < PULLS; i++) {
    for (let k = 0; k < 3; k++) {
      const mode = modes[(i + k + seed) % 3]!;
      const t0 = performance.now();
      await pull(mode);
      times[mode].push(performance.now() - t0);
    }
  }
  return { anonymous: 1000 / median(times.anonymous), basic: 1000 / median(times.basic), bearer: 1000 / median(times.bearer) };
}

/**
 * The auth layer's own cost per request, in process (no HTTP, no other process on the cores to
 * blur it): identify + check for a warm Basic request (credential cache hit) and a warm Bearer
 * request (verified-token cache hit), and the first verification of a token (ECDSA), in µs.
 */
async function perRequestCost(): Promise<void> {
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
  const token = gk.issue(id, '10.0.0.1', [{ type: 'repository', name: 'myorg/app', actions: ['pull'] }], false).token;
  const cost = async (f: () => Promise<unknown> | unknown, n = 20_000) => {
    const samples: number[] = [];
    for (let r = 0; r < 7; r++) {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await f();
      samples.push(((performance.now() - t0) * 1000) / n);
    }
    return median(samples);
  };
  const anon = await cost(async () => gk.check((await gk.identify(undefined, '10.0.0.1')) as never, '10.0.0.1', 'library/alpine', 'pull'));
  const basicWarm = await cost(async () => gk.check((await gk.identify(basic, '10.0.0.1')) as never, '10.0.0.1', 'myorg/app', 'pull'));
  const bearerWarm = await cost(async () => gk.check((await gk.identify(`Bearer ${token}`, '10.0.0.1')) as never, '10.0.0.1', 'myorg/app', 'pull'));
  const verify = await cost(() => signer.verifyAccess(token), 2_000);
  const issue = await cost(() => gk.issue(id as never, '10.0.0.1', [{ type: 'repository', name: 'myorg/app', actions: ['pull'] }], false), 2_000);
  const t0 = performance.now();
  await pool.compare('alice-secret', users.users.get('alice')!);
  const bcryptMs = performance.now() - t0;
  await pool.close();
  console.log('auth cost per request, in process (median of 7 × 20000):');
  console.log(`  anonymous ${fmt(anon, 1)} µs, Basic (cached) ${fmt(basicWarm, 1)} µs, Bearer (cached) ${fmt(bearerWarm, 1)} µs; first ES256 verification ${fmt(verify, 1)} µs, token issue ${fmt(issue, 1)} µs; one bcrypt (cost 10, worker) ${fmt(bcryptMs, 0)} ms`);
}

try {
  await perRequestCost();
  for (const mode of ['anonymous', 'basic', 'bearer'] as const) await pull(mode); // warm the cache and the credential cache
  const rates: Record<Mode, number[]> = { anonymous: [], basic: [], bearer: [] };
  for (let r = 0; r < RUNS; r++) {
    const result = await run(r);
    for (const mode of ['anonymous', 'basic', 'bearer'] as const) rates[mode].push(result[mode]);
  }
  const line = (label: string, xs: number[]) => `${label.padEnd(34)} ${fmt(median(xs), 1).padStart(8)} pulls/s  (runs: ${xs.map((x) => fmt(x, 0)).join(' ')})`;
  console.log(`warm pulls of a 5-layer image (${LAYER / 1024} KiB layers), ${PULLS} pulls per run, ${RUNS} runs`);
  console.log(line('anonymous', rates.anonymous));
  console.log(line('basic (credentials on every request)', rates.basic));
  console.log(line('bearer (token fetched per pull)', rates.bearer));
  console.log(`basic ÷ anonymous:  median ${fmt(median(ratios(rates.basic, rates.anonymous)), 3)}  (target ≥ 0.95)`);
  console.log(`bearer ÷ anonymous: median ${fmt(median(ratios(rates.bearer, rates.anonymous)), 3)}  (target ≥ 0.95)`);
  // For bench/run.ts (npm run bench), which runs this file and reads this line.
  console.log(`BENCH_JSON ${JSON.stringify({ runs: RUNS, pulls: PULLS, layerBytes: LAYER, rates, basicRatio: median(ratios(rates.basic, rates.anonymous)), bearerRatio: median(ratios(rates.bearer, rates.anonymous)) })}`);
} finally {
  await dispatcher.close();
  await hc.close();
  await upstream.close();
  image.dispose();
  rmSync(dir, { recursive: true, force: true });
}
