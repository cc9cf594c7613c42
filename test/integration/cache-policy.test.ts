/**
 * What a pull costs upstream, pinned by counting upstream requests while a manual clock moves: a
 * fresh tag costs nothing, an expired one one HEAD (and a GET only when the tag moved), a digest
 * nothing ever. When the upstream fails, a cached copy is served marked stale — but only for
 * failures that say nothing about the content (down, 5xx, 429), never for a 404 or a refusal.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, afterEach, before, describe, it } from 'node:test';
import { FakeRegistry } from '../../src/upstream/testing/fake-registry.js';
import { startApp, withApp, type AppHarness } from '../support/app-harness.js';
import { ALL_MANIFESTS, manifestRequests, ociError, putImage, type FakeImage } from '../support/oci-fixtures.js';
import { rawRequest } from '../support/raw-http.js';

const TTL = 10 * 60_000;
const RATE_LIMIT_HEADERS = { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '0;w=21600', 'docker-ratelimit-source': '203.0.113.7', 'retry-after': '3600' };

/** Every upstream manifest request gets this answer. */
function failManifests(registry: FakeRegistry, answer: (req: IncomingMessage, res: ServerResponse) => void): void {
  registry.hook = (req, res) => {
    if (!req.url?.includes('/manifests/')) return false;
    answer(req, res);
    return true;
  };
}

const status = (code: number, headers: Record<string, string> = {}) => (_req: IncomingMessage, res: ServerResponse) =>
  void res.writeHead(code, { 'content-type': 'application/json', ...headers }).end(`{"errors":[{"code":"X","message":"status ${code}"}]}`);

describe('what a pull costs upstream', () => {
  it('docker’s sequence (HEAD by tag, GET by digest, config and layers): one manifest GET and one GET per blob, then nothing', async () => {
    await withApp({}, async (hc) => {
      const image = putImage(hc.registry, 'library/pulled', 'latest', { seed: 'pull-flow', layerSizes: [3000, 5000] });
      const dockerPull = async () => {
        const outcomes: Array<string | null> = [];
        const steps: Array<[string, string]> = [
          ['GET', '/v2/'],
          ['HEAD', '/v2/library/pulled/manifests/latest'],
          ['GET', `/v2/library/pulled/manifests/${image.digest}`],
          ...[image.config, ...image.layers].map((b) => ['GET', `/v2/library/pulled/blobs/${b.digest}`] as [string, string]),
        ];
        for (const [method, path] of steps) {
          const res = await hc.pull(path, { method });
          assert.equal(res.status, 200, `${method} ${path}`);
          outcomes.push(res.cache);
        }
        await hc.settle();
        return outcomes;
      };
      assert.deepEqual(await dockerPull(), [null, 'miss', 'hit', 'miss', 'miss', 'miss']);
      const blobPath = (d: string) => `GET /v2/library/pulled/blobs/${d}`;
      assert.deepEqual(
        hc.upstreamServer.requests.map((r) => `${r.method} ${r.url}`),
        ['GET /v2/library/pulled/manifests/latest', ...[image.config, ...image.layers].map((b) => blobPath(b.digest))],
      );
      const before = hc.upstreamServer.requests.length;
      assert.deepEqual(await dockerPull(), [null, 'hit', 'hit', 'hit', 'hit', 'hit']);
      assert.equal(hc.upstreamServer.requests.length, before, 'the second pull costs nothing upstream');
    });
  });
});

describe('tag TTL and revalidation', () => {
  let hc: AppHarness;
  let image: FakeImage;
  const url = '/v2/library/app/manifests/latest';
  const pull = (path = url, method = 'GET') => hc.pull(path, { method });
  /** Upstream manifest requests since the last call, as `METHOD reference`. */
  let seen = 0;
  const upstreamSince = () => {
    const reqs = hc.upstreamServer.requests.slice(seen);
    seen = hc.upstreamServer.requests.length;
    return reqs.filter(manifestRequests()).map((r) => `${r.method} ${r.url.split('/manifests/')[1]}`);
  };

  before(async () => {
    hc = await startApp({ tagTtlMs: TTL });
    image = putImage(hc.registry, 'library/app', 'latest', { seed: 'ttl' });
    assert.equal((await pull()).cache, 'miss');
    upstreamSince();
  });
  after(() => hc.close());

  it('within the TTL a tag is a hit with no upstream request', async () => {
    hc.clock.advance(TTL - 1);
    const r = await pull();
    assert.equal(r.cache, 'hit');
    assert.ok(r.body.equals(image.manifest));
    assert.deepEqual(upstreamSince(), []);
  });

  it('after the TTL an unchanged tag costs exactly one manifest HEAD, and the TTL starts again', async () => {
    hc.clock.advance(1);
    const r = await pull();
    assert.equal(r.cache, 'revalidated');
    assert.ok(r.body.equals(image.manifest));
    assert.deepEqual(upstreamSince(), ['HEAD latest']);
    hc.clock.advance(TTL - 1);
    assert.equal((await pull()).cache, 'hit');
    assert.deepEqual(upstreamSince(), []);
  });

  it('a HEAD from the client revalidates the same way', async () => {
    hc.clock.advance(TTL);
    const r = await pull(url, 'HEAD');
    assert.equal(r.status, 200);
    assert.equal(r.cache, 'revalidated');
    assert.equal(r.digest, image.digest);
    assert.deepEqual(upstreamSince(), ['HEAD latest']);
  });

  it('a tag that moved costs a HEAD and one GET of the new digest; the old digest stays servable', async () => {
    const moved = putImage(hc.registry, 'library/app', 'latest', { seed: 'ttl-moved' });
    hc.clock.advance(TTL);
    const r = await pull();
    assert.equal(r.digest, moved.digest);
    assert.ok(r.body.equals(moved.manifest));
    assert.equal(r.cache, 'miss');
    assert.deepEqual(upstreamSince(), ['HEAD latest', `GET ${moved.digest}`]);
    const old = await pull(`/v2/library/app/manifests/${image.digest}`);
    assert.equal(old.cache, 'hit');
    assert.ok(old.body.equals(image.manifest));
    assert.deepEqual(upstreamSince(), []);
  });

  it('a tag that moved to a manifest this repository already has costs only the HEAD', async () => {
    hc.registry.putManifest('library/app', 'latest', image.manifest, image.mediaType);
    hc.clock.advance(TTL);
    const r = await pull();
    assert.equal(r.digest, image.digest);
    assert.deepEqual(upstreamSince(), ['HEAD latest']);
  });

  it('pulls by digest never ask upstream, however much time passed', async () => {
    hc.clock.advance(365 * 24 * 3600_000);
    for (const method of ['GET', 'HEAD']) {
      const r = await pull(`/v2/library/app/manifests/${image.digest}`, method);
      assert.equal(r.cache, 'hit');
    }
    assert.deepEqual(upstreamSince(), []);
  });
});

describe('per-upstream TTLs', () => {
  it('each upstream revalidates on its own schedule', async () => {
    await withApp({ upstreams: { 'docker.io': { tagTtlMs: 60 * 60_000 }, 'ghcr.io': { registry: new FakeRegistry(), tagTtlMs: 60_000 } } }, async (hc) => {
      putImage(hc.registry, 'org/app', '1', { seed: 'hub' });
      putImage(hc.upstreams.get('ghcr.io')!.registry!, 'org/app', '1', { seed: 'ghcr' });
      const cacheOf = async (path: string) => (await hc.pull(path)).cache;
      assert.equal(await cacheOf('/v2/org/app/manifests/1'), 'miss');
      assert.equal(await cacheOf('/v2/ghcr.io/org/app/manifests/1'), 'miss');
      hc.clock.advance(2 * 60_000);
      assert.equal(await cacheOf('/v2/org/app/manifests/1'), 'hit');
      assert.equal(await cacheOf('/v2/ghcr.io/org/app/manifests/1'), 'revalidated');
    });
  });
});

describe('upstream failures after the TTL', () => {
  let hc: AppHarness;
  let image: FakeImage;
  const url = '/v2/library/app/manifests/latest';

  before(async () => {
    hc = await startApp({ tagTtlMs: TTL, retryAttempts: 2 });
    image = putImage(hc.registry, 'library/app', 'latest', { seed: 'stale' });
    assert.equal((await hc.pull(url)).status, 200);
  });
  afterEach(() => {
    hc.registry.hook = undefined;
  });
  after(() => hc.close());

  /** Expires the tag, pulls it, and returns the response with the upstream manifest requests it caused. */
  const pullExpired = async (method = 'GET') => {
    hc.clock.advance(TTL);
    const before = hc.upstreamServer.requests.length;
    const res = await rawRequest(`${hc.url}${url}`, { method, headers: { accept: ALL_MANIFESTS } });
    return { res, upstream: hc.upstreamServer.requests.slice(before).filter(manifestRequests()).map((r) => r.method) };
  };

  const assertStale = (res: Awaited<ReturnType<typeof pullExpired>>['res'], reason: string) => {
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-hubcache-stale'], reason);
    assert.equal(res.headers['x-hubcache-cache'], 'stale');
    assert.equal(res.headers.warning, '110 hubcache "Response is Stale"');
    assert.equal(res.headers['docker-content-digest'], image.digest);
  };

  for (const [what, answer] of [
    ['a 503', status(503)],
    ['a reset connection', (req: IncomingMessage) => void req.socket.destroy()],
  ] as const) {
    it(`${what} (retried) is answered with the cached copy, marked stale`, async () => {
      failManifests(hc.registry, answer);
      const staleBefore = await hc.metrics.value('hubcache_cache_requests_total', { kind: 'manifest_tag', outcome: 'stale' });
      const { res, upstream } = await pullExpired();
      assertStale(res, 'unavailable');
      assert.ok(res.body.equals(image.manifest));
      assert.deepEqual(upstream, ['HEAD', 'HEAD'], 'two attempts');
      assert.equal(await hc.metrics.value('hubcache_cache_requests_total', { kind: 'manifest_tag', outcome: 'stale' }), staleBefore + 1);
      const log = await hc.waitForLog((l) => l.message === 'stale served' && l.reason === 'unavailable');
      assert.equal(log.digest, image.digest);
    });
  }

  it('an answer that is not the protocol (a captive portal\'s HTML page) is answered with the cached copy, marked protocol', async () => {
    const portal = (_req: IncomingMessage, res: ServerResponse) => void res.writeHead(200, { 'content-type': 'text/html' }).end('<html><body>Sign in to the hotel Wi-Fi</body></html>');
    failManifests(hc.registry, portal);
    for (const method of ['GET', 'HEAD']) {
      const { res } = await pullExpired(method);
      assertStale(res, 'protocol');
      assert.ok(res.body.equals(method === 'GET' ? image.manifest : Buffer.alloc(0)), method);
    }
    await hc.waitForLog((l) => l.message === 'stale served' && l.reason === 'protocol');
  });

  it('a 429 is never retried and is answered with the cached copy, marked rate-limited; HEAD too', async () => {
    failManifests(hc.registry, status(429, RATE_LIMIT_HEADERS));
    for (const method of ['GET', 'HEAD']) {
      const { res, upstream } = await pullExpired(method);
      assertStale(res, 'rate-limited');
      assert.equal(res.body.length, method === 'GET' ? image.manifest.length : 0);
      assert.deepEqual(upstream, ['HEAD'], method);
    }
  });

  it('a stale answer does not count as validation: once the upstream is back the tag is revalidated', async () => {
    failManifests(hc.registry, status(502));
    assertStale((await pullExpired()).res, 'unavailable');
    hc.registry.hook = undefined;
    const before = hc.upstreamServer.requests.length;
    const res = await hc.pull(url);
    assert.equal(res.cache, 'revalidated');
    assert.equal(res.headers.get('x-hubcache-stale'), null);
    assert.deepEqual(hc.upstreamServer.requests.slice(before).map((r) => r.method), ['HEAD']);
  });

  for (const [upstreamStatus, code, clientStatus] of [
    [404, 'MANIFEST_UNKNOWN', 404],
    [403, 'DENIED', 403],
    [401, 'DENIED', 403],
  ] as const) {
    it(`a ${upstreamStatus} is an answer about the content: ${clientStatus} ${code}, never the stale copy`, async () => {
      failManifests(hc.registry, status(upstreamStatus));
      const { res } = await pullExpired();
      assert.equal(res.status, clientStatus);
      assert.equal(res.headers['x-hubcache-stale'], undefined);
      assert.equal(JSON.parse(res.body.toString()).errors[0].code, code);
      assert.equal(res.headers['www-authenticate'], undefined, 'no challenge the client could answer');
    });
  }
});

describe('upstream failures with nothing cached', () => {
  let hc: AppHarness;
  before(async () => {
    hc = await startApp({ retryAttempts: 3 });
  });
  afterEach(() => {
    hc.registry.hook = undefined;
  });
  after(() => hc.close());

  it('a 429 becomes 429 TOOMANYREQUESTS with the upstream’s rate-limit headers, after one upstream request', async () => {
    failManifests(hc.registry, status(429, RATE_LIMIT_HEADERS));
    const before = hc.upstreamServer.requests.length;
    const res = await hc.fetch('/v2/library/cold/manifests/1', { headers: { accept: ALL_MANIFESTS } });
    assert.equal(res.status, 429);
    assert.equal((await ociError(res)).code, 'TOOMANYREQUESTS');
    for (const [name, value] of Object.entries(RATE_LIMIT_HEADERS)) assert.equal(res.headers.get(name), value, name);
    assert.equal(hc.upstreamServer.requests.length - before, 1, 'no blind retry');
    assert.equal(await hc.metrics.value('hubcache_upstream_rate_limited_total', { upstream: 'docker.io' }), 1);
  });

  it('a 5xx is retried, then 503 UNAVAILABLE with the upstream’s answer in the detail', async () => {
    failManifests(hc.registry, status(500));
    const before = hc.upstreamServer.requests.length;
    const res = await hc.fetch('/v2/library/cold/manifests/1', { headers: { accept: ALL_MANIFESTS } });
    assert.equal(res.status, 503);
    const err = await ociError(res);
    assert.equal(err.code, 'UNAVAILABLE');
    assert.deepEqual((err.detail as { errors: unknown }).errors, [{ code: 'X', message: 'status 500' }]);
    assert.equal(hc.upstreamServer.requests.length - before, 3, 'retryAttempts attempts');
  });

  it('the rate-limit headers of successful responses reach the metrics', async () => {
    hc.registry.rateLimit = { limit: 100, remaining: 42, windowSeconds: 21600, source: '203.0.113.7' };
    putImage(hc.registry, 'library/counted', '1', { seed: 'counted' });
    assert.equal((await hc.pull('/v2/library/counted/manifests/1')).status, 200);
    assert.equal(await hc.metrics.value('hubcache_upstream_ratelimit_remaining', { upstream: 'docker.io' }), 42);
    assert.equal(await hc.metrics.value('hubcache_upstream_ratelimit_limit', { upstream: 'docker.io' }), 100);
  });
});
