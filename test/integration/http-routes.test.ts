/**
 * The HTTP surface route by route: what each path answers to GET and HEAD, the headers every /v2
 * answer carries, the operational endpoints, the request id, and the methods a read-only mirror
 * refuses. Upstream traffic is counted to show which routes never leave the process.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MediaTypes } from '../../src/domain/media-types.js';
import { startApp, withApp, type AppHarness } from '../support/app-harness.js';
import { ALL_MANIFESTS, ociError, putImage, type FakeImage } from '../support/oci-fixtures.js';
import { rawRequest } from '../support/raw-http.js';

describe('HTTP routes', () => {
  let hc: AppHarness;
  let image: FakeImage;

  before(async () => {
    hc = await startApp();
    image = putImage(hc.registry, 'library/app', '1.0', { seed: 'routes' });
  });
  after(() => hc.close());

  it('GET and HEAD /v2/ (with or without the slash) answer the version check without asking upstream', async () => {
    for (const path of ['/v2/', '/v2']) {
      const get = await hc.fetch(path);
      assert.equal(get.status, 200, path);
      assert.equal(get.headers.get('docker-distribution-api-version'), 'registry/2.0');
      assert.match(get.headers.get('content-type') ?? '', /^application\/json/);
      assert.deepEqual(await get.json(), {});
      const head = await rawRequest(`${hc.url}${path}`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.body.length, 0);
      assert.equal(head.headers['docker-distribution-api-version'], 'registry/2.0');
    }
    assert.equal(hc.upstreamServer.requests.length, 0);
  });

  it('each read route answers GET with a body and HEAD with the same status and headers but none', async () => {
    const layer = image.layers[0]!;
    const routes = [
      { path: '/v2/library/app/manifests/1.0', type: MediaTypes.ociManifest, length: image.manifest.length },
      { path: `/v2/library/app/manifests/${image.digest}`, type: MediaTypes.ociManifest, length: image.manifest.length },
      { path: `/v2/library/app/blobs/${layer.digest}`, type: 'application/octet-stream', length: layer.bytes.length },
    ];
    for (const r of routes) {
      const get = await rawRequest(`${hc.url}${r.path}`, { headers: { accept: ALL_MANIFESTS } });
      const head = await rawRequest(`${hc.url}${r.path}`, { method: 'HEAD', headers: { accept: ALL_MANIFESTS } });
      assert.equal(get.status, 200, r.path);
      assert.equal(get.body.length, r.length, r.path);
      assert.equal(head.status, 200, r.path);
      assert.equal(head.body.length, 0, r.path);
      for (const h of ['content-type', 'content-length', 'docker-content-digest', 'etag', 'docker-distribution-api-version']) {
        assert.equal(head.headers[h], get.headers[h], `${r.path}: ${h}`);
      }
      assert.equal(get.headers['content-type'], r.type);
      assert.equal(Number(head.headers['content-length']), r.length);
    }
  });

  it('tags/list answers GET; other methods on it are UNSUPPORTED', async () => {
    hc.registry.tags.set('library/app', ['1.0']);
    const get = await hc.fetch('/v2/library/app/tags/list');
    assert.equal(get.status, 200);
    assert.deepEqual(await get.json(), { name: 'library/app', tags: ['1.0'] });
    const head = await rawRequest(`${hc.url}/v2/library/app/tags/list`, { method: 'HEAD' });
    assert.equal(head.status, 405);
    assert.equal(head.body.length, 0);
  });

  it('a mirrored name refuses pushes with 403 DENIED naming hosted.repositories, deletes and other methods with 405 UNSUPPORTED, before any upstream request', async () => {
    const before = hc.upstreamServer.requests.length;
    const writes: Array<[string, string, number, string]> = [
      ['POST', '/v2/library/app/blobs/uploads/', 403, 'DENIED'],
      ['PATCH', '/v2/library/app/blobs/uploads/some-session', 403, 'DENIED'],
      ['PUT', '/v2/library/app/blobs/uploads/some-session?digest=sha256:' + '0'.repeat(64), 403, 'DENIED'],
      ['PUT', '/v2/library/app/manifests/1.0', 403, 'DENIED'],
      ['DELETE', '/v2/library/app/manifests/1.0', 405, 'UNSUPPORTED'],
      ['DELETE', `/v2/library/app/blobs/${image.layers[0]!.digest}`, 405, 'UNSUPPORTED'],
      ['PUT', `/v2/library/app/blobs/${image.layers[0]!.digest}`, 405, 'UNSUPPORTED'],
      ['POST', '/v2/', 405, 'UNSUPPORTED'],
      ['POST', '/v2/library/app/tags/list', 405, 'UNSUPPORTED'],
    ];
    for (const [method, path, status, code] of writes) {
      const res = await hc.fetch(path, { method, body: method === 'DELETE' ? undefined : 'x' });
      assert.equal(res.status, status, `${method} ${path}`);
      assert.equal((await ociError(res)).code, code, `${method} ${path}`);
    }
    const upload = await hc.fetch('/v2/library/app/blobs/uploads/', { method: 'POST' });
    assert.match((await ociError(upload)).message, /hosted\.repositories/);
    assert.equal(hc.upstreamServer.requests.length, before, 'nothing went upstream');
  });

  it('unknown endpoints are 404 NOT_FOUND with an OCI body, inside and outside /v2', async () => {
    for (const path of ['/', '/v1/search', '/v2/library/app/whatever', '/v2/library/app/manifests']) {
      const res = await hc.fetch(path);
      assert.equal(res.status, 404, path);
      assert.equal((await ociError(res)).code, 'NOT_FOUND', path);
    }
    const referrers = await hc.fetch(`/v2/library/app/referrers/${image.digest}`);
    assert.equal(referrers.status, 404);
    assert.match((await ociError(referrers)).message, /referrers API is not supported/);
  });

  it('/healthz and /readyz answer JSON; /metrics exposes the registry', async () => {
    const health = await hc.fetch('/healthz');
    assert.deepEqual([health.status, await health.json()], [200, { status: 'ok' }]);
    const ready = await hc.fetch('/readyz');
    assert.deepEqual([ready.status, await ready.json()], [200, { status: 'ready', checks: { config: true } }]);
    const metrics = await hc.fetch('/metrics');
    assert.equal(metrics.status, 200);
    const text = await metrics.text();
    assert.match(text, /^hubcache_http_requests_total\{route="readyz",method="GET",status="2xx"\} 1$/m);
    assert.match(text, /^hubcache_cache_requests_total\{kind="blob",outcome="hit"\} \d+$/m);
  });

  it('the request id is taken from X-Request-Id when well-formed, else generated, and names the access log line', async () => {
    const given = await hc.fetch('/v2/', { headers: { 'x-request-id': 'route-test.1' } });
    assert.equal(given.headers.get('x-request-id'), 'route-test.1');
    const line = await hc.waitForLog((l) => l.message === 'request' && l.requestId === 'route-test.1');
    assert.equal(line.route, 'base');
    assert.equal(line.status, 200);
    const bad = await hc.fetch('/v2/', { headers: { 'x-request-id': 'has spaces; and /slashes' } });
    assert.match(bad.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
    const none = await hc.fetch('/v2/');
    assert.notEqual(none.headers.get('x-request-id'), bad.headers.get('x-request-id'));
  });
});

describe('readiness', () => {
  it('/readyz is 503 with the failing check named when a check fails', async () => {
    await withApp({ readiness: async () => ({ checks: { config: true, storeReadable: false }, degraded: { storeWritable: true } }) }, async (hc) => {
      const res = await hc.fetch('/readyz');
      assert.equal(res.status, 503);
      assert.deepEqual(await res.json(), { status: 'not ready', checks: { config: true, storeReadable: false, storeWritable: true } });
    });
  });

  it('/readyz stays 200 with status "degraded" when only a degrading check (the store writable) fails', async () => {
    await withApp({ readiness: async () => ({ checks: { config: true, storeReadable: true }, degraded: { storeWritable: false } }) }, async (hc) => {
      const res = await hc.fetch('/readyz');
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { status: 'degraded', checks: { config: true, storeReadable: true, storeWritable: false } });
    });
  });
});
