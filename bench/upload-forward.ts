/**
 * Uploads across replicas (issue #15): what passing a push's requests on to the replica holding the
 * session costs. Two `hubcache serve` processes with `cluster` set on one redis-server (each on its
 * own filesystem store: the bytes go to the owner's store either way). A push as skopeo and docker
 * do it — POST, one PATCH with the whole blob (streamed by curl from a file), an empty PUT ?digest= —
 * either all on replica A (direct) or POST on A and the PATCH and PUT on B (passed on to A through
 * B's forwarder: every byte crosses one more loopback hop). Alternating, several rounds; prints
 * medians of the throughput, the median of the per-round ratios forwarded ÷ direct, and B's RSS
 * before and at its peak (the body is streamed, never held: it must stay flat).
 *
 *   tsx bench/upload-forward.ts [sizeMiB] [rounds]     default: 512 MiB, 5 rounds
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../test/support/distribution.js';
import { startHubcacheProcess, type HubcacheProcess } from '../test/support/hubcache-process.js';
import { startRedis } from '../test/support/redis.js';
import { RssSampler } from './rss-sampler.js';
import { curl, writeBlobFile } from './upload-blob.js';
import { fmt, mbps, median, MiB, ratios } from './stats.js';

const sizeMiB = Number(process.argv[2] ?? 512);
const rounds = Number(process.argv[3] ?? 5);
const size = sizeMiB * MiB;

const dir = mkdtempSync(join(tmpdir(), 'hubcache-bench-upload-forward-'));
const { file, digest } = writeBlobFile(dir, sizeMiB, 'bench-upload-forward-key');


/** One push: POST on `first`, PATCH and PUT on `rest`; the ms from the POST to the final 201. */
async function push(first: HubcacheProcess, rest: HubcacheProcess, repo: string): Promise<number> {
  const t0 = performance.now();
  const start = await curl(['-X', 'POST', `${first.url}/v2/${repo}/blobs/uploads/`]);
  if (start.code !== 202) throw new Error(`POST → ${start.code}`);
  const path = /^location:\s*(\S+)/im.exec(start.headers)![1]!;
  const patched = await curl(['-X', 'PATCH', '-H', 'Content-Type: application/octet-stream', '--upload-file', file, `${rest.url}${path}`]);
  if (patched.code !== 202) throw new Error(`PATCH → ${patched.code}`);
  const done = await curl(['-X', 'PUT', '-H', 'Content-Length: 0', `${rest.url}${path}?digest=${digest}`]);
  if (done.code !== 201) throw new Error(`PUT → ${done.code}`);
  return performance.now() - t0;
}

const redis = await startRedis();
const start = async () => {
  const peer = await freePort();
  return startHubcacheProcess({
    ...(process.env.BIN ? { bin: process.env.BIN } : {}),
    args: ['--hosted-repositories', 'bench/**', '--upstream-url', 'http://127.0.0.1:9', '--cluster-redis-url', redis.url, '--cluster-peer-listen', `127.0.0.1:${peer}`, '--cluster-advertise-url', `http://127.0.0.1:${peer}`],
  });
};
const a = await start();
const b = await start();
const sampler = new RssSampler(b.child.pid!);
try {
  const results = { direct: [] as number[], forwarded: [] as number[] };
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? (['direct', 'forwarded'] as const) : (['forwarded', 'direct'] as const);
    for (const how of order) results[how].push(mbps(size, await push(a, how === 'direct' ? a : b, `bench/r${r}-${how}`)));
  }
  const rss = sampler.stop();
  process.stdout.write(`push of a ${sizeMiB} MiB blob (POST, one PATCH, PUT), ${rounds} rounds (MiB/s, medians)\n`);
  process.stdout.write(`  direct (all on the owner) ${fmt(median(results.direct), 0)}  forwarded (PATCH and PUT through another replica) ${fmt(median(results.forwarded), 0)}  ratio forwarded ÷ direct ${fmt(median(ratios(results.forwarded, results.direct)))}\n`);
  process.stdout.write(`  runs: direct ${results.direct.map((x) => fmt(x, 0)).join(' ')}; forwarded ${results.forwarded.map((x) => fmt(x, 0)).join(' ')}\n`);
  process.stdout.write(`  forwarding replica RSS: ${fmt(rss.startRssBytes / MiB, 0)} MiB before, ${fmt(rss.peakRssBytes / MiB, 0)} MiB peak\n`);
  process.stdout.write(`BENCH_JSON ${JSON.stringify({ sizeMiB, rounds, results, rss })}\n`);
} finally {
  sampler.stop();
  await Promise.all([a.close(), b.close()]);
  await redis.close();
  rmSync(dir, { recursive: true, force: true });
}
