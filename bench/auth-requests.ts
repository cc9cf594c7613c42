/**
 * The server's cost of each request of a pull with and without the token protocol (issue #14):
 * server CPU (user + sys of the hubcache process, from /proc) and client-measured latency per
 * request, by kind, over one keep-alive connection, one request at a time — no client-side
 * connection setup, no parallelism, so what differs between kinds is the server's work:
 *
 * - `GET /v2/` → 401 with the Bearer challenge (what every client without a token gets first),
 * - `GET /auth/token` with Basic credentials, and anonymously (the token request),
 * - the manifest by tag and a 64 KiB blob, with the Bearer token, and anonymously.
 *
 * The floor: the same requests against a minimal node:http server in its own process answering a
 * fixed JSON body of a token response's size (no routing, no auth, no log): what any server pays
 * for a request on this machine (kernel, HTTP parsing and writing), measured the same way.
 *
 * With BIN_B, a second build is measured in the same run (e.g. main's: BIN=new BIN_B=old): both
 * processes run side by side and every batch alternates between them (A,B / B,A), so each batch
 * gives a per-pair ratio B ÷ A; medians of those are reported.
 *
 *   tsx bench/auth-requests.ts   BIN, BIN_B (CLI entries), BENCH_BATCH (requests per batch,
 *                                default 400), BENCH_ROUNDS (batches per kind and build, default 7),
 *                                BENCH_KINDS (a regex: only the kinds it matches), BENCH_CPU_PROF
 *                                (a directory: the servers run with --cpu-prof and write there)
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { Agent } from 'undici';
import { startHubcacheProcess, type HubcacheProcess } from '../test/support/hubcache-process.js';
import { makeImage } from '../test/support/images.js';
import { startUpstream } from '../test/support/upstream-harness.js';
import { fmt, median } from './stats.js';

const BATCH = Number(process.env.BENCH_BATCH ?? 400);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json';
const REPO = 'library/bench-auth-requests';

/** user + sys CPU of a process so far, ms (clock ticks of 10 ms: batches are long enough). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

interface Target {
  readonly label: string;
  readonly url: string;
  readonly pid: number;
  readonly agent: Agent;
}

interface Kind {
  readonly name: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly status: number;
}

async function batch(t: Target, kind: Kind): Promise<{ cpuUs: number; wallUs: number }> {
  const c0 = cpuMs(t.pid);
  const t0 = performance.now();
  for (let i = 0; i < BATCH; i++) {
    const res = await t.agent.request({ origin: t.url, path: kind.path, method: 'GET', headers: kind.headers });
    await res.body.arrayBuffer();
    if (res.statusCode !== kind.status) throw new Error(`${t.label} ${kind.name}: ${res.statusCode}, expected ${kind.status}`);
  }
  const wallUs = ((performance.now() - t0) * 1000) / BATCH;
  return { cpuUs: ((cpuMs(t.pid) - c0) * 1000) / BATCH, wallUs };
}

async function startFloor(bodyBytes: number): Promise<{ url: string; pid: number; close: () => Promise<void> }> {
  const body = JSON.stringify({ token: 'x'.repeat(Math.max(0, bodyBytes - 20)) });
  const code = `const body = Buffer.from(${JSON.stringify(body)});
require('node:http').createServer((req, res) => { req.resume(); res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length, 'cache-control': 'no-store' }); res.end(body); })
  .listen(0, '127.0.0.1', function () { process.stdout.write(this.address().port + '\\n'); });`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [chunk] = (await once(child.stdout!, 'data')) as [Buffer];
  return {
    url: `http://127.0.0.1:${Number(chunk.toString().trim())}`,
    pid: child.pid!,
    close: async () => {
      child.kill();
      await once(child, 'exit');
    },
  };
}

const dir = mkdtempSync(join(tmpdir(), 'hubcache-bench-authreq-'));
const htpasswd = join(dir, 'htpasswd');
writeFileSync(htpasswd, `alice:${bcrypt.hashSync('alice-secret', 10).replace(/^\$2b\$/, '$2y$')}\n`);
const basic = `Basic ${Buffer.from('alice:alice-secret').toString('base64')}`;
const upstream = await startUpstream();
const image = await makeImage('oci', { seed: 'bench-auth-requests', layerSize: 64 * 1024, layers: 2 });
await upstream.push(image, REPO, '1');
const servers: HubcacheProcess[] = [];
const targets: Target[] = [];
let floor: Awaited<ReturnType<typeof startFloor>> | undefined;
try {
  const bins = [process.env.BIN, process.env.BIN_B].filter((b): b is string => !!b);
  if (bins.length === 0) bins.push('');
  for (const [i, bin] of bins.entries()) {
    const hc = await startHubcacheProcess({ upstream, ...(bin ? { bin } : {}), args: ['--auth-htpasswd', htpasswd, '--log-level', 'info'], ...(process.env.BENCH_CPU_PROF ? { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CPU_PROF] } : {}) });
    servers.push(hc);
    targets.push({ label: bins.length > 1 ? (i === 0 ? 'A' : 'B') : 'hubcache', url: hc.url, pid: hc.child.pid!, agent: new Agent({ connections: 1, pipelining: 1 }) });
  }
  const scope = `service=${encodeURIComponent(new URL(targets[0]!.url).host)}&scope=repository:${REPO}:pull`;
  // A token (the same for every request, as a client keeps it for the pull), from the first server.
  const tokenFor = async (t: Target) => {
    const res = await t.agent.request({ origin: t.url, path: `/auth/token?${scope}`, method: 'GET', headers: { authorization: basic } });
    const body = (await res.body.json()) as { token: string };
    return { bearer: `Bearer ${body.token}`, bytes: JSON.stringify(body).length };
  };
  const digest = [...image.blobs.keys()].find((d) => image.blobs.get(d)!.size > 60_000)!;
  const only = new RegExp(process.env.BENCH_KINDS ?? '');
  const kinds = async (t: Target): Promise<Kind[]> => {
    const { bearer } = await tokenFor(t);
    return ([
      { name: 'GET /v2/ → 401 challenge', path: '/v2/', headers: {}, status: 401 },
      { name: 'token, Basic', path: `/auth/token?${scope}`, headers: { authorization: basic }, status: 200 },
      { name: 'token, anonymous', path: `/auth/token?${scope}`, headers: {}, status: 200 },
      { name: 'manifest, Bearer', path: `/v2/${REPO}/manifests/1`, headers: { accept: ACCEPT, authorization: bearer }, status: 200 },
      { name: 'manifest, anonymous', path: `/v2/${REPO}/manifests/1`, headers: { accept: ACCEPT }, status: 200 },
      { name: 'blob 64 KiB, Bearer', path: `/v2/${REPO}/blobs/${digest}`, headers: { authorization: bearer }, status: 200 },
      { name: 'blob 64 KiB, anonymous', path: `/v2/${REPO}/blobs/${digest}`, headers: {}, status: 200 },
    ] as Kind[]).filter((k) => only.test(k.name));
  };
  const perTarget = await Promise.all(targets.map(kinds));
  floor = await startFloor((await tokenFor(targets[0]!)).bytes);
  const floorTarget: Target = { label: 'floor', url: floor.url, pid: floor.pid, agent: new Agent({ connections: 1, pipelining: 1 }) };
  const floorKind: Kind = { name: 'floor: minimal node:http, fixed JSON', path: `/token?${scope}`, headers: { authorization: basic }, status: 200 };
  // Warm: fills, caches, JIT.
  for (const [i, t] of targets.entries()) for (const k of perTarget[i]!) await batch(t, k);
  await batch(floorTarget, floorKind);

  const results = new Map<string, { cpu: number[]; wall: number[] }>();
  const add = (key: string, r: { cpuUs: number; wallUs: number }) => {
    const e = results.get(key) ?? { cpu: [], wall: [] };
    e.cpu.push(r.cpuUs);
    e.wall.push(r.wallUs);
    results.set(key, e);
  };
  const pairRatios = new Map<string, { cpu: number[]; wall: number[] }>();
  for (let r = 0; r < ROUNDS; r++) {
    for (let k = 0; k < perTarget[0]!.length; k++) {
      const order = targets.map((_, i) => i);
      if (r % 2 === 1) order.reverse();
      const got: Array<{ cpuUs: number; wallUs: number }> = [];
      for (const i of order) {
        const res = await batch(targets[i]!, perTarget[i]![k]!);
        got[i] = res;
        add(`${targets[i]!.label} ${perTarget[i]![k]!.name}`, res);
      }
      if (targets.length === 2) {
        const e = pairRatios.get(perTarget[0]![k]!.name) ?? { cpu: [], wall: [] };
        e.cpu.push(got[1]!.cpuUs / got[0]!.cpuUs);
        e.wall.push(got[1]!.wallUs / got[0]!.wallUs);
        pairRatios.set(perTarget[0]![k]!.name, e);
      }
    }
    add(`floor ${floorKind.name}`, await batch(floorTarget, floorKind));
  }
  console.log(`per request, one keep-alive connection, one at a time; ${ROUNDS} batches of ${BATCH} per kind; medians (server CPU from /proc, 10 ms ticks)`);
  console.log(`${'kind'.padEnd(52)} ${'server CPU µs'.padStart(14)} ${'latency µs'.padStart(11)}`);
  for (const [key, { cpu, wall }] of results) console.log(`${key.padEnd(52)} ${fmt(median(cpu), 0).padStart(14)} ${fmt(median(wall), 0).padStart(11)}`);
  if (pairRatios.size > 0) {
    console.log('\nB ÷ A per pair (medians; < 1: B cheaper / faster):');
    for (const [name, { cpu, wall }] of pairRatios) console.log(`  ${name.padEnd(50)} CPU ${fmt(median(cpu), 3)} (${cpu.map((x) => fmt(x, 2)).join(' ')})  latency ${fmt(median(wall), 3)}`);
  }
  console.log(`BENCH_JSON ${JSON.stringify({ batch: BATCH, rounds: ROUNDS, results: Object.fromEntries([...results].map(([k, v]) => [k, { cpuUs: median(v.cpu), wallUs: median(v.wall) }])), pairRatios: Object.fromEntries([...pairRatios].map(([k, v]) => [k, { cpu: median(v.cpu), wall: median(v.wall) }])) })}`);
  await floorTarget.agent.close();
} finally {
  for (const t of targets) await t.agent.close();
  for (const s of servers) await s.close();
  await floor?.close();
  await upstream.close();
  image.dispose();
  rmSync(dir, { recursive: true, force: true });
}
