/**
 * Issue #15: several replicas behave as one cache. Three in-process hubcaches (the light harness:
 * the real cache, HTTP app and follow endpoint) share ONE store (the memory stores, like an object
 * store: no local file to borrow, fills spool their own copy) and one REAL redis-server; the
 * upstream holds blob bodies after a few bytes (BlobTap) so every fill stays in flight until the
 * test lets it go. What reaches the upstream is counted, never timed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import winston from 'winston';
import { createPeerServer } from '../../src/cluster/peer-server.js';
import { RedisCoordinator } from '../../src/cluster/redis-coordinator.js';
import type { TagCoordinator } from '../../src/cache/fill-coordinator.js';
import type { PullThroughRegistry } from '../../src/cache/pull-through.js';
import { sha256Digest, type Digest } from '../../src/domain/digest.js';
import { MemoryAccessRecord } from '../../src/storage/memory/memory-access-record.js';
import { MemoryBlobStore } from '../../src/storage/memory/memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../../src/storage/memory/memory-manifest-store.js';
import { BlobTap, startHostileUpstream, type HostileUpstream } from '../../src/upstream/testing/hostile-registry.js';
import { ObservedMetrics, startApp, type AppHarness, type Stores } from '../support/app-harness.js';
import { holdUpstream, putImage } from '../support/oci-fixtures.js';
import { rawRequest } from '../support/raw-http.js';
import { startRedis, type RedisServer } from '../support/redis.js';

const KiB = 1024;
const quiet = winston.createLogger({ transports: [new winston.transports.Console({ silent: true })] });

interface Replica {
  readonly id: string;
  readonly hc: AppHarness;
  readonly coordinator: RedisCoordinator;
  /** The cluster metrics (leases, peer bytes, Redis up). */
  readonly cluster: ObservedMetrics;
  /** Follows of a fill asked of this replica's follow endpoint: how many found none to stream (404). */
  readonly follows: { asked: number; missed: number; onAsked?: () => void };
  /** Resolves once this replica has been refused a tag's lock `n` times (another replica holds it). */
  tagClaims(n: number): Promise<void>;
  /** Stops the follow endpoint and drops the Redis connection without releasing anything: a dead replica, as the others see it. */
  die(): Promise<void>;
  close(): Promise<void>;
}

async function startReplica(id: string, stores: Stores, redisUrl: string, upstreamUrl: string, fillLeaseTtlMs: number): Promise<Replica> {
  let cache: PullThroughRegistry | undefined;
  const follows: Replica['follows'] = { asked: 0, missed: 0 };
  const followFill = async (d: Digest, s: AbortSignal) => {
    follows.asked++;
    follows.onAsked?.();
    const fill = await cache!.followFill(d, s);
    if (!fill) follows.missed++;
    return fill;
  };
  const peer = createPeerServer({ source: { followFill }, logger: quiet });
  peer.listen(0, '127.0.0.1');
  await once(peer, 'listening');
  const cluster = new ObservedMetrics();
  const coordinator = new RedisCoordinator({
    redis: { url: redisUrl, keyPrefix: 'itest:' },
    advertiseUrl: `http://127.0.0.1:${(peer.address() as AddressInfo).port}`,
    fillLeaseTtlMs,
    holderId: id,
    logger: quiet,
    metrics: cluster,
  });
  assert.ok(await coordinator.connected(), `${id} reaches redis`);
  let refused = 0;
  const refusals: Array<() => void> = [];
  const tags: TagCoordinator = {
    validated: (k, t) => coordinator.validated(k, t),
    claimRevalidation: async (k, t) => {
      const claim = await coordinator.claimRevalidation(k, t);
      if (claim === false) {
        refused++;
        refusals.splice(0).forEach((wake) => wake());
      }
      return claim;
    },
    publish: (k, t, e) => coordinator.publish(k, t, e),
    releaseRevalidation: (k, t) => coordinator.releaseRevalidation(k, t),
  };
  const hc = await startApp({ instanceId: id, stores, upstreams: { 'docker.io': { url: upstreamUrl, tagTtlMs: 60_000 } }, coordinator, tags, resumeAttempts: 0 });
  cache = hc.cache;
  let dead = false;
  const die = async () => {
    dead = true;
    peer.closeAllConnections();
    await new Promise<void>((r) => peer.close(() => r()));
    await coordinator.close();
  };
  return {
    id,
    hc,
    coordinator,
    cluster,
    follows,
    tagClaims: async (n) => {
      while (refused < n) await new Promise<void>((r) => refusals.push(r));
    },
    die,
    close: async () => {
      await hc.close();
      if (!dead) await die();
    },
  };
}

function sharedStores(): Stores {
  return { blobs: new MemoryBlobStore(), manifests: new MemoryManifestStore(), metadata: new MemoryMetadataStore(), access: new MemoryAccessRecord() };
}

describe('three replicas, one store, one Redis: one upstream download per blob (issue #15)', () => {
  let redis: RedisServer;
  let up: HostileUpstream;
  const taps = new Map<string, BlobTap>();
  const tap = (prefix: string, holdAfter = 256 * KiB) => {
    const t = new BlobTap({ holdAfter });
    taps.set(prefix, t);
    up.registry.behave(`${prefix}/`, t.behaviour);
    return t;
  };
  const blob = (size: number): { bytes: Buffer; digest: Digest } => {
    const bytes = randomBytes(size);
    return { bytes, digest: up.registry.putBlob(bytes) };
  };
  const upstreamGets = (digest: Digest) => up.server.count((r) => r.method === 'GET' && r.url.endsWith(`/blobs/${digest}`));

  before(async () => {
    redis = await startRedis();
    up = await startHostileUpstream();
  });
  after(async () => {
    for (const t of taps.values()) t.release();
    await up.close();
    await redis.close();
  });

  it('20 concurrent cold GETs of one blob spread over three replicas: exactly 1 upstream GET, 20 correct bodies; the others stream it from the filling replica', async () => {
    const stores = sharedStores();
    const replicas = await Promise.all(['r1', 'r2', 'r3'].map((id) => startReplica(id, stores, redis.url, up.url, 10_000)));
    try {
      const t = tap('spread');
      const { bytes, digest } = blob(2 * 1024 * KiB + 17);
      const path = `/v2/spread/app/blobs/${digest}`;
      // r1 starts the download (it holds the lease) …
      const first = replicas[0]!.hc.pull(path);
      await t.started(1);
      assert.equal((await replicas[0]!.coordinator.holder(digest))?.id, 'r1');
      // … then 19 more, spread: r1's own 6 join its fill; r2's 7 and r3's 6 share one relay of it per
      // replica (one stream from r1's follow endpoint each), which r1 counts as 2 more joins.
      const rest = Array.from({ length: 19 }, (_, i) => replicas[(i + 1) % 3]!.hc.pull(path));
      await Promise.all([replicas[0]!.hc.metrics.untilJoined('blob', 6 + 2), replicas[1]!.hc.metrics.untilJoined('blob', 6), replicas[2]!.hc.metrics.untilJoined('blob', 5)]);
      t.release();
      const pulled = [await first, ...(await Promise.all(rest))];
      assert.deepEqual(
        pulled.map((p) => p.status),
        Array(20).fill(200),
      );
      for (const p of pulled) assert.ok(p.body.equals(bytes), 'every body is the blob');
      assert.equal(upstreamGets(digest), 1, 'one upstream GET for the whole cluster');
      assert.equal(t.transfers.length, 1);
      const followed = await Promise.all(replicas.map((r) => r.cluster.value('hubcache_cluster_fill_leases_total', { outcome: 'followed' })));
      assert.deepEqual(followed, [0, 1, 1], 'r2 and r3 each followed r1 with one stream');
      assert.equal(await replicas[0]!.cluster.value('hubcache_cluster_fill_leases_total', { outcome: 'acquired' }), 1);
      assert.equal(await replicas[1]!.cluster.value('hubcache_cluster_peer_follow_bytes_total'), bytes.length, 'the blob crossed from r1 to r2 once');
      await Promise.all(replicas.map((r) => r.hc.settle()));
      assert.equal((await stores.blobs.stat(digest))?.size, bytes.length, 'committed once to the shared store');
      assert.equal(await replicas[0]!.coordinator.holder(digest), null, 'the lease was released at the commit');
      // Warm now: any replica serves it from the store.
      const warm = await replicas[2]!.hc.pull(path);
      assert.equal(warm.cache, 'hit');
      assert.equal(upstreamGets(digest), 1);
    } finally {
      await Promise.all(replicas.map((r) => r.close()));
    }
  });

  it('a follower gets its first bytes while the fill is still in flight on another replica, not after it ends', async () => {
    const stores = sharedStores();
    const [a, b] = await Promise.all(['f1', 'f2'].map((id) => startReplica(id, stores, redis.url, up.url, 10_000)));
    try {
      const t = tap('early');
      const { bytes, digest } = blob(1024 * KiB);
      const path = `/v2/early/app/blobs/${digest}`;
      const filling = a!.hc.pull(path);
      await t.started(1);
      let gotBytes!: () => void;
      const firstBytes = new Promise<void>((r) => (gotBytes = r));
      const following = rawRequest(`${b!.hc.url}${path}`, { onData: () => gotBytes(), timeoutMs: 60_000 });
      await firstBytes;
      assert.equal(t.transfers[0]!.outcome, undefined, 'the upstream body is still held: the fill has not ended');
      t.release();
      const [res, own] = await Promise.all([following, filling]);
      assert.equal(res.status, 200);
      assert.ok(res.body.equals(bytes));
      assert.ok(own.body.equals(bytes));
      assert.equal(upstreamGets(digest), 1);
    } finally {
      await Promise.all([a!.close(), b!.close()]);
    }
  });

  it('a follower that asks the lease holder before its fill started (the holder still looking at the store) is streamed that fill, not sent away to wait for the lease', async () => {
    const stores = sharedStores();
    // g1's store lookup after it took the lease is held until g2's follow has reached g1.
    let holdStat: Promise<void> | undefined;
    let releaseStat!: () => void;
    let statHeld!: () => void;
    const atStat = new Promise<void>((r) => (statHeld = r));
    let g1Coordinator: RedisCoordinator | undefined;
    const gated: Stores = {
      ...stores,
      blobs: {
        stat: async (d) => {
          if (holdStat && (await g1Coordinator?.holder(d))?.id === 'g1') {
            const held = holdStat;
            holdStat = undefined;
            statHeld();
            await held;
          }
          return stores.blobs.stat(d);
        },
        open: (d, o) => stores.blobs.open(d, o),
        create: (o) => stores.blobs.create(o),
        delete: (d) => stores.blobs.delete(d),
        list: () => stores.blobs.list(),
      },
    };
    const [g1, g2] = await Promise.all([startReplica('g1', gated, redis.url, up.url, 10_000), startReplica('g2', stores, redis.url, up.url, 10_000)]);
    g1Coordinator = g1.coordinator;
    try {
      const t = tap('gated');
      const { bytes, digest } = blob(1024 * KiB + 3);
      const path = `/v2/gated/app/blobs/${digest}`;
      holdStat = new Promise<void>((r) => (releaseStat = r));
      const filling = g1.hc.pull(path);
      await atStat;
      assert.equal((await g1.coordinator.holder(digest))?.id, 'g1', 'g1 holds the lease, its fill not started yet');
      const asked = new Promise<void>((r) => (g1.follows.onAsked = r));
      const following = g2.hc.pull(path);
      await asked;
      releaseStat();
      await t.started(1);
      t.release();
      const [own, res] = await Promise.all([filling, following]);
      assert.equal(res.status, 200);
      assert.ok(res.body.equals(bytes), 'the follower got the blob');
      assert.ok(own.body.equals(bytes));
      assert.deepEqual(g1.follows, { asked: 1, missed: 0, onAsked: g1.follows.onAsked }, "g2's one follow was answered with g1's fill, not a 404");
      assert.equal(await g2.cluster.value('hubcache_cluster_fill_leases_total', { outcome: 'followed' }), 1);
      assert.equal(upstreamGets(digest), 1);
    } finally {
      await Promise.all([g1.close(), g2.close()]);
    }
  });

  it('the filling replica dies mid-fill: its lease expires (short TTL) and the next request on another replica becomes the filler; bodies are whole and correct', async () => {
    const stores = sharedStores();
    // 1.5 s: short, yet long enough that the holder's renewals (every 500 ms) land on a loaded machine.
    const [a, b] = await Promise.all(['d1', 'd2'].map((id) => startReplica(id, stores, redis.url, up.url, 1_500)));
    const t = tap('dies');
    try {
      const { bytes, digest } = blob(1024 * KiB + 3);
      const path = `/v2/dies/app/blobs/${digest}`;
      const ac = new AbortController();
      const orphan = a!.hc.fetch(path, { signal: ac.signal }).catch(() => undefined);
      await t.started(1);
      assert.equal((await b!.coordinator.holder(digest))?.id, 'd1');
      // A client of d2 follows d1's fill and has its first bytes …
      let gotBytes!: () => void;
      const firstBytes = new Promise<void>((r) => (gotBytes = r));
      const follower = rawRequest(`${b!.hc.url}${path}`, { onData: () => gotBytes(), timeoutMs: 60_000 });
      await firstBytes;
      // … when d1 "dies": nobody can reach its follow endpoint, it renews nothing (its Redis connection is gone).
      await a!.die();
      const cut = await follower;
      assert.equal(cut.outcome, 'error', "the follower's response is aborted, never ended cleanly");
      assert.ok(cut.body.length < bytes.length);
      ac.abort();
      await orphan;
      // The next request, on d2, finds d1 unreachable, waits for its lease to expire and fills itself.
      const next = b!.hc.pull(path);
      const [, second] = await t.started(2);
      second!.release();
      const res = await next;
      assert.equal(res.status, 200);
      assert.ok(res.body.equals(bytes), 'the new filler served the whole blob');
      // d2 took the lease: after finding d1 unreachable and waiting for its lease (`expired`), or,
      // on a slow machine, after the 1.5 s had already run out before it asked (`acquired`).
      const taken = (await b!.cluster.value('hubcache_cluster_fill_leases_total', { outcome: 'expired' })) + (await b!.cluster.value('hubcache_cluster_fill_leases_total', { outcome: 'acquired' }));
      assert.equal(taken, 1, 'd2 became the filler');
      assert.equal(upstreamGets(digest), 2, "the dead replica's download and the new one");
      await b!.hc.settle();
      t.release(); // the dead replica's fill (still running in this test process) may end now
      await a!.hc.settle();
      const stored = await stores.blobs.open(digest, {});
      const chunks: Buffer[] = [];
      for await (const c of stored) chunks.push(c as Buffer);
      assert.equal(sha256Digest(Buffer.concat(chunks)), digest, 'nothing corrupt in the store');
    } finally {
      await Promise.all([a!.close(), b!.close()]);
    }
  });

  it('Redis down: content is still served and verified, each replica downloading on its own; Redis back: coordinated again, no restart', async () => {
    const stores = sharedStores();
    const replicas = await Promise.all(['x1', 'x2'].map((id) => startReplica(id, stores, redis.url, up.url, 10_000)));
    try {
      const before = blob(300 * KiB);
      await redis.stop();
      await Promise.all(replicas.map((r) => r.coordinator.until(false)));
      assert.equal(await replicas[0]!.cluster.value('hubcache_cluster_redis_up'), 0);
      const res = await replicas[0]!.hc.pull(`/v2/plain/app/blobs/${before.digest}`);
      assert.equal(res.status, 200);
      assert.ok(res.body.equals(before.bytes), 'filled alone, verified');
      // Stored content on the other replica: read from the shared store without Redis.
      await replicas[0]!.hc.settle();
      const warm = await replicas[1]!.hc.pull(`/v2/plain/app/blobs/${before.digest}`);
      assert.equal(warm.cache, 'hit');
      await redis.start();
      await Promise.all(replicas.map((r) => r.coordinator.until(true)));
      assert.equal(await replicas[0]!.cluster.value('hubcache_cluster_redis_up'), 1);
      const after = blob(300 * KiB);
      const again = await replicas[1]!.hc.pull(`/v2/plain/app/blobs/${after.digest}`);
      assert.equal(again.status, 200);
      assert.equal(await replicas[1]!.cluster.value('hubcache_cluster_fill_leases_total', { outcome: 'acquired' }), 1, 'the claim went through Redis again');
    } finally {
      await Promise.all(replicas.map((r) => r.close()));
    }
  });

  it('a tag past its TTL is revalidated with ONE upstream HEAD for the whole cluster; the other replicas serve their copy meanwhile, then see the new validation', async () => {
    const stores = sharedStores();
    const replicas = await Promise.all(['t1', 't2', 't3'].map((id) => startReplica(id, stores, redis.url, up.url, 10_000)));
    try {
      putImage(up.registry, 'tagged/app', 'v1', { seed: 'cluster-tag' });
      const path = '/v2/tagged/app/manifests/v1';
      const heads = () => up.server.count((r) => r.method === 'HEAD' && r.url.endsWith('/tagged/app/manifests/v1'));
      assert.equal((await replicas[0]!.hc.pull(path)).cache, 'miss');
      for (const r of replicas) assert.equal((await r.hc.pull(path)).cache, 'hit', 'fresh in the shared store');
      for (const r of replicas) r.hc.clock.advance(61_000);
      // t1 takes the revalidation; its HEAD is held while t2 and t3 are asked.
      const held = holdUpstream(up.registry, (req) => req.method === 'HEAD' && (req.url ?? '').endsWith('/tagged/app/manifests/v1'));
      const first = replicas[0]!.hc.pull(path);
      await held.parked(1);
      const others = await Promise.all([replicas[1]!.hc.pull(path), replicas[2]!.hc.pull(path)]);
      assert.deepEqual(
        others.map((o) => [o.status, o.cache]),
        [
          [200, 'hit'],
          [200, 'hit'],
        ],
        'served from their copy while t1 asks',
      );
      held.release();
      assert.equal((await first).cache, 'revalidated');
      assert.equal(heads(), 1, 'one HEAD for the cluster');
      // The validation is shared: no replica asks again within the TTL.
      for (const r of replicas) assert.equal((await r.hc.pull(path)).cache, 'hit');
      assert.equal(heads(), 1);
    } finally {
      await Promise.all(replicas.map((r) => r.close()));
    }
  });

  it('a cold tag asked of three replicas at once: ONE upstream manifest GET for the cluster, the others serve what it stored', async () => {
    const stores = sharedStores();
    const replicas = await Promise.all(['c1', 'c2', 'c3'].map((id) => startReplica(id, stores, redis.url, up.url, 10_000)));
    try {
      const { digest } = putImage(up.registry, 'tagged/cold', 'v1', { seed: 'cluster-cold-tag' });
      const path = '/v2/tagged/cold/manifests/v1';
      const gets = () => up.server.count((r) => r.method === 'GET' && r.url.endsWith('/tagged/cold/manifests/v1'));
      // c1's GET is held while c2 and c3 are asked: they must not GET it too.
      const held = holdUpstream(up.registry, (req) => req.method === 'GET' && (req.url ?? '').endsWith('/tagged/cold/manifests/v1'));
      const first = replicas[0]!.hc.pull(path);
      await held.parked(1);
      const others = Promise.all([replicas[1]!.hc.pull(path), replicas[2]!.hc.pull(path)]);
      // Each has asked Redis for the tag's lock (and was refused) before c1's GET goes on.
      await Promise.all(['c2', 'c3'].map((id) => replicas.find((r) => r.id === id)!.tagClaims(1)));
      held.release();
      const all = [await first, ...(await others)];
      assert.deepEqual(all.map((o) => [o.status, o.digest]), all.map(() => [200, digest]));
      assert.equal(gets(), 1, 'one manifest GET for the cluster');
    } finally {
      await Promise.all(replicas.map((r) => r.close()));
    }
  });

  it('a peer that streams wrong bytes: the follower aborts its client (never a clean 200), nothing is stored', async () => {
    const stores = sharedStores();
    const [b] = await Promise.all(['w2'].map((id) => startReplica(id, stores, redis.url, up.url, 10_000)));
    const { bytes, digest } = blob(256 * KiB);
    // A "replica" that holds the lease and answers its follow endpoint with the right length of wrong bytes.
    const liar = createServer((_req, res) => res.writeHead(200, { 'content-length': String(bytes.length) }).end(randomBytes(bytes.length)));
    liar.listen(0, '127.0.0.1');
    await once(liar, 'listening');
    const holder = new RedisCoordinator({ redis: { url: redis.url, keyPrefix: 'itest:' }, advertiseUrl: `http://127.0.0.1:${(liar.address() as AddressInfo).port}`, fillLeaseTtlMs: 10_000, holderId: 'liar', logger: quiet, metrics: new ObservedMetrics() });
    try {
      assert.ok(await holder.connected());
      assert.equal((await holder.claim(digest)).kind, 'lease');
      const res = await rawRequest(`${b!.hc.url}/v2/lies/app/blobs/${digest}`, { timeoutMs: 60_000 });
      assert.equal(res.outcome, 'error', 'the connection is aborted');
      assert.ok(res.body.length < bytes.length, 'the last byte never went out');
      assert.equal(await stores.blobs.stat(digest), undefined);
      assert.equal(upstreamGets(digest), 0, 'the upstream was not asked (the lease says another replica downloads it)');
    } finally {
      await holder.close();
      liar.closeAllConnections();
      liar.close();
      await b!.close();
    }
  });
});
