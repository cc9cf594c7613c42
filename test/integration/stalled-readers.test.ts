/**
 * Issue #11, point 7: clients that stop reading a blob no longer hold their buffers forever.
 * Stored blobs stream through a bounded shared pool, and a response whose client stops reading is
 * aborted after server.sendTimeout (1 s here), whatever feeds it (the store, or a download in
 * flight). The tests wait for the server's log lines and the clients' connections, never for time.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { sha256Digest } from '../../src/domain/digest.js';
import { startHostileUpstream, type HostileUpstream } from '../../src/upstream/testing/hostile-registry.js';
import { metricValue } from '../support/hubcache-process.js';
import { stalledReader, walkAway } from '../support/hostile-clients.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';

const MiB = 1024 * 1024;
// On today's code a stalled response is never aborted: the test must fail, not hang.
const TEST_TIMEOUT = 60_000;
type LogLine = Record<string, unknown>;

const isSendTimeout = (l: LogLine) => l.message === 'send timeout: the client stopped reading, response aborted';

describe('clients that stop reading (issue #11, point 7)', () => {
  let up: HostileUpstream;
  let hc: InProcessHubcache;
  // Larger than what the loopback's socket buffers take in (a few MB) before writes stall.
  const stored = randomBytes(32 * MiB);
  const storedDigest = sha256Digest(stored);
  const cold = randomBytes(32 * MiB);
  const coldDigest = sha256Digest(cold);
  const blobPath = (digest: string) => `/v2/library/big/blobs/${digest}`;

  before(async () => {
    up = await startHostileUpstream((r) => {
      r.putBlob(stored);
      r.putBlob(cold);
    });
    // A pool of 4 buffers: 6 stalled readers need more than it has.
    hc = await startInProcess({ config: { server: { sendTimeout: '1s', blobBufferPool: '4MiB' } }, flags: { 'upstream-url': up.url } });
    const warm = await fetch(`${hc.url}${blobPath(storedDigest)}`);
    assert.equal(sha256Digest(Buffer.from(await warm.arrayBuffer())), storedDigest);
    await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === storedDigest);
  });
  after(async () => {
    await hc?.close();
    await up?.close();
  });

  async function metrics(): Promise<string> {
    return hc.hub.metrics.registry.metrics();
  }

  it('stored-blob responses whose clients stopped reading are aborted after server.sendTimeout, their pooled buffers returned; the blob is served in full meanwhile and after', { timeout: TEST_TIMEOUT }, async () => {
    const readers = await Promise.all(Array.from({ length: 6 }, (_, i) => stalledReader(hc.url, blobPath(storedDigest), { headers: { 'x-request-id': `stalled-${i}` } })));
    for (const r of readers) assert.equal(r.head.status, 200);
    assert.equal(readers[0]!.head.headers['x-hubcache-cache'], 'hit');

    // While they hold their buffers, another client is served (the pool's fallback buffer, if need be).
    const during = await fetch(`${hc.url}${blobPath(storedDigest)}`);
    assert.equal(sha256Digest(Buffer.from(await during.arrayBuffer())), storedDigest);

    await hc.waitForLog((l) => isSendTimeout(l) && hc.logs.filter(isSendTimeout).length >= 6);
    const aborted = hc.logs.filter(isSendTimeout).map((l) => l.requestId);
    assert.deepEqual(new Set(aborted), new Set(readers.map((_, i) => `stalled-${i}`)));
    for (const r of readers) {
      const { bodyBytes, complete } = await r.resume();
      assert.equal(complete, false, 'the connection is closed before the body is complete');
      assert.ok(bodyBytes > 0 && bodyBytes < stored.length);
    }
    const text = await metrics();
    assert.equal(metricValue(text, 'hubcache_http_timeouts_total', { kind: 'send' }), 6);
    assert.equal(metricValue(text, 'hubcache_blob_buffer_pool_bytes', { state: 'in_use' }), 0, 'every pooled buffer is back');
    assert.ok(metricValue(text, 'hubcache_blob_buffer_pool_bytes', { state: 'idle' }) <= 4 * MiB, 'the pool never grows past its size');
    assert.ok(metricValue(text, 'hubcache_blob_buffer_pool_fallbacks_total') >= 2, 'six readers of four buffers: some streamed through their own');

    const afterwards = await fetch(`${hc.url}${blobPath(storedDigest)}`);
    assert.equal(sha256Digest(Buffer.from(await afterwards.arrayBuffer())), storedDigest);
    assert.equal(metricValue(await metrics(), 'hubcache_blob_buffer_pool_bytes', { state: 'in_use' }), 0);
  });

  it('clients that walk away mid-blob return their buffers at once', { timeout: TEST_TIMEOUT }, async () => {
    const left = await Promise.all(Array.from({ length: 8 }, (_, i) => walkAway(hc.url, blobPath(storedDigest), MiB, { headers: { 'x-request-id': `walked-${i}` } })));
    for (const l of left) assert.ok(l.bodyBytes >= MiB && l.bodyBytes < stored.length);
    // Logged by the blob handler once the body let go of its file and buffers (as an error when a
    // write failed — a reset — before the connection's close was seen).
    const ends = new Set(['blob stream ended early: the client connection closed', 'blob stream aborted']);
    const released = (l: LogLine) => ends.has(String(l.message)) && String(l.requestId).startsWith('walked-');
    await hc.waitForLog((l) => released(l) && hc.logs.filter(released).length >= 8);
    assert.equal(metricValue(await metrics(), 'hubcache_blob_buffer_pool_bytes', { state: 'in_use' }), 0);
  });

  it('a client that stops reading a blob being downloaded is aborted too; the download commits all the same', { timeout: TEST_TIMEOUT }, async () => {
    const reader = await stalledReader(hc.url, blobPath(coldDigest), { headers: { 'x-request-id': 'stalled-follower' } });
    assert.equal(reader.head.headers['x-hubcache-cache'], 'miss');
    await hc.waitForLog((l) => isSendTimeout(l) && l.requestId === 'stalled-follower');
    await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === coldDigest);
    assert.equal((await reader.resume()).complete, false);
    const hit = await fetch(`${hc.url}${blobPath(coldDigest)}`);
    assert.equal(hit.headers.get('x-hubcache-cache'), 'hit');
    assert.equal(sha256Digest(Buffer.from(await hit.arrayBuffer())), coldDigest);
  });
});
