/**
 * Blobs through the HTTP layer: a miss streams and fills the store, a hit costs nothing upstream,
 * Range (206, suffix, open-ended, 416) on cached blobs and on downloads in flight, one download
 * for concurrent misses, a fill that outlives the client that started it, resumes, wrong bytes
 * never ending cleanly, and Docker Hub's CDN redirect without the token.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { cdnHandler, FakeRegistry, LoopbackServer } from '../../src/upstream/testing/fake-registry.js';
import { pullTogether, startApp, type AppHarness } from '../support/app-harness.js';
import { blobRequests, digestOf, putImage, seededBytes, type FakeBlob } from '../support/oci-fixtures.js';
import { rawRequest } from '../support/raw-http.js';

const MiB = 1024 * 1024;

/** One blob in the default upstream, in no manifest (blobs are fetched by digest alone). */
function putBlob(hc: AppHarness, seed: string, size: number): FakeBlob {
  const bytes = seededBytes(seed, size);
  return { digest: hc.registry.putBlob(bytes), bytes };
}

/**
 * The first upstream GET of `digest` sends its head and `afterBytes` bytes, then stalls until
 * `release()`; Range requests and later GETs are answered normally.
 */
function stallAfter(registry: FakeRegistry, blob: FakeBlob, afterBytes: number) {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let stalled!: () => void;
  const reached = new Promise<void>((r) => (stalled = r));
  let used = false;
  const previous = registry.hook;
  registry.hook = (req: IncomingMessage, res: ServerResponse) => {
    if (previous?.(req, res)) return true;
    if (used || req.method !== 'GET' || req.headers.range || !req.url?.endsWith(`/blobs/${blob.digest}`)) return false;
    used = true;
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.bytes.length });
    res.write(blob.bytes.subarray(0, afterBytes), () => stalled());
    void released.then(() => res.end(blob.bytes.subarray(afterBytes)));
    return true;
  };
  return { reached, release };
}

describe('blobs', () => {
  let hc: AppHarness;

  before(async () => {
    hc = await startApp();
  });
  after(() => hc.close());

  const blobPath = (b: FakeBlob, repo = 'library/app') => `/v2/${repo}/blobs/${b.digest}`;
  const blobGets = (b: FakeBlob) => hc.upstreamServer.count((r) => r.method === 'GET' && r.url.endsWith(b.digest));

  it('a miss streams from upstream and fills the store; then GET and HEAD are hits with no upstream request', async () => {
    const blob = putBlob(hc, 'miss-then-hit', 300 * 1024);
    const first = await hc.pull(blobPath(blob));
    assert.equal(first.status, 200);
    assert.ok(first.body.equals(blob.bytes));
    assert.equal(first.cache, 'miss');
    assert.equal(first.digest, blob.digest);
    assert.equal(first.headers.get('etag'), `"${blob.digest}"`);
    assert.equal(first.headers.get('accept-ranges'), 'bytes');
    assert.equal(first.headers.get('content-type'), 'application/octet-stream');
    assert.equal(Number(first.headers.get('content-length')), blob.bytes.length);
    await hc.settle();
    assert.deepEqual(await hc.stores.blobs.stat(blob.digest), { digest: blob.digest, size: blob.bytes.length });

    const before = hc.upstreamServer.requests.length;
    const again = await hc.pull(blobPath(blob, 'other/repo'));
    assert.equal(again.cache, 'hit');
    assert.equal(again.headers.get('cache-control'), 'max-age=31536000');
    assert.ok(again.body.equals(blob.bytes), 'content is shared by digest across repositories');
    const head = await rawRequest(`${hc.url}${blobPath(blob)}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(Number(head.headers['content-length']), blob.bytes.length);
    assert.equal(head.body.length, 0);
    assert.equal(hc.upstreamServer.requests.length, before, 'hits cost no upstream request');
  });

  it('HEAD of an uncached blob asks upstream with one HEAD and downloads nothing', async () => {
    const blob = putBlob(hc, 'head-only', 10_000);
    const head = await rawRequest(`${hc.url}${blobPath(blob)}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(Number(head.headers['content-length']), 10_000);
    assert.equal(head.headers['docker-content-digest'], blob.digest);
    assert.deepEqual(
      hc.upstreamServer.requests.filter((r) => r.url.endsWith(blob.digest)).map((r) => r.method),
      ['HEAD'],
    );
    assert.equal(await hc.stores.blobs.stat(blob.digest), undefined);
  });

  it('Range on a cached blob: 206 with Content-Range, suffix and open ranges, clamped ends, 416 with the size', async () => {
    const blob = putBlob(hc, 'ranges', 5000);
    await hc.pull(blobPath(blob));
    await hc.settle();
    const size = blob.bytes.length;
    const cases: Array<[string, number, [number, number] | undefined]> = [
      ['bytes=100-1099', 206, [100, 1099]],
      ['bytes=0-0', 206, [0, 0]],
      ['bytes=-10', 206, [size - 10, size - 1]],
      ['bytes=-99999', 206, [0, size - 1]],
      [`bytes=${size - 5}-`, 206, [size - 5, size - 1]],
      [`bytes=4000-${size + 100}`, 206, [4000, size - 1]],
      [`bytes=${size}-`, 416, undefined],
      ['bytes=-0', 416, undefined],
      ['bytes=20-10', 416, undefined],
      ['bytes=1-x', 416, undefined],
      ['bytes=', 416, undefined],
    ];
    for (const [range, status, span] of cases) {
      const res = await rawRequest(`${hc.url}${blobPath(blob)}`, { headers: { range } });
      assert.equal(res.status, status, range);
      if (span) {
        assert.equal(res.headers['content-range'], `bytes ${span[0]}-${span[1]}/${size}`, range);
        assert.equal(Number(res.headers['content-length']), span[1] - span[0] + 1, range);
        assert.ok(res.body.equals(blob.bytes.subarray(span[0], span[1] + 1)), range);
      } else {
        assert.equal(JSON.parse(res.body.toString()).errors[0].code, 'RANGE_INVALID', range);
      }
    }
    const unsatisfiable = await rawRequest(`${hc.url}${blobPath(blob)}`, { headers: { range: `bytes=${size}-` } });
    assert.equal(unsatisfiable.headers['content-range'], `bytes */${size}`);
    // RFC 9110 §14.2: a range unit the server does not understand is ignored.
    const otherUnit = await rawRequest(`${hc.url}${blobPath(blob)}`, { headers: { range: 'lines=1-2' } });
    assert.equal(otherUnit.status, 200);
    assert.ok(otherUnit.body.equals(blob.bytes));
    const head = await rawRequest(`${hc.url}${blobPath(blob)}`, { method: 'HEAD', headers: { range: 'bytes=10-19' } });
    assert.equal(head.status, 206);
    assert.equal(head.headers['content-range'], `bytes 10-19/${size}`);
    assert.equal(head.body.length, 0);
  });

  it('a Range request for an uncached blob is answered from the download, which goes on to fill the store', async () => {
    const blob = putBlob(hc, 'range-miss', 200_000);
    const res = await rawRequest(`${hc.url}${blobPath(blob)}`, { headers: { range: 'bytes=1000-1999' } });
    assert.equal(res.status, 206);
    assert.ok(res.body.equals(blob.bytes.subarray(1000, 2000)));
    await hc.settle();
    assert.equal((await hc.stores.blobs.stat(blob.digest))?.size, blob.bytes.length, 'the whole blob was cached');
    assert.equal(blobGets(blob), 1);
  });

  it('a Range far beyond the bytes downloaded so far is fetched from upstream on its own while the fill goes on', async () => {
    const blob = putBlob(hc, 'range-far', 6 * MiB);
    const stall = stallAfter(hc.registry, blob, 64 * 1024);
    const whole = rawRequest(`${hc.url}${blobPath(blob)}`);
    await stall.reached;
    const start = blob.bytes.length - 5000;
    const part = await rawRequest(`${hc.url}${blobPath(blob)}`, { headers: { range: `bytes=${start}-${start + 999}` } });
    assert.equal(part.status, 206);
    assert.ok(part.body.equals(blob.bytes.subarray(start, start + 1000)));
    assert.ok(hc.upstreamServer.requests.some((r) => r.headers.range === `bytes=${start}-`), 'a Range request went upstream');
    stall.release();
    assert.ok((await whole).body.equals(blob.bytes));
    await hc.settle();
    assert.equal((await hc.stores.blobs.stat(blob.digest))?.size, blob.bytes.length);
  });

  it('concurrent misses share one upstream download; every client gets every byte', async () => {
    const blob = putBlob(hc, 'concurrent', 1 * MiB);
    const pulls = await pullTogether(hc, blobPath(blob), 4, 'blob', (req) => req.method === 'GET' && req.url!.endsWith(blob.digest));
    for (const res of pulls) {
      assert.equal(res.status, 200);
      assert.ok(res.body.equals(blob.bytes));
    }
    assert.equal(blobGets(blob), 1);
  });

  it('each client that followed a download to the last byte reports the tail it added (hubcache_fill_tail_seconds); a hit and a Range that stops short do not', async () => {
    const series = async (suffix: '_count' | '_sum') => {
      const m = await hc.metrics.registry.getSingleMetric('hubcache_fill_tail_seconds')!.get();
      return m.values.find((v) => (v as { metricName?: string }).metricName === `hubcache_fill_tail_seconds${suffix}`)?.value ?? 0;
    };
    const before = hc.metrics.fillTails;
    const blob = putBlob(hc, 'tail', 1 * MiB);
    const pulls = await pullTogether(hc, blobPath(blob), 3, 'blob', (req) => req.method === 'GET' && req.url!.endsWith(blob.digest));
    for (const res of pulls) assert.ok(res.body.equals(blob.bytes));
    await hc.metrics.untilFillTails(before + 3);
    assert.equal(await series('_count'), before + 3, 'exported: one observation per client that followed the download');
    assert.ok((await series('_sum')) >= 0);

    // Neither a hit nor a Range that ends before the last byte waits for the fill's tail. Both are
    // answered in full before the next whole-blob miss, whose tail is then the only one added.
    await hc.settle();
    assert.equal((await hc.pull(blobPath(blob))).status, 200);
    const short = putBlob(hc, 'tail-range', 1 * MiB);
    const ranged = await hc.pull(blobPath(short), { headers: { range: 'bytes=0-1023' } });
    assert.equal(ranged.status, 206);
    await hc.settle();
    const last = putBlob(hc, 'tail-last', 256 * 1024);
    assert.equal((await hc.pull(blobPath(last))).status, 200);
    await hc.metrics.untilFillTails(before + 4);
    await hc.settle();
    assert.equal(hc.metrics.fillTails, before + 4, 'the hit and the short Range reported none');
  });

  it('the download belongs to the cache: the client that started it may leave, the blob is still cached', async () => {
    const blob = putBlob(hc, 'leaver', 2 * MiB);
    const stall = stallAfter(hc.registry, blob, 256 * 1024);
    const left = await rawRequest(`${hc.url}${blobPath(blob)}`, { stopAfterBytes: 1024, headers: { 'x-request-id': 'leaves-early' } });
    assert.equal(left.status, 200);
    const line = await hc.waitForLog((l) => l.message === 'request' && l.requestId === 'leaves-early');
    assert.equal(line.aborted, true, 'hubcache saw the client go');
    stall.release();
    await hc.settle();
    assert.equal((await hc.stores.blobs.stat(blob.digest))?.size, blob.bytes.length);
    assert.equal(blobGets(blob), 1);
  });

  it('a broken upstream connection is resumed with a Range request; the client sees one clean body', async () => {
    const blob = putBlob(hc, 'resume', 512 * 1024);
    let broke = false;
    hc.registry.hook = (req, res) => {
      if (broke || req.method !== 'GET' || !req.url!.endsWith(blob.digest)) return false;
      broke = true;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.bytes.length });
      res.write(blob.bytes.subarray(0, 100_000), () => res.destroy());
      return true;
    };
    try {
      const resumedBefore = await hc.metrics.value('hubcache_fills_resumed_total');
      const res = await rawRequest(`${hc.url}${blobPath(blob)}`);
      assert.equal(res.outcome, 'complete');
      assert.ok(res.body.equals(blob.bytes));
      await hc.settle();
      assert.equal(await hc.metrics.value('hubcache_fills_resumed_total'), resumedBefore + 1);
      const ranged = hc.upstreamServer.requests.filter((r) => r.url.endsWith(blob.digest) && r.headers.range);
      assert.equal(ranged.length, 1);
      assert.match(ranged[0]!.headers.range!, /^bytes=\d+-$/);
    } finally {
      hc.registry.hook = undefined;
    }
  });

  it('bytes that do not match the digest never end cleanly and are never cached', async () => {
    const blob = putBlob(hc, 'honest', 300_000);
    const forged = seededBytes('forged', blob.bytes.length);
    hc.registry.blobs.set(blob.digest, forged);
    try {
      const failedBefore = await hc.metrics.value('hubcache_fills_failed_total', { reason: 'digest_mismatch' });
      const res = await rawRequest(`${hc.url}${blobPath(blob)}`);
      assert.equal(res.status, 200, 'the head went out before the bytes could be checked');
      assert.equal(res.outcome, 'error', 'the connection was aborted, not ended');
      assert.ok(res.body.length < blob.bytes.length, 'the final byte was held back');
      assert.notEqual(digestOf(res.body), blob.digest);
      await hc.settle();
      assert.equal(await hc.stores.blobs.stat(blob.digest), undefined);
      assert.equal(await hc.metrics.value('hubcache_fills_failed_total', { reason: 'digest_mismatch' }), failedBefore + 1);
    } finally {
      hc.registry.blobs.set(blob.digest, blob.bytes);
    }
    // The next request downloads again, and this time the bytes are right.
    assert.ok((await hc.pull(blobPath(blob))).body.equals(blob.bytes));
  });
});

describe('blobs behind token auth and a CDN redirect', () => {
  let hc: AppHarness;
  let cdn: LoopbackServer;
  const registry = new FakeRegistry();

  before(async () => {
    registry.auth = 'bearer';
    cdn = await LoopbackServer.start(cdnHandler(registry.blobs));
    registry.blobRedirect = cdn.url;
    hc = await startApp({ upstreams: { 'docker.io': { registry, allowedRedirectHosts: [cdn.host] } } });
  });
  after(async () => {
    await hc.close();
    await cdn.close();
  });

  it('the registry gets the token, the CDN gets the request without it, the client gets the bytes', async () => {
    const image = putImage(registry, 'library/cdn', '1', { seed: 'cdn', layerSizes: [100_000] });
    const layer = image.layers[0]!;
    const res = await hc.pull(`/v2/library/cdn/blobs/${layer.digest}`);
    assert.equal(res.status, 200);
    assert.ok(res.body.equals(layer.bytes));
    const atRegistry = hc.upstreamServer.requests.filter((r) => r.url.startsWith('/v2/library/cdn/blobs/'));
    assert.ok(atRegistry.some((r) => /^Bearer /.test(r.headers.authorization ?? '')), 'the registry saw the token');
    assert.equal(cdn.requests.length, 1);
    assert.equal(cdn.requests[0]!.headers.authorization, undefined, 'the CDN never did');
    assert.equal(hc.upstreamServer.count(blobRequests('GET')), atRegistry.length);
  });
});
