/**
 * Push throughput (issue #14): one big blob pushed with curl into hubcache under a hosted name,
 * and the same push into distribution (Debian's docker-registry 2.8, filesystem storage, no auth),
 * alternating, several rounds. Monolithic (POST, then one PUT ?digest= with the whole body),
 * chunked (POST, PATCHes of CHUNK bytes, an empty PUT ?digest=) — curl as the client — and single
 * (one POST ?digest= with the whole body, streamed by undici from this process; a registry that
 * answers it with 202, as the spec allows, gets POST + PUT with the body from the same client
 * instead, said in the output). Prints medians and the ratio
 * hubcache ÷ distribution of the throughput (≥ 1.0: hubcache is as fast), and hubcache's RSS
 * before and at its peak during the pushes (it must stay flat: bytes are streamed to disk).
 *
 *   tsx bench/push.ts [sizeMiB] [rounds]      default: 1024 MiB, 5 rounds
 *   BIN=/path/to/bin/hubcache.js tsx bench/push.ts   another checkout's CLI, or a compiled build
 *
 * `npm run bench` runs it (BENCH_ONLY=push) with its compiled build and BENCH_PUSH_MIB/BENCH_RUNS,
 * and reads the last line (BENCH_JSON …) into its table.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request as undiciRequest } from 'undici';
import { startDistribution } from '../test/support/distribution.js';
import { startHubcacheProcess } from '../test/support/hubcache-process.js';
import { RssSampler } from './rss-sampler.js';
import { curl, writeBlobFile } from './upload-blob.js';
import { fmt, mbps, median, MiB, ratios } from './stats.js';

const sizeMiB = Number(process.argv[2] ?? 1024);
const rounds = Number(process.argv[3] ?? 5);
const CHUNK = 64 * MiB;
const size = sizeMiB * MiB;

const dir = mkdtempSync(join(tmpdir(), 'hubcache-bench-push-'));
const { file, digest } = writeBlobFile(dir, sizeMiB, 'bench-push-key');


const location = (base: string, headers: string) => new URL(/^location:\s*(\S+)/im.exec(headers)![1]!, base).toString();

type Mode = 'monolithic' | 'chunked' | 'single';

/** One push of the blob to `repo` on `base`; resolves with the ms it took (POST to the final 201). */
async function push(base: string, repo: string, mode: Mode | 'single-fallback'): Promise<number> {
  const t0 = performance.now();
  if (mode === 'single' || mode === 'single-fallback') {
    const code = mode === 'single' ? await singlePost(base, repo, file, size, digest) : await postThenPut(base, repo, file, size, digest);
    if (code !== 201) throw new Error(`${mode} → ${code}`);
    return performance.now() - t0;
  }
  const start = await curl(['-X', 'POST', `${base}/v2/${repo}/blobs/uploads/`]);
  if (start.code !== 202) throw new Error(`POST → ${start.code}`);
  let loc = location(base, start.headers);
  if (mode === 'chunked') {
    for (let off = 0; off < size; off += CHUNK) {
      const end = Math.min(size, off + CHUNK) - 1;
      const r = await curl(['-X', 'PATCH', '-H', 'Content-Type: application/octet-stream', '-H', `Content-Range: ${off}-${end}`, '--upload-file', `${file}.${off}`, loc]);
      if (r.code !== 202) throw new Error(`PATCH → ${r.code}`);
      loc = location(base, r.headers);
    }
    const sep = loc.includes('?') ? '&' : '?';
    const done = await curl(['-X', 'PUT', '-H', 'Content-Length: 0', `${loc}${sep}digest=${digest}`]);
    if (done.code !== 201) throw new Error(`PUT → ${done.code}`);
  } else {
    const sep = loc.includes('?') ? '&' : '?';
    const done = await curl(['-X', 'PUT', '-H', 'Content-Type: application/octet-stream', '--upload-file', file, `${loc}${sep}digest=${digest}`]);
    if (done.code !== 201) throw new Error(`PUT → ${done.code}`);
  }
  return performance.now() - t0;
}

// The chunks as files of their own (curl uploads a whole file; splitting once keeps the pushes cheap).
await new Promise<void>((resolve, reject) => {
  const child = spawn('split', ['-b', String(CHUNK), '-d', '-a', '4', file, `${file}.part`], { stdio: 'inherit' });
  child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`split exited ${code}`))));
});
for (let off = 0, i = 0; off < size; off += CHUNK, i++) {
  await new Promise<void>((resolve, reject) => spawn('mv', [`${file}.part${String(i).padStart(4, '0')}`, `${file}.${off}`]).on('close', (c) => (c === 0 ? resolve() : reject(new Error('mv')))));
}

/**
 * One `POST …/blobs/uploads/?digest=` with the file as its body, streamed; resolves with the status.
 * Not curl: `--upload-file` appends the file's name to a URL whose path ends in `/`, and
 * `--data-binary @file` reads the whole file into memory first.
 */
async function singlePost(base: string, repo: string, path: string, length: number, d: string): Promise<number> {
  const res = await undiciRequest(`${base}/v2/${repo}/blobs/uploads/?digest=${d}`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(length) },
    body: createReadStream(path, { highWaterMark: MiB }),
  });
  await res.body.dump();
  return res.statusCode;
}

/** What a client does when the registry answers the single POST with 202: the monolithic push (POST, PUT with the body), with the same client. */
async function postThenPut(base: string, repo: string, path: string, length: number, d: string): Promise<number> {
  const start = await undiciRequest(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await start.body.dump();
  if (start.statusCode !== 202) return start.statusCode;
  const loc = new URL(String(start.headers.location), base);
  loc.searchParams.set('digest', d);
  const res = await undiciRequest(loc, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(length) },
    body: createReadStream(path, { highWaterMark: MiB }),
  });
  await res.body.dump();
  return res.statusCode;
}

/** Whether a registry completes a push in one `POST ?digest=` (201), by pushing a 1-byte blob so. */
async function takesSinglePost(base: string): Promise<boolean> {
  const probe = join(dir, 'probe');
  writeFileSync(probe, 'x');
  return (await singlePost(base, 'bench/probe', probe, 1, `sha256:${createHash('sha256').update('x').digest('hex')}`)) === 201;
}

const dist = await startDistribution();
const hc = await startHubcacheProcess({ ...(process.env.BIN ? { bin: process.env.BIN } : {}), args: ['--hosted-repositories', 'bench/**', '--upstream-url', 'http://127.0.0.1:9'] });
const sampler = new RssSampler(hc.child.pid!);
try {
  if (!(await takesSinglePost(hc.url))) throw new Error('hubcache did not take a single POST ?digest= push');
  const distSingle = await takesSinglePost(dist.url);
  const results: Record<Mode, { hc: number[]; dist: number[] }> = { monolithic: { hc: [], dist: [] }, chunked: { hc: [], dist: [] }, single: { hc: [], dist: [] } };
  for (let r = 0; r < rounds; r++) {
    for (const mode of ['monolithic', 'chunked', 'single'] as const) {
      // A fresh repository each time; the blob itself is the same, and both registries keep it: the
      // commit of content already stored is the same work for both (hash, then drop the temp file).
      const order = r % 2 === 0 ? ['hc', 'dist'] : ['dist', 'hc'];
      for (const who of order) {
        const ms = who === 'hc' ? await push(hc.url, `bench/r${r}-${mode}`, mode) : await push(dist.url, `bench/r${r}-${mode}`, mode === 'single' && !distSingle ? 'single-fallback' : mode);
        results[mode]![who as 'hc' | 'dist'].push(mbps(size, ms));
      }
    }
  }
  const rss = sampler.stop();
  process.stdout.write(`push of a ${sizeMiB} MiB blob, ${rounds} rounds (MiB/s, medians)${distSingle ? '' : '; distribution answers a single POST ?digest= with 202, so its "single" pushes are POST + PUT with the body, by the same client'}\n`);
  for (const [mode, r] of Object.entries(results)) {
    process.stdout.write(`  ${mode.padEnd(10)} hubcache ${fmt(median(r.hc), 0)}  distribution ${fmt(median(r.dist), 0)}  ratio ${fmt(median(ratios(r.hc, r.dist)))}  (hubcache runs: ${r.hc.map((x) => fmt(x, 0)).join(' ')}; distribution: ${r.dist.map((x) => fmt(x, 0)).join(' ')})\n`);
  }
  process.stdout.write(`  hubcache RSS: ${fmt(rss.startRssBytes / MiB, 0)} MiB before, ${fmt(rss.peakRssBytes / MiB, 0)} MiB peak during the pushes\n`);
  // For bench/run.ts (npm run bench), which runs this file and reads this line.
  process.stdout.write(`BENCH_JSON ${JSON.stringify({ sizeMiB, rounds, results, rss, distSingle })}\n`);
} finally {
  sampler.stop();
  await hc.close();
  await dist.close();
  rmSync(dir, { recursive: true, force: true });
}
