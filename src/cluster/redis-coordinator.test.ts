import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { setImmediate as tick } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import winston from 'winston';
import { sha256Digest } from '../domain/digest.js';
import { startRedis, type RedisServer } from '../../test/support/redis.js';
import { RedisCoordinator, type ClusterMetrics } from './redis-coordinator.js';

const quiet = winston.createLogger({ transports: [new winston.transports.Console({ silent: true })] });

class CountingMetrics implements ClusterMetrics {
  readonly leases = { acquired: 0, followed: 0, expired: 0 };
  up: boolean | undefined;
  bytes = 0;
  fillLease(o: 'acquired' | 'followed' | 'expired'): void {
    this.leases[o]++;
  }
  peerFollowBytes(n: number): void {
    this.bytes += n;
  }
  redisUp(up: boolean): void {
    this.up = up;
  }
  readonly maintenance = { acquired: 0, busy: 0, unavailable: 0, lost: 0 };
  held = false;
  maintenanceLock(o: 'acquired' | 'busy' | 'unavailable' | 'lost'): void {
    this.maintenance[o]++;
  }
  maintenanceHeld(held: boolean): void {
    this.held = held;
  }
}

describe('RedisCoordinator: fill leases in a real redis-server', () => {
  let redis: RedisServer;
  const open: RedisCoordinator[] = [];
  const coordinator = async (id: string, o: { ttlMs?: number; prefix?: string; maintenanceTtlMs?: number; guardTtlMs?: number } = {}) => {
    const metrics = new CountingMetrics();
    const c = new RedisCoordinator({
      redis: { url: redis.url, keyPrefix: o.prefix ?? 'test:' },
      advertiseUrl: `http://${id}.invalid:5001`,
      fillLeaseTtlMs: o.ttlMs ?? 10_000,
      holderId: id,
      logger: quiet,
      metrics,
      ...(o.maintenanceTtlMs ? { maintenanceLockTtlMs: o.maintenanceTtlMs } : {}),
      ...(o.guardTtlMs ? { digestGuardTtlMs: o.guardTtlMs } : {}),
    });
    open.push(c);
    assert.ok(await c.connected(), 'connected to redis');
    return { c, metrics };
  };
  const redisPttl = (c: RedisCoordinator) => c.maintenancePttlForTest();
  let n = 0;
  const digest = () => sha256Digest(`blob ${n++} ${Date.now()}`);

  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await Promise.all(open.map((c) => c.close()));
    await redis.close();
  });

  it('one replica gets the lease; the others are told who holds it and where to follow it; released, the next claim gets it', async () => {
    const { c: a, metrics: am } = await coordinator('a');
    const { c: b } = await coordinator('b');
    const d = digest();
    const first = await a.claim(d);
    assert.equal(first.kind, 'lease');
    assert.equal(am.leases.acquired, 1);
    assert.ok(first.kind === 'lease' && first.lease.take() && !first.lease.take(), 'taken once');
    const second = await b.claim(d);
    assert.deepEqual(second.kind === 'peer' && { holder: second.holder, url: second.url }, { holder: 'a', url: 'http://a.invalid:5001' });
    assert.ok(second.kind === 'peer' && second.ttlMs > 0 && second.ttlMs <= 10_000);
    assert.equal(await (first.kind === 'lease' && first.lease.renew()), true);
    if (first.kind === 'lease') await first.lease.release();
    assert.equal(await a.holder(d), null);
    assert.equal((await b.claim(d)).kind, 'lease');
  });

  it('a peer answering 404 (its fill ended just before): follow rejects PeerUnavailableError, and the unread answer does not crash the process', async () => {
    const peer = createServer((_req, res) => res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'BLOB_UNKNOWN' }] })));
    peer.listen(0, '127.0.0.1');
    await once(peer, 'listening');
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.prependListener('uncaughtException', onUncaught);
    try {
      const { c } = await coordinator('follower');
      await assert.rejects(c.follow(`http://127.0.0.1:${(peer.address() as { port: number }).port}`, digest(), new AbortController().signal), { name: 'PeerUnavailableError', message: /answered 404/ });
      for (let i = 0; i < 5; i++) await tick();
      assert.deepEqual(uncaught, []);
    } finally {
      process.off('uncaughtException', onUncaught);
      peer.close();
    }
  });

  it('a lease nobody renews expires; its old holder can neither renew nor release the new one', async () => {
    const { c: a } = await coordinator('a2', { ttlMs: 1_000 });
    const { c: b, metrics: bm } = await coordinator('b2', { ttlMs: 1_000 });
    const d = digest();
    const held = await a.claim(d);
    assert.equal(held.kind, 'lease');
    // b waits for it (bounded by the TTL it was told), then claims it.
    const seen = await b.claim(d);
    assert.equal(seen.kind, 'peer');
    await b.waitForRelease(d, 5_000, new AbortController().signal);
    assert.equal(await b.holder(d), null, 'expired');
    const taken = await b.claim(d);
    assert.equal(taken.kind, 'lease');
    assert.equal(bm.leases.acquired, 1);
    assert.equal(await (held.kind === 'lease' && held.lease.renew()), false, 'the old holder lost it');
    if (held.kind === 'lease') await held.lease.release();
    assert.equal((await b.holder(d))?.id, 'b2', 'the release of a lost lease leaves the new holder alone');
  });

  it('waitForRelease is bounded: a lease that stays is waited for at most maxMs', async () => {
    const { c: a } = await coordinator('a3');
    const { c: b } = await coordinator('b3');
    const d = digest();
    assert.equal((await a.claim(d)).kind, 'lease');
    await b.waitForRelease(d, 100, new AbortController().signal);
    assert.equal((await b.holder(d))?.id, 'a3', 'still held: the wait ended on its bound');
  });

  it('a shared value (the token signing key): replicas asking at once all get the first one stored', async () => {
    const cs = await Promise.all(['k1', 'k2', 'k3'].map((id) => coordinator(id, { prefix: 'shared-test:' })));
    const values = await Promise.all(cs.map(({ c }, i) => c.shared('token-signing-key', () => `key of replica ${i}`)));
    assert.equal(new Set(values).size, 1, values.join(', '));
    assert.match(values[0]!, /^key of replica \d$/);
    assert.equal(await cs[0]!.c.shared('token-signing-key', () => 'later'), values[0], 'never replaced');
  });

  it('the maintenance lock: one holder at a time (the others are told who), renewed while held, released at the end', async () => {
    // A TTL far above any event-loop stall of a loaded machine (renewed every second).
    const { c: a, metrics: am } = await coordinator('m-a', { prefix: 'maint1:', maintenanceTtlMs: 3_000 });
    const { c: b, metrics: bm } = await coordinator('m-b', { prefix: 'maint1:', maintenanceTtlMs: 3_000 });
    const held = await a.acquire();
    assert.equal(held.kind, 'held');
    assert.equal(am.held, true);
    assert.deepEqual(await b.acquire(), { kind: 'busy', holder: 'm-a' });
    // Renewed every third of its TTL: its remaining TTL goes up again (a renewal observed, not
    // slept for), several times, and it is still a's well past one TTL.
    let renewals = 0;
    for (let prev = await redisPttl(a); renewals < 3; ) {
      await new Promise<void>((r) => setTimeout(r, 20));
      const now = await redisPttl(a);
      assert.ok(now > 0, 'never lapses while held');
      if (now > prev) renewals++; // between two polls it went up: renewed
      prev = now;
    }
    assert.deepEqual(await b.acquire(), { kind: 'busy', holder: 'm-a' }, 'still held, well past one TTL');
    assert.equal(held.kind === 'held' && held.signal.aborted, false);
    if (held.kind === 'held') await held.release();
    assert.equal(am.held, false);
    assert.equal(await a.maintenanceHolder(), null);
    const next = await b.acquire();
    assert.equal(next.kind, 'held');
    assert.deepEqual({ a: am.maintenance, b: bm.maintenance }, { a: { acquired: 1, busy: 0, unavailable: 0, lost: 0 }, b: { acquired: 1, busy: 2, unavailable: 0, lost: 0 } });
    if (next.kind === 'held') await next.release();
  });

  it('the maintenance lock of a holder that died lapses after its TTL; a holder that finds it taken over is told (signal)', async () => {
    const { c: a, metrics: am } = await coordinator('d-a', { prefix: 'maint2:', maintenanceTtlMs: 900 });
    const { c: b } = await coordinator('d-b', { prefix: 'maint2:', maintenanceTtlMs: 900 });
    const held = await a.acquire();
    assert.equal(held.kind, 'held');
    // "Dies": another client removes the key, as its expiry would; a's next renewal finds it gone.
    const lost = held.kind === 'held' ? new Promise((resolve) => held.signal.addEventListener('abort', resolve)) : undefined;
    const taken = await (async () => {
      await a.forceDropMaintenanceForTest();
      return b.acquire();
    })();
    assert.equal(taken.kind, 'held');
    await lost;
    assert.equal(am.maintenance.lost, 1);
    assert.equal(am.held, false);
    if (held.kind === 'held') await held.release();
    assert.equal(await b.maintenanceHolder(), 'd-b', "the old holder's release leaves the new one alone");
    if (taken.kind === 'held') await taken.release();
  });

  it('digest guards: a collection gets no claim while a push (on any replica) uses the digest; a push waits for a claimed digest', async () => {
    const { c: pusher } = await coordinator('g-push', { prefix: 'guard:' });
    const { c: gc } = await coordinator('g-gc', { prefix: 'guard:' });
    const [x, y] = [digest(), digest()];
    const use = await pusher.use([x, y]);
    assert.equal(use.coordinated, true);
    assert.equal(await gc.collect(x), undefined, 'in use');
    await use.release();
    const done = await gc.collect(x);
    assert.ok(done, 'free again');
    let used = false;
    const waiting = pusher.use([y, x]).then((u) => ((used = true), u));
    // The push can't have its marks while x is claimed: it is still waiting after y's mark was tried.
    await tick();
    assert.equal(used, false);
    await done();
    const u2 = await waiting;
    assert.equal(u2.coordinated, true);
    assert.equal(await gc.collect(y), undefined);
    await u2.release();
  });

  it('digest guards: a push mark of a dead replica lapses after its TTL', async () => {
    const { c: pusher } = await coordinator('l-push', { prefix: 'guard2:', guardTtlMs: 200 });
    const { c: gc } = await coordinator('l-gc', { prefix: 'guard2:', guardTtlMs: 200 });
    const x = digest();
    await pusher.use([x]); // never released
    assert.equal(await gc.collect(x), undefined);
    let claim: (() => Promise<void>) | undefined;
    while (!(claim = await gc.collect(x))) await new Promise<void>((r) => setTimeout(r, 25));
    await claim();
  });

  it('two key prefixes on one Redis do not see each other', async () => {
    const { c: one } = await coordinator('p1', { prefix: 'one:' });
    const { c: two } = await coordinator('p2', { prefix: 'two:' });
    const d = digest();
    assert.equal((await one.claim(d)).kind, 'lease');
    assert.equal((await two.claim(d)).kind, 'lease', 'another installation downloads on its own');
  });

  it('Redis unreachable: claims answer alone at once, the gauge says down; Redis back: coordinated again without a restart', async () => {
    const { c, metrics } = await coordinator('d1');
    assert.equal(metrics.up, true);
    await redis.stop();
    await c.until(false);
    assert.equal(metrics.up, false);
    assert.deepEqual(await c.claim(digest()), { kind: 'alone', reason: 'redis unreachable' });
    await redis.start();
    await c.until(true);
    assert.equal(metrics.up, true);
    assert.equal((await c.claim(digest())).kind, 'lease');
  });
});
