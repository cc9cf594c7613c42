/**
 * Push paths side by side (issue #14): the same blob pushed, by the same client, as one
 * `POST ?digest=` with the body (single) and as POST + `PUT ?digest=` with the body (post-put) into
 * hubcache, and as POST + PUT into distribution (Debian's docker-registry 2.8, which answers a
 * single POST with 202, so that is what a client ends up doing there; bench/push.ts's "single" row
 * compares the same two). Optionally curl's POST + PUT into both (curl). Modes alternate every
 * round (forwards, then backwards); printed: MiB/s, the server's CPU (user+sys from /proc, ms per
 * GiB) and this process's CPU (the undici client's, for the undici modes), with medians of the
 * per-round ratios. Server CPU per GiB is the figure the machine's load moves least.
 *
 *   tsx bench/push-paths.ts [sizeMiB] [rounds] [modes]   default 512 MiB, 3 rounds,
 *                                                         hc-single,hc-postput,dist-postput
 *   modes: hc-single, hc-postput, hc-curl, dist-postput, dist-curl (comma-separated)
 *   BIN=/path/to/bin/hubcache.js                          another checkout's CLI, or a compiled build
 *   PROF=DIR                                              hubcache runs with --cpu-prof into DIR
 */
import { createReadStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request as undiciRequest } from 'undici';
import { startDistribution } from '../test/support/distribution.js';
import { startHubcacheProcess } from '../test/support/hubcache-process.js';
import { fmt, median, MiB } from './stats.js';
import { curl, writeBlobFile } from './upload-blob.js';

const sizeMiB = Number(process.argv[2] ?? 512);
const rounds = Number(process.argv[3] ?? 3);
const modes = (process.argv[4] ?? 'hc-single,hc-postput,dist-postput').split(',');
const size = sizeMiB * MiB;
const dir = mkdtempSync(join(tmpdir(), 'hubcache-bench-push-paths-'));
const { file, digest } = writeBlobFile(dir, sizeMiB, 'bench-push-paths');

/** user+sys CPU of `pid` so far, in ms (/proc/<pid>/stat, 100 ticks a second). */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

const body = () => createReadStream(file, { highWaterMark: MiB });

async function single(base: string, repo: string): Promise<void> {
  const res = await undiciRequest(`${base}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) }, body: body() });
  await res.body.dump();
  if (res.statusCode !== 201) throw new Error(`single POST → ${res.statusCode}`);
}

async function postPut(base: string, repo: string): Promise<void> {
  const start = await undiciRequest(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await start.body.dump();
  if (start.statusCode !== 202) throw new Error(`POST → ${start.statusCode}`);
  const loc = new URL(String(start.headers.location), base);
  loc.searchParams.set('digest', digest);
  const res = await undiciRequest(loc, { method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) }, body: body() });
  await res.body.dump();
  if (res.statusCode !== 201) throw new Error(`PUT → ${res.statusCode}`);
}

async function curlPostPut(base: string, repo: string): Promise<void> {
  const start = await curl(['-X', 'POST', `${base}/v2/${repo}/blobs/uploads/`]);
  if (start.code !== 202) throw new Error(`POST → ${start.code}`);
  const loc = new URL(/^location:\s*(\S+)/im.exec(start.headers)![1]!, base);
  loc.searchParams.set('digest', digest);
  const done = await curl(['-X', 'PUT', '-H', 'Content-Type: application/octet-stream', '--upload-file', file, loc.toString()]);
  if (done.code !== 201) throw new Error(`PUT → ${done.code}`);
}

const how = { single, postput: postPut, curl: curlPostPut } as const;

const dist = await startDistribution();
const hc = await startHubcacheProcess({
  ...(process.env.BIN ? { bin: process.env.BIN } : {}),
  args: ['--hosted-repositories', 'bench/**', '--upstream-url', 'http://127.0.0.1:9', '--log-level', 'info'],
  ...(process.env.PROF ? { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${process.env.PROF}`] } : {}),
});
const results: Record<string, { mbps: number[]; serverMsPerGiB: number[]; clientMsPerGiB: number[] }> = {};
try {
  for (let r = 0; r < rounds; r++) {
    for (const mode of r % 2 === 0 ? modes : [...modes].reverse()) {
      const [who, kind] = mode.split('-') as ['hc' | 'dist', keyof typeof how];
      if (!how[kind] || (who !== 'hc' && who !== 'dist')) throw new Error(`unknown mode ${mode}`);
      const server = who === 'hc' ? hc : dist;
      const pid = server.child.pid!;
      const c0 = cpuMs(pid);
      const u0 = process.cpuUsage();
      const t0 = performance.now();
      await how[kind](server.url, `bench/r${r}-${mode}`);
      const ms = performance.now() - t0;
      const u = process.cpuUsage(u0);
      const out = (results[mode] ??= { mbps: [], serverMsPerGiB: [], clientMsPerGiB: [] });
      out.mbps.push(sizeMiB / (ms / 1000));
      out.serverMsPerGiB.push(((cpuMs(pid) - c0) / sizeMiB) * 1024);
      out.clientMsPerGiB.push(((u.user + u.system) / 1000 / sizeMiB) * 1024);
    }
  }
  process.stdout.write(`push of a ${sizeMiB} MiB blob, ${rounds} rounds (medians; runs in brackets)\n`);
  for (const [mode, v] of Object.entries(results)) {
    process.stdout.write(`  ${mode.padEnd(13)} ${fmt(median(v.mbps), 0)} MiB/s [${v.mbps.map((x) => fmt(x, 0)).join(' ')}]  server CPU ${fmt(median(v.serverMsPerGiB), 0)} ms/GiB [${v.serverMsPerGiB.map((x) => fmt(x, 0)).join(' ')}]  this process ${fmt(median(v.clientMsPerGiB), 0)} ms/GiB\n`);
  }
  const ratio = (a: string, b: string) => {
    const x = results[a];
    const y = results[b];
    if (!x || !y) return;
    const per = (k: 'mbps' | 'serverMsPerGiB') => x[k].map((v, i) => v / y[k][i]!);
    process.stdout.write(`  ${a} ÷ ${b}: MiB/s ${fmt(median(per('mbps')))} [${per('mbps').map((v) => fmt(v)).join(' ')}], server CPU per GiB ${fmt(median(per('serverMsPerGiB')))}\n`);
  };
  ratio('hc-single', 'hc-postput');
  ratio('hc-single', 'dist-postput');
  ratio('hc-postput', 'dist-postput');
  ratio('hc-curl', 'dist-curl');
} finally {
  await hc.close();
  await dist.close();
  rmSync(dir, { recursive: true, force: true });
}
