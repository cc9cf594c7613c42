/**
 * Issue #15: the whole server with `cluster` set (config → Redis coordinator → follow endpoint →
 * readiness and metrics), in-process, against a real redis-server that goes away and comes back.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { sha256Digest } from '../../src/domain/digest.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';
import { startRedis, type RedisServer } from '../support/redis.js';

describe('serve with cluster set: Redis down is degraded, not unready; the follow endpoint serves fills only (issue #15)', () => {
  let redis: RedisServer;
  let hc: InProcessHubcache;
  let peerUrl: string;
  let dir: string;

  before(async () => {
    redis = await startRedis();
    dir = mkdtempSync(join(tmpdir(), 'hubcache-cluster-'));
    writeFileSync(join(dir, 'peer-secret'), 's3cret\n');
    hc = await startInProcess({
      config: {
        metrics: { listen: '127.0.0.1:0' },
        cluster: { redis: { url: redis.url, keyPrefix: 'srv:' }, peerListen: '127.0.0.1:0', advertiseUrl: 'http://127.0.0.1:1', peerSecretFile: join(dir, 'peer-secret') },
      },
    });
    peerUrl = String((await hc.waitForLog((l) => l.message === 'cluster')).peerListen);
  });
  after(async () => {
    await hc.close();
    await redis.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const readyz = async () => (await fetch(`${hc.url}/readyz`)).json() as Promise<{ status: string; checks: Record<string, boolean> }>;
  const redisUp = async () => /^hubcache_cluster_redis_up (\d)/m.exec(await (await fetch(`${hc.hub.metricsUrl}/metrics`)).text())?.[1];

  it('the follow endpoint wants the shared secret, answers 404 for a digest with no fill here, and serves nothing else', async () => {
    const digest = sha256Digest('not being filled');
    assert.equal((await fetch(`${peerUrl}/internal/fills/${digest}`)).status, 403);
    assert.equal((await fetch(`${peerUrl}/internal/fills/${digest}`, { headers: { 'x-hubcache-peer-secret': 'wrong!' } })).status, 403);
    assert.equal((await fetch(`${peerUrl}/internal/fills/${digest}`, { headers: { 'x-hubcache-peer-secret': 's3cret' } })).status, 404);
    assert.equal((await fetch(`${peerUrl}/v2/`, { headers: { 'x-hubcache-peer-secret': 's3cret' } })).status, 404, 'no registry API');
    assert.equal((await fetch(`${peerUrl}/internal/fills/../../v2/`, { headers: { 'x-hubcache-peer-secret': 's3cret' } })).status, 404);
  });

  it('Redis stopped: /readyz stays 200 and says degraded, the gauge is 0; Redis back: ready again without a restart', async () => {
    assert.deepEqual(await readyz(), { status: 'ready', checks: { config: true, accepting: true, storeReadable: true, storeWritable: true, redis: true } });
    assert.equal(await redisUp(), '1');
    await redis.stop();
    await hc.waitForLog((l) => String(l.message).startsWith('redis unreachable'));
    const res = await fetch(`${hc.url}/readyz`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'degraded', checks: { config: true, accepting: true, storeReadable: true, storeWritable: true, redis: false } });
    assert.equal(await redisUp(), '0');
    await redis.start();
    await hc.waitForLog((l) => String(l.message).startsWith('redis reachable again'));
    assert.equal((await readyz()).status, 'ready');
    assert.equal(await redisUp(), '1');
  });
});

describe('serve with cluster and auth: one token signing key for every replica, from Redis (issue #15)', () => {
  it('a token issued by one replica is accepted by another (each with its own store directory)', async () => {
    const redis = await startRedis();
    const dir = mkdtempSync(join(tmpdir(), 'hubcache-cluster-auth-'));
    const htpasswd = join(dir, 'htpasswd');
    writeFileSync(htpasswd, `alice:${bcrypt.hashSync('wonderland', 4).replace(/^\$2b\$/, '$2y$')}\n`);
    const config = (advertise: string) => ({
      auth: { htpasswd },
      cluster: { redis: { url: redis.url, keyPrefix: 'auth-test:' }, peerListen: '127.0.0.1:0', advertiseUrl: advertise },
    });
    const a = await startInProcess({ config: config('http://127.0.0.1:1') });
    const b = await startInProcess({ config: config('http://127.0.0.1:2') });
    try {
      const basic = `Basic ${Buffer.from('alice:wonderland').toString('base64')}`;
      const tokenRes = await fetch(`${a.url}/auth/token?service=hubcache&scope=repository:library/alpine:pull`, { headers: { authorization: basic } });
      assert.equal(tokenRes.status, 200);
      const { token } = (await tokenRes.json()) as { token: string };
      assert.equal((await fetch(`${b.url}/v2/`, { headers: { authorization: `Bearer ${token}` } })).status, 200, 'the other replica verifies it');
      assert.equal((await fetch(`${b.url}/v2/`, { headers: { authorization: 'Bearer not.a.token' } })).status, 401, 'and still refuses a bad one');
    } finally {
      await Promise.all([a.close(), b.close()]);
      await redis.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
