/**
 * Issue #15: an upstream's rate-limit state is shared by the replicas. Two whole in-process replicas
 * (each its own store: nothing here needs a shared one) on one REAL redis-server, in front of one
 * FakeRegistry whose manifest answers carry Docker Hub's rate-limit headers and, when told, a 429.
 * A single node (no cluster) keeps today's behaviour: each request asks.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { FakeRegistry, LoopbackServer } from '../../src/upstream/testing/fake-registry.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';
import { ALL_MANIFESTS, putImage } from '../support/oci-fixtures.js';
import { startRedis, type RedisServer } from '../support/redis.js';

/** The upstream: `remaining` on every manifest answer; with `limited`, manifest GETs get a 429 (Retry-After 120). */
class Limits {
  remaining = 42;
  limited = false;
  manifestGets = 0;
  hook = (req: IncomingMessage, res: ServerResponse): boolean => {
    if (!req.url?.includes('/manifests/')) return false;
    if (req.method === 'GET') this.manifestGets++;
    const rl = { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': `${this.remaining};w=21600`, 'docker-ratelimit-source': '203.0.113.7' };
    if (this.limited && req.method === 'GET') {
      res.writeHead(429, { 'content-type': 'application/json', ...rl, 'retry-after': '120' }).end('{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit"}]}');
      return true;
    }
    for (const [k, v] of Object.entries(rl)) res.setHeader(k, v);
    return false;
  };
}

const gauge = async (hc: InProcessHubcache, series: string) => {
  const text = await (await fetch(`${hc.hub.metricsUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
};
/** Waits (bounded) until the gauge reads `want`: the reading travels through Redis pub/sub. */
async function gaugeBecomes(hc: InProcessHubcache, series: string, want: number): Promise<void> {
  const until = Date.now() + 10_000;
  while ((await gauge(hc, series)) !== want) {
    if (Date.now() > until) assert.fail(`${series} never became ${want} (is ${await gauge(hc, series)})`);
    await new Promise<void>((r) => setTimeout(r, 20));
  }
}

describe('several replicas: upstream rate-limit state shared through Redis (issue #15)', () => {
  let redis: RedisServer;
  let upstream: LoopbackServer;
  const registry = new FakeRegistry();
  const limits = new Limits();
  let a: InProcessHubcache;
  let b: InProcessHubcache;

  before(async () => {
    redis = await startRedis();
    registry.hook = limits.hook;
    putImage(registry, 'library/one', 'latest', { seed: 'rl-one' });
    putImage(registry, 'library/two', 'latest', { seed: 'rl-two' });
    upstream = await LoopbackServer.start(registry.handle);
    const replica = () =>
      startInProcess({
        flags: { 'upstream-url': upstream.url },
        config: { metrics: { listen: '127.0.0.1:0' }, cluster: { redis: { url: redis.url, keyPrefix: 'rl:' }, peerListen: '127.0.0.1:0', advertiseUrl: 'http://127.0.0.1:1' } },
      });
    a = await replica();
    b = await replica();
  });
  after(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await upstream?.close();
    await redis?.close();
  });

  it("what one replica reads of the headroom is every replica's gauge", async () => {
    limits.remaining = 42;
    const res = await fetch(`${a.url}/v2/library/one/manifests/latest`, { headers: { accept: ALL_MANIFESTS } });
    assert.equal(res.status, 200);
    assert.equal(await gauge(a, 'hubcache_upstream_ratelimit_remaining{upstream="docker.io"}'), 42);
    await gaugeBecomes(b, 'hubcache_upstream_ratelimit_remaining{upstream="docker.io"}', 42);
    assert.equal(await gauge(b, 'hubcache_upstream_ratelimit_limit{upstream="docker.io"}'), 100);
  });

  it("after a 429 on one replica's manifest GET, the other replica holds its manifest GETs off (429 with Retry-After, nothing sent upstream)", async () => {
    limits.limited = true;
    limits.remaining = 0;
    const first = await fetch(`${a.url}/v2/library/two/manifests/latest`, { headers: { accept: ALL_MANIFESTS } });
    assert.equal(first.status, 429);
    assert.equal(first.headers.get('retry-after'), '120');
    await b.waitForLog((l) => l.message === 'upstream held off by the cluster: manifest GETs wait for the Retry-After');
    const gets = limits.manifestGets;
    const second = await fetch(`${b.url}/v2/library/two/manifests/latest`, { headers: { accept: ALL_MANIFESTS } });
    assert.equal(second.status, 429);
    assert.equal(((await second.json()) as { errors: Array<{ code: string }> }).errors[0]!.code, 'TOOMANYREQUESTS');
    const retryAfter = Number(second.headers.get('retry-after'));
    assert.ok(retryAfter > 0 && retryAfter <= 120, `retry-after ${retryAfter}`);
    assert.equal(limits.manifestGets, gets, 'no manifest GET left B');
    assert.equal(await gauge(b, 'hubcache_upstream_held_off_total{upstream="docker.io"}'), 1);
    // A too: its own 429 holds it off.
    assert.equal((await fetch(`${a.url}/v2/library/two/manifests/latest`, { headers: { accept: ALL_MANIFESTS } })).status, 429);
    assert.equal(limits.manifestGets, gets);
    // A replica started now learns the hold-off from Redis (it missed the message).
    const c = await startInProcess({
      flags: { 'upstream-url': upstream.url },
      config: { metrics: { listen: '127.0.0.1:0' }, cluster: { redis: { url: redis.url, keyPrefix: 'rl:' }, peerListen: '127.0.0.1:0', advertiseUrl: 'http://127.0.0.1:1' } },
    });
    try {
      await c.waitForLog((l) => l.message === 'upstream held off by the cluster: manifest GETs wait for the Retry-After');
      assert.equal((await fetch(`${c.url}/v2/library/two/manifests/latest`, { headers: { accept: ALL_MANIFESTS } })).status, 429);
      assert.equal(limits.manifestGets, gets);
    } finally {
      await c.close();
    }
  });
});

describe('a single node (no cluster): rate-limit state stays its own, each request asks (unchanged)', () => {
  it('two manifest GETs after a 429: both reach the upstream', async () => {
    const registry = new FakeRegistry();
    const limits = new Limits();
    limits.limited = true;
    registry.hook = limits.hook;
    const upstream = await LoopbackServer.start(registry.handle);
    const hc = await startInProcess({ flags: { 'upstream-url': upstream.url } });
    try {
      for (let i = 0; i < 2; i++) assert.equal((await fetch(`${hc.url}/v2/library/x/manifests/${i}`, { headers: { accept: ALL_MANIFESTS } })).status, 429);
      assert.equal(limits.manifestGets, 2);
    } finally {
      await hc.close();
      await upstream.close();
    }
  });
});
