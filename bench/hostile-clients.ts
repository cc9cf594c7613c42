/**
 * `npx tsx bench/hostile-clients.ts`: what misbehaving clients cost a hubcache process (issue #11).
 *
 *   idle     2,000 sockets that never send a request and 20 half-sent request heads, from one
 *            address: the process's RSS before, with them, and once the headers timeout has passed
 *            (BENCH_IDLE_WAIT_S, default 75 s), and how many of them are still open then.
 *   stalled  500 clients (over 4 loopback addresses) that read the head of a cached 32 MiB blob and
 *            stop reading: RSS before, at the peak, and once the send timeout has passed
 *            (BENCH_STALL_WAIT_S, default 130 s: a stall is seen after one to two sendTimeouts),
 *            and how many client sockets the process still holds.
 *   flood    20,000 idle connections (over 4 addresses, from child processes: more than one process
 *            may open): whether `/v2/` and the cached blob are still served to another client, and
 *            the process's socket count.
 *
 * Measurements, not tests: they wait for time. Environment: BENCH_ONLY (e.g. "idle,stalled"),
 * BENCH_HUBCACHE_BIN (the CLI to run: another checkout's bin/hubcache.js, to compare with an older
 * version), BENCH_ARGS (extra hubcache flags, space-separated). Prints one JSON document.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readlinkSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { startHostileUpstream } from '../src/upstream/testing/hostile-registry.js';
import { startHubcacheProcess, type HubcacheProcess } from '../test/support/hubcache-process.js';
import { halfSentHead, idleSockets, stalledReader, type HostileSocket } from '../test/support/hostile-clients.js';
import { readRss } from './rss-sampler.js';

const MiB = 1024 * 1024;
const ONLY = new Set((process.env.BENCH_ONLY ?? 'idle,stalled,flood').split(','));
const IDLE_WAIT_S = Number(process.env.BENCH_IDLE_WAIT_S ?? 75);
const STALL_WAIT_S = Number(process.env.BENCH_STALL_WAIT_S ?? 130);
const ADDRESSES = ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'];
const log = (msg: string) => process.stderr.write(`[hostile ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const sleep = (s: number) => new Promise((r) => setTimeout(r, s * 1000));
const mb = (bytes: number | undefined) => (bytes === undefined ? undefined : Math.round(bytes / MiB));

function rssMb(hc: HubcacheProcess): number | undefined {
  return mb(readRss(hc.child.pid!)?.rssBytes);
}

/** Sockets the process holds (its file descriptors that are sockets). */
function socketCount(hc: HubcacheProcess): number {
  const dir = `/proc/${hc.child.pid}/fd`;
  let n = 0;
  for (const fd of readdirSync(dir)) {
    try {
      if (readlinkSync(`${dir}/${fd}`).startsWith('socket:')) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

function fdCount(hc: HubcacheProcess): number {
  return readdirSync(`/proc/${hc.child.pid}/fd`).length;
}

async function start(upstreamUrl: string): Promise<HubcacheProcess> {
  const args = (process.env.BENCH_ARGS ?? '').split(' ').filter(Boolean);
  return startHubcacheProcess({ upstreamUrl, args, bin: process.env.BENCH_HUBCACHE_BIN });
}

/** A GET on a fresh connection; `undefined` status when the connection brought no answer. */
async function probe(url: string, localAddress: string): Promise<{ status?: number; bytes: number; sha256?: string; error?: string }> {
  const { request } = await import('node:http');
  return new Promise((resolve) => {
    const u = new URL(url);
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, localAddress, agent: false, timeout: 30_000 }, (res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      res.on('data', (c: Buffer) => ((bytes += c.length), hash.update(c)));
      res.on('end', () => resolve({ status: res.statusCode, bytes, sha256: `sha256:${hash.digest('hex')}` }));
      res.on('error', (e) => resolve({ status: res.statusCode, bytes, error: e.message }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ bytes: 0, error: (e as NodeJS.ErrnoException).code ?? e.message }));
    req.end();
  });
}

async function idle(upstreamUrl: string): Promise<unknown> {
  const hc = await start(upstreamUrl);
  try {
    const before = rssMb(hc);
    const sockets: HostileSocket[] = await idleSockets(hc.url, 2000);
    sockets.push(...(await Promise.all(Array.from({ length: 20 }, () => halfSentHead(hc.url)))));
    await sleep(2);
    const withThem = { rssMb: rssMb(hc), clientSocketsOpen: sockets.filter((s) => !s.isClosed()).length, processSockets: socketCount(hc) };
    log(`idle: ${JSON.stringify(withThem)}; waiting ${IDLE_WAIT_S} s`);
    await sleep(IDLE_WAIT_S);
    const later = { rssMb: rssMb(hc), clientSocketsOpen: sockets.filter((s) => !s.isClosed()).length, processSockets: socketCount(hc), answered408: sockets.filter((s) => s.status() === 408).length };
    for (const s of sockets) s.destroy();
    return { clients: '2,000 idle sockets + 20 half-sent heads, one address', rssBeforeMb: before, withThem, [`after${IDLE_WAIT_S}s`]: later };
  } finally {
    await hc.close();
  }
}

async function stalled(upstreamUrl: string, digest: string): Promise<unknown> {
  const hc = await start(upstreamUrl);
  const path = `/v2/library/big/blobs/${digest}`;
  try {
    const warm = await probe(`${hc.url}${path}`, '127.0.0.1');
    if (warm.sha256 !== digest) throw new Error(`warm-up download failed: ${JSON.stringify(warm)}`);
    await sleep(1);
    const before = rssMb(hc);
    let peak = before ?? 0;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMb(hc) ?? 0)), 100);
    const readers = await Promise.all(Array.from({ length: 500 }, (_, i) => stalledReader(hc.url, path, { localAddress: ADDRESSES[i % ADDRESSES.length] }).catch((e: Error) => e)));
    const failed = readers.filter((r) => r instanceof Error).length;
    const statuses: Record<string, number> = {};
    for (const r of readers) if (!(r instanceof Error)) statuses[r.head.status] = (statuses[r.head.status] ?? 0) + 1;
    await sleep(5);
    const stalledState = { rssMb: rssMb(hc), processSockets: socketCount(hc), statuses, failed };
    log(`stalled: ${JSON.stringify(stalledState)}; waiting ${STALL_WAIT_S} s`);
    await sleep(STALL_WAIT_S);
    clearInterval(sampler);
    const later = { rssMb: rssMb(hc), processSockets: socketCount(hc) };
    const served = await probe(`${hc.url}${path}`, '127.0.0.5');
    for (const r of readers) if (!(r instanceof Error)) r.destroy();
    return { clients: '500 readers of a cached 32 MiB blob that stop after the head, 4 addresses', rssBeforeMb: before, after5s: stalledState, peakRssMb: peak, [`after${STALL_WAIT_S}s`]: later, anotherClientServed: served.sha256 === digest };
  } finally {
    await hc.close();
  }
}

/** A child process holding `n` idle connections from `localAddress`; prints `opened <ok> <failed>`. */
function holder(url: string, n: number, localAddress: string): { child: ChildProcess; opened: Promise<string> } {
  const u = new URL(url);
  const script = `
    const net = require('node:net');
    const socks = []; let ok = 0, failed = 0;
    const one = () => new Promise((res) => { const s = net.connect({ host: '${u.hostname}', port: ${u.port}, localAddress: '${localAddress}' });
      s.on('error', () => {}); s.once('connect', () => { ok++; socks.push(s); res(); }); s.once('close', () => res()); });
    (async () => { for (let i = 0; i < ${n}; i += 200) { const b = []; for (let k = 0; k < 200 && i + k < ${n}; k++) b.push(one()); await Promise.all(b); }
      failed = ${n} - ok; process.stdout.write('opened ' + ok + ' ' + failed + '\\n'); })();
    process.stdin.on('end', () => process.exit(0)); process.stdin.resume();`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const opened = once(child.stdout!, 'data').then(([d]) => String(d).trim());
  return { child, opened };
}

async function flood(upstreamUrl: string, digest: string): Promise<unknown> {
  const hc = await start(upstreamUrl);
  const path = `/v2/library/big/blobs/${digest}`;
  const holders: ChildProcess[] = [];
  try {
    await probe(`${hc.url}${path}`, '127.0.0.1');
    const before = { rssMb: rssMb(hc), fds: fdCount(hc) };
    const started = ADDRESSES.map((a) => holder(hc.url, 5000, a));
    holders.push(...started.map((h) => h.child));
    const opened = await Promise.all(started.map((h) => h.opened));
    await sleep(2);
    const during = { rssMb: rssMb(hc), fds: fdCount(hc), processSockets: socketCount(hc), holders: opened };
    const v2 = await probe(`${hc.url}/v2/`, '127.0.0.9');
    const blob = await probe(`${hc.url}${path}`, '127.0.0.9');
    return { clients: '20,000 idle connections, 4 addresses', before, during, anotherClient: { v2: v2.status ?? v2.error, blob: blob.sha256 === digest ? 'complete' : (blob.status ?? blob.error) } };
  } finally {
    for (const c of holders) c.stdin?.end();
    await Promise.all(holders.map((c) => (c.exitCode === null ? once(c, 'exit') : undefined)));
    await hc.close().catch(() => {});
  }
}

const blob = randomBytes(32 * MiB);
const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
const up = await startHostileUpstream((r) => void r.putBlob(blob));
const results: Record<string, unknown> = { hubcache: process.env.BENCH_HUBCACHE_BIN ?? 'this checkout', args: process.env.BENCH_ARGS ?? '' };
try {
  if (ONLY.has('idle')) results.idle = await idle(up.url);
  if (ONLY.has('stalled')) results.stalled = await stalled(up.url, digest);
  if (ONLY.has('flood')) results.flood = await flood(up.url, digest);
} finally {
  await up.close();
}
process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
