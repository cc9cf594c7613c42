/**
 * `npx tsx bench/walkaway.ts`: issue #11, point 8. CLIENTS clients each GET a different uncached
 * BLOB_MIB blob through hubcache and walk away after LEAVE_MS, against an upstream that paces every
 * blob body to LINK_MIBPS (so a download takes longer than the clients stay). Measured until the
 * upstream has been idle for 2 s: upstream downloads started, most running at once, completed and
 * cut off; bytes the upstream sent; peak temp data in the store; hubcache's peak RSS (VmHWM). Run
 * it on two checkouts to compare; hubcache runs with its defaults (compiled, as production runs).
 *
 * Environment: WALKAWAY_CLIENTS (100), WALKAWAY_BLOB_MIB (32), WALKAWAY_LINK_MIBPS (2),
 * WALKAWAY_LEAVE_MS (1000), WALKAWAY_DEADLINE_S (300).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BlobTap, startHostileUpstream, type TapSource } from '../src/upstream/testing/hostile-registry.js';
import { startHubcacheProcess } from '../test/support/hubcache-process.js';
import { rawRequest } from '../test/support/raw-http.js';
import { buildHubcache } from './build.js';
import { RssSampler } from './rss-sampler.js';
import { fmt, MiB } from './stats.js';

const CLIENTS = Number(process.env.WALKAWAY_CLIENTS ?? 100);
const BLOB = Number(process.env.WALKAWAY_BLOB_MIB ?? 32) * MiB;
const LINK = Number(process.env.WALKAWAY_LINK_MIBPS ?? 2) * MiB;
const LEAVE_MS = Number(process.env.WALKAWAY_LEAVE_MS ?? 1000);
const DEADLINE_MS = Number(process.env.WALKAWAY_DEADLINE_S ?? 300) * 1000;
const BLOCK = MiB;

const log = (msg: string) => process.stderr.write(`[walkaway] ${msg}\n`);

/** A blob of `size` bytes: one random 1 MiB block repeated (cheap to serve at any offset). */
function repeatedBlob(size: number): { digest: string; source: TapSource } {
  const block = randomBytes(BLOCK);
  const hash = createHash('sha256');
  for (let left = size; left > 0; left -= BLOCK) hash.update(left >= BLOCK ? block : block.subarray(0, left));
  const read = (offset: number, n: number): Buffer => {
    const at = offset % BLOCK;
    if (at + n <= BLOCK) return block.subarray(at, at + n);
    return Buffer.concat([block.subarray(at), read(offset + (BLOCK - at), n - (BLOCK - at))]);
  };
  return { digest: `sha256:${hash.digest('hex')}`, source: { size, read } };
}

/** Bytes the files under `dir` occupy on disk (allocated blocks). */
function diskUsage(dir: string): number {
  let total = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const n of names) {
    try {
      total += statSync(join(dir, n)).blocks * 512;
    } catch {
      /* removed meanwhile */
    }
  }
  return total;
}

function countCommitted(storagePath: string): number {
  const root = join(storagePath, 'blobs', 'sha256');
  try {
    return readdirSync(root).reduce((n, d) => n + readdirSync(join(root, d)).length, 0);
  } catch {
    return 0;
  }
}

async function main(): Promise<void> {
  const scratch = mkdtempSync(join(tmpdir(), 'hubcache-walkaway-'));
  const bin = buildHubcache(scratch, log);
  log(`generating ${CLIENTS} blobs of ${BLOB / MiB} MiB`);
  const blobs = new Map<string, TapSource>();
  for (let i = 0; i < CLIENTS; i++) {
    const b = repeatedBlob(BLOB);
    blobs.set(b.digest, b.source);
  }
  const tap = new BlobTap({ bytesPerSecond: LINK, source: (d) => blobs.get(d) });
  const up = await startHostileUpstream((r) => r.behave('walkaway/', tap.behaviour));
  const hc = await startHubcacheProcess({ upstreamUrl: up.url, bin, storagePath: join(scratch, 'store') });
  const tmp = join(hc.storagePath, 'tmp');
  try {
    await sleep(500); // let the process settle before the baseline sample
    const rss = new RssSampler(hc.child.pid!, 50);
    let peakTmp = 0;
    const sampler = setInterval(() => (peakTmp = Math.max(peakTmp, diskUsage(tmp))), 100);
    const started = Date.now();
    log(`${CLIENTS} clients, each gone after ${LEAVE_MS} ms; upstream paced to ${LINK / MiB} MiB/s per body`);
    const clients = [...blobs.keys()].map((digest) => {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), LEAVE_MS);
      return rawRequest(`${hc.url}/v2/walkaway/app/blobs/${digest}`, { signal: ac.signal, timeoutMs: LEAVE_MS + 60_000 });
    });
    const answered = await Promise.all(clients);
    // Until the upstream has been idle for 2 s (every download finished or cut off).
    let idleSince = Date.now();
    let lastSent = -1;
    for (;;) {
      await sleep(100);
      if (tap.open > 0 || tap.bytesSent !== lastSent) idleSince = Date.now();
      lastSent = tap.bytesSent;
      if (Date.now() - idleSince >= 2_000) break;
      if (Date.now() - started > DEADLINE_MS) {
        log('deadline reached with downloads still open');
        break;
      }
    }
    const upstreamIdleAfter = idleSince - started;
    clearInterval(sampler);
    peakTmp = Math.max(peakTmp, diskUsage(tmp));
    const mem = rss.stop();
    const metrics = await hc.metrics();
    const series = (name: string) =>
      metrics
        .split('\n')
        .filter((l) => l.startsWith(name))
        .map((l) => l.replace(/^hubcache_/, ''))
        .join(', ');
    const rows: Array<[string, string]> = [
      ['clients (each gone after)', `${CLIENTS} (${LEAVE_MS} ms; ${answered.filter((r) => (r.body.length ?? 0) > 0).length} got body bytes)`],
      ['upstream downloads started', String(tap.transfers.length)],
      ['upstream downloads running at once, most', String(tap.maxOpen)],
      ['upstream downloads completed / cut off', `${tap.completed} / ${tap.transfers.filter((t) => t.outcome === 'closed').length}`],
      ['bytes fetched from upstream', `${fmt(tap.bytesSent / MiB, 0)} MiB`],
      ['peak temp data in the store', `${fmt(peakTmp / MiB, 0)} MiB`],
      ['blobs committed', String(countCommitted(hc.storagePath))],
      ['hubcache RSS: before → peak (VmHWM)', `${fmt(mem.startRssBytes / MiB, 0)} → ${fmt(mem.hwmBytes / MiB, 0)} MiB`],
      ['upstream idle after', `${fmt(upstreamIdleAfter / 1000, 1)} s`],
      ['fill metrics', [series('hubcache_fills_committed_total'), series('hubcache_fills_abandoned_total'), series('hubcache_fills_failed_total')].filter(Boolean).join('; ')],
    ];
    process.stdout.write(`\n| measure | value |\n| --- | --- |\n${rows.map(([k, v]) => `| ${k} | ${v} |`).join('\n')}\n`);
  } finally {
    await hc.close();
    await up.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
