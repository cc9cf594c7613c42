/**
 * The loop guard (anti-loop.ts, verdaccio's antiLoop): every upstream request carries
 * `Via: 1.1 hubcache-<instanceId>`, and a request that already carries this instance's entry is
 * refused with 508 LOOP_DETECTED. Shown on crafted requests, on a mirror that is its own upstream,
 * and on two mirrors pointing at each other — the chain only loops back through the other one.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { FakeRegistry, LoopbackServer } from '../../src/upstream/testing/fake-registry.js';
import { startApp, withApp, type AppHarness } from '../support/app-harness.js';
import { ALL_MANIFESTS, ociError, putImage } from '../support/oci-fixtures.js';

describe('loop guard', () => {
  let hc: AppHarness;
  const registry = new FakeRegistry();

  before(async () => {
    registry.auth = 'bearer';
    hc = await startApp({ upstreams: { 'docker.io': { registry } }, instanceId: 'guard1' });
    putImage(registry, 'library/app', '1', { seed: 'loop', layerSizes: [1000] });
    registry.tags.set('library/app', ['1']);
  });
  after(() => hc.close());

  it('refuses a request whose Via names this instance, wherever in the chain, before any upstream request', async () => {
    for (const via of ['1.1 hubcache-guard1', '1.1 hubcache-guard1 (hubcache)', '1.0 edge, 1.1 hubcache-guard1, 1.1 lb.example', 'HTTP/1.1 hubcache-guard1']) {
      const res = await hc.fetch('/v2/library/app/manifests/1', { headers: { via } });
      assert.equal(res.status, 508, via);
      const err = await ociError(res);
      assert.equal(err.code, 'LOOP_DETECTED');
      assert.deepEqual(err.detail, { via });
    }
    assert.equal(hc.upstreamServer.requests.length, 0);
  });

  it('lets through requests that passed other proxies, or another hubcache instance', async () => {
    for (const via of ['1.1 hubcache-guard2', '1.1 hubcache-guard10, 1.1 squid', '1.1 proxy (hubcache-guard1)']) {
      assert.equal((await hc.pull('/v2/library/app/manifests/1', { headers: { via } })).status, 200, via);
    }
  });

  it('every upstream request — manifests, blobs, tags and tokens — carries this instance’s Via entry', async () => {
    const image = putImage(registry, 'library/viaed', '1', { seed: 'via' });
    registry.tags.set('library/viaed', ['1']);
    const before = hc.upstreamServer.requests.length;
    for (const path of ['/v2/library/viaed/manifests/1', `/v2/library/viaed/blobs/${image.layers[0]!.digest}`, '/v2/library/viaed/tags/list']) {
      assert.equal((await hc.pull(path)).status, 200, path);
    }
    await hc.settle();
    const sent = hc.upstreamServer.requests.slice(before);
    const kinds = new Set(sent.map((r) => /\/(manifests|blobs|tags|token)/.exec(r.url)?.[1]));
    assert.deepEqual([...kinds].sort(), ['blobs', 'manifests', 'tags', 'token']);
    for (const r of sent) assert.equal(r.headers.via, '1.1 hubcache-guard1', `${r.method} ${r.url}`);
  });

  it('carries on the Via chain the client request arrived with (RFC 9110 §7.6.3), unless it is too long to', async () => {
    const cases: Array<[string, string]> = [
      ['1.1 edge-proxy', '1.1 edge-proxy, 1.1 hubcache-guard1'],
      ['1.0 a, 1.1 hubcache-other', '1.0 a, 1.1 hubcache-other, 1.1 hubcache-guard1'],
      [`1.1 ${'x'.repeat(2000)}`, '1.1 hubcache-guard1'],
    ];
    for (const [i, [incoming, expected]] of cases.entries()) {
      registry.putManifest('library/chained', `t${i}`, Buffer.from(`{"schemaVersion":2,"config":{},"layers":[],"n":${i}}`), 'application/vnd.oci.image.manifest.v1+json');
      const before = hc.upstreamServer.requests.length;
      assert.equal((await hc.pull(`/v2/library/chained/manifests/t${i}`, { headers: { via: incoming } })).status, 200);
      const sent = hc.upstreamServer.requests.slice(before).filter((r) => r.url.includes('/manifests/'));
      assert.ok(sent.length > 0);
      for (const r of sent) assert.equal(r.headers.via, expected, incoming.slice(0, 40));
    }
  });
});

describe('a mirror that is its own upstream', () => {
  it('gets its own request back once per attempt, refuses it, and answers the client', async () => {
    await withApp({ upstreams: { 'docker.io': { self: true } }, retryAttempts: 2 }, async (hc) => {
      const before = hc.served();
      const res = await hc.fetch('/v2/library/app/manifests/1', { headers: { accept: ALL_MANIFESTS } });
      assert.equal(res.status, 503);
      const err = await ociError(res);
      assert.equal(err.code, 'UNAVAILABLE');
      assert.equal((err.detail as { errors: Array<{ code: string }> }).errors[0]!.code, 'LOOP_DETECTED', 'the detail says why');
      assert.equal(hc.served() - before, 1 + 2, 'the client’s request and one refused hop per attempt');
    });
  });
});

/** A plain HTTP relay to whatever `target()` is when a request arrives (headers passed on untouched). */
function relay(target: () => string): Promise<LoopbackServer> {
  return LoopbackServer.start((req, res) => {
    const to = new URL(req.url ?? '/', target());
    const out = request(to, { method: req.method, headers: { ...req.headers, host: to.host } }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
}

describe('two mirrors pointing at each other', () => {
  let a: AppHarness;
  let b: AppHarness;
  let toB: LoopbackServer;

  before(async () => {
    // A's upstream is B (through a relay: B doesn't exist yet), B's upstream is A.
    toB = await relay(() => b.url);
    a = await startApp({ upstreams: { 'docker.io': { url: toB.url } }, instanceId: 'mirror-a', retryAttempts: 1 });
    b = await startApp({ upstreams: { 'docker.io': { url: a.url } }, instanceId: 'mirror-b', retryAttempts: 1 });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await toB?.close();
  });

  it('the request that comes back through the other mirror is refused as a loop at once', async () => {
    const res = await a.fetch('/v2/library/app/manifests/1', { headers: { accept: ALL_MANIFESTS, 'x-request-id': 'around' } });
    assert.equal(res.status, 503);
    const err = await ociError(res);
    assert.match(JSON.stringify(err.detail), /LOOP_DETECTED/, 'not a timeout');
    assert.equal(toB.requests[0]!.headers.via, '1.1 hubcache-mirror-a');
    const back = await a.waitForLog((l) => l.message === 'request' && l.status === 508);
    assert.equal(back.route, 'unknown', 'refused before routing');
    assert.equal(a.served(), 2, 'the client’s request, and the one that came back');
    assert.equal(b.served(), 1);
  });
});
