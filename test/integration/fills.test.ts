/**
 * Issue #11, point 8: a client could start unlimited concurrent downloads and walk away. Here the
 * whole hubcache runs in-process in front of an upstream whose blob bodies are held after a few
 * bytes (BlobTap), so every download stays open until the test lets it go: what reaches the
 * upstream, what is cancelled and what is left on disk are counted, never timed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sha256Digest } from '../../src/domain/digest.js';
import { BlobTap, startHostileUpstream, type HostileUpstream } from '../../src/upstream/testing/hostile-registry.js';
import { metricValue } from '../support/hubcache-process.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';
import { rawRequest, type RawResponse } from '../support/raw-http.js';

const KiB = 1024;
const MiB = 1024 * KiB;

function tmpFiles(storagePath: string): string[] {
  try {
    return readdirSync(join(storagePath, 'tmp'));
  } catch {
    return [];
  }
}

/** Resolves once `n` log lines match `pred` (past or future). */
async function logLines(hc: InProcessHubcache, n: number, pred: (l: Record<string, unknown>) => boolean): Promise<Array<Record<string, unknown>>> {
  const seen = new Set<Record<string, unknown>>();
  while (seen.size < n) seen.add(await hc.waitForLog((l) => pred(l) && !seen.has(l)));
  return [...seen];
}

async function scrape(hc: InProcessHubcache): Promise<string> {
  return (await fetch(`${hc.hub.metricsUrl}/metrics`)).text();
}

/** A GET that walks away when `leave()` is called; `firstByte` resolves with the first body bytes. */
function walkingClient(url: string) {
  const ac = new AbortController();
  let gotBytes!: () => void;
  const firstByte = new Promise<void>((r) => (gotBytes = r));
  const response = rawRequest(url, { signal: ac.signal, onData: () => gotBytes(), timeoutMs: 60_000 });
  return { response, firstByte, leave: () => ac.abort() };
}

describe('bounded blob fills in front of a holding upstream (issue #11, point 8)', () => {
  let up: HostileUpstream;
  let hc: InProcessHubcache;
  const walkaway = new BlobTap({ holdAfter: 256 * KiB });
  const shared = new BlobTap({ holdAfter: 256 * KiB });
  const mostly = new BlobTap({ holdAfter: 3 * MiB });

  before(async () => {
    up = await startHostileUpstream((r) => {
      r.behave('walkaway/', walkaway.behaviour);
      r.behave('shared/', shared.behaviour);
      r.behave('mostly/', mostly.behaviour);
    });
    hc = await startInProcess({
      flags: { 'upstream-url': up.url },
      config: {
        cache: {
          maxConcurrentFills: 2,
          // No grace: the budget decides as soon as the last client is gone.
          abandonedFills: { grace: '0s', minProgressToFinish: 0.5, maxRemainingToFinish: '1MiB' },
        },
      },
    });
  });

  after(async () => {
    await hc?.close();
    await up?.close();
  });

  it('6 clients ask for 6 different uncached 4 MiB blobs and walk away: 2 upstream downloads at most, the 4 queued never reach upstream, the 2 running are cancelled with no temp data left; a later GET downloads afresh', async () => {
    const blobs = Array.from({ length: 6 }, () => randomBytes(4 * MiB));
    const digests = blobs.map((b) => up.registry.putBlob(b));
    const clients = digests.map((d) => walkingClient(`${hc.url}/v2/walkaway/app/blobs/${d}`));
    // Two downloads start and stream to their clients; the other four wait for a slot.
    await walkaway.started(2);
    await logLines(hc, 4, (l) => l.message === 'fill queued');
    let text = await scrape(hc);
    assert.equal(metricValue(text, 'hubcache_fills_queued'), 4);
    assert.equal(metricValue(text, 'hubcache_fills_in_flight'), 2);
    assert.equal(walkaway.transfers.length, 2, 'only two downloads reached the upstream');

    for (const c of clients) c.leave();
    await logLines(hc, 4, (l) => l.message === 'fill dropped from the queue');
    await logLines(hc, 2, (l) => l.message === 'fill cancelled');
    const outcomes = await Promise.all(walkaway.transfers.map((t) => t.ended));
    assert.deepEqual(outcomes, ['closed', 'closed'], 'the upstream requests were aborted');
    assert.equal(walkaway.transfers.length, 2);
    assert.equal(walkaway.maxOpen, 2);
    assert.deepEqual(tmpFiles(hc.storagePath), [], 'the temp data is gone');
    text = await scrape(hc);
    assert.equal(metricValue(text, 'hubcache_fills_abandoned_total', { decision: 'dropped' }), 4);
    assert.equal(metricValue(text, 'hubcache_fills_abandoned_total', { decision: 'cancelled' }), 2);
    assert.equal(metricValue(text, 'hubcache_fills_queued'), 0);
    assert.equal(metricValue(text, 'hubcache_fills_in_flight'), 0);
    assert.equal(metricValue(text, 'hubcache_fills_failed_total'), 0, 'a cancelled download is not a failure');
    assert.equal(metricValue(text, 'hubcache_fills_queue_wait_seconds_count'), 2, 'only the two that started waited for a slot');

    walkaway.release();
    const again = await rawRequest(`${hc.url}/v2/walkaway/app/blobs/${digests[5]}`, { timeoutMs: 60_000 });
    assert.equal(again.status, 200);
    assert.equal(again.outcome, 'complete');
    assert.equal(sha256Digest(again.body), digests[5]);
    assert.equal(walkaway.transfers.length, 3, 'a fresh download');
    await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === digests[5]);
  });

  it('a download with a client still reading is never cancelled because another client left', async () => {
    const bytes = randomBytes(4 * MiB);
    const digest = up.registry.putBlob(bytes);
    const url = `${hc.url}/v2/shared/app/blobs/${digest}`;
    const leaver = walkingClient(url);
    await leaver.firstByte;
    let stayerGotBytes!: () => void;
    const stayerFirstByte = new Promise<void>((r) => (stayerGotBytes = r));
    const stayer = rawRequest(url, { onData: () => stayerGotBytes(), timeoutMs: 60_000 });
    await stayerFirstByte;
    leaver.leave();
    await leaver.response;
    shared.release();
    const r: RawResponse = await stayer;
    assert.equal(r.outcome, 'complete');
    assert.equal(sha256Digest(r.body), digest);
    await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === digest);
    assert.equal(shared.transfers.length, 1);
    assert.ok(!hc.logs.some((l) => l.message === 'fill cancelled' && l.digest === digest));
  });

  it('a download past minProgressToFinish whose client walked away goes on and is committed: the next GET is a hit', async () => {
    const bytes = randomBytes(4 * MiB);
    const digest = up.registry.putBlob(bytes);
    const url = `${hc.url}/v2/mostly/app/blobs/${digest}`;
    const partial = await rawRequest(url, { stopAfterBytes: 3 * MiB, timeoutMs: 60_000 });
    assert.equal(partial.status, 200);
    const decided = await hc.waitForLog((l) => l.message === 'fill continues without clients' && l.digest === digest);
    assert.equal(decided.received, 3 * MiB);
    mostly.release();
    await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === digest);
    const hit = await rawRequest(url);
    assert.equal(hit.headers['x-hubcache-cache'], 'hit');
    assert.equal(sha256Digest(hit.body), digest);
    assert.equal(mostly.transfers.length, 1);
    assert.equal(metricValue(await scrape(hc), 'hubcache_fills_abandoned_total', { decision: 'continued' }), 1);
  });
});

describe('abandoned-fill grace and shutdown with a fill queue', () => {
  let up: HostileUpstream;
  let hc: InProcessHubcache;
  const tap = new BlobTap({ holdAfter: 256 * KiB });

  before(async () => {
    up = await startHostileUpstream((r) => r.behave('held/', tap.behaviour));
    hc = await startInProcess({
      flags: { 'upstream-url': up.url },
      config: { cache: { maxConcurrentFills: 1, abandonedFills: { grace: '1h', minProgressToFinish: 1, maxRemainingToFinish: 0 } } },
    });
  });

  after(async () => {
    await hc?.close();
    await up?.close();
  });

  it('a client that comes back within the grace with a Range request (a resumed connection) keeps the download: one upstream GET', async () => {
    const bytes = randomBytes(2 * MiB);
    const digest = up.registry.putBlob(bytes);
    const url = `${hc.url}/v2/held/app/blobs/${digest}`;
    const first = await rawRequest(url, { stopAfterBytes: 100 * KiB });
    assert.equal(first.status, 200);
    const resumeAt = first.body.length;
    const resumed = rawRequest(url, { headers: { range: `bytes=${resumeAt}-` }, timeoutMs: 60_000 });
    await tap.started(1);
    tap.transfers[0]!.release();
    const r = await resumed;
    assert.equal(r.status, 206);
    assert.ok(Buffer.concat([first.body, r.body]).equals(bytes));
    await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === digest);
    assert.equal(tap.transfers.length, 1);
    assert.ok(!hc.logs.some((l) => l.message === 'fill cancelled'));
  });

  it('shutdown drops the queued download (its client gets 503) and waits for the running one', async () => {
    const running = randomBytes(MiB);
    const queued = randomBytes(MiB);
    const runningDigest = up.registry.putBlob(running);
    const queuedDigest = up.registry.putBlob(queued);
    let gotBytes!: () => void;
    const firstByte = new Promise<void>((r) => (gotBytes = r));
    const reader = rawRequest(`${hc.url}/v2/held/app/blobs/${runningDigest}`, { onData: () => gotBytes(), timeoutMs: 60_000 });
    await firstByte;
    const waiter = rawRequest(`${hc.url}/v2/held/app/blobs/${queuedDigest}`, { timeoutMs: 60_000 });
    await hc.waitForLog((l) => l.message === 'fill queued' && l.digest === queuedDigest);
    const closed = hc.close(30_000);
    const refused = await waiter;
    assert.equal(refused.status, 503);
    assert.match(refused.body.toString(), /UNAVAILABLE/);
    tap.transfers.at(-1)!.release();
    const r = await reader;
    assert.equal(r.outcome, 'complete');
    assert.equal(sha256Digest(r.body), runningDigest);
    await closed;
    assert.equal((await hc.waitForLog((l) => l.message === 'hubcache stopped')).outcome, 'drained');
    assert.equal(tap.transfers.filter((t) => t.digest === queuedDigest).length, 0, 'the queued blob never reached the upstream');
  });
});
