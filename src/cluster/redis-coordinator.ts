import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { Cluster, Redis } from 'ioredis';
import type { Digest } from '../domain/digest.js';
import {
  PeerUnavailableError,
  type DigestGuards,
  type FillClaim,
  type FillCoordinator,
  type FillLease,
  type MaintenanceClaim,
  type MaintenanceLock,
  type TagCoordinator,
} from '../cache/fill-coordinator.js';
import type { RepoKey, Tag } from '../domain/reference.js';
import { toTagEntry, type TagEntry } from '../storage/tag-store.js';
import type { Logger } from '../lib/logger.js';
import type { ClusterConfig } from '../config/schema.js';
import { redisConnection, type ConnectionTuning } from './redis-options.js';
import { RedisAccessRecord, type RedisAccessRecordOptions } from './redis-access-record.js';
import { RedisRateLimits, type RedisRateLimitsOptions } from './redis-rate-limits.js';
import { PEER_SECRET_HEADER, peerFillPath } from './peer-server.js';

/** What the cluster reports (the Metrics facade implements it). */
export interface ClusterMetrics {
  /** A fill lease: `acquired` (this replica downloads), `followed` (another one does: streamed from it), `expired` (acquired after its previous holder stopped answering). */
  fillLease(outcome: 'acquired' | 'followed' | 'expired'): void;
  /** Bytes streamed from another replica's fill in flight. */
  peerFollowBytes(n: number): void;
  /** Redis reachable (1) or not (0). */
  redisUp(up: boolean): void;
  /** The maintenance lock (eviction, hosted GC): taken, refused because another replica holds it, not askable (Redis down), or lost while held. */
  maintenanceLock(outcome: 'acquired' | 'busy' | 'unavailable' | 'lost'): void;
  /** Whether this replica holds the maintenance lock now. */
  maintenanceHeld(held: boolean): void;
}

export interface RedisCoordinatorOptions {
  readonly redis: ClusterConfig['redis'];
  /** This replica's follow endpoint, as the others reach it (cluster.advertiseUrl). */
  readonly advertiseUrl: string;
  readonly fillLeaseTtlMs: number;
  /** Sent to peers' follow endpoints (X-Hubcache-Peer-Secret) when set. */
  readonly peerSecret?: string;
  /** Names this replica in leases and logs (the instance id). */
  readonly holderId: string;
  readonly logger: Logger;
  readonly metrics: ClusterMetrics;
  readonly tuning?: ConnectionTuning;
  /** Time to wait for a peer's answer (its fill's first byte waits for upstream's answer). Default 60 s. */
  readonly peerHeadersTimeoutMs?: number;
  /** The maintenance lock's TTL, renewed every third of it while held (a dead holder's lock lapses after it). Default 30 s. */
  readonly maintenanceLockTtlMs?: number;
  /** The TTL of a push's or a collection's mark on a digest (DigestGuards). Default 60 s. */
  readonly digestGuardTtlMs?: number;
}

// SET NX PX or report the holder: atomic, so a claim never sees a lease vanish between two commands.
const CLAIM = `local ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if ok then return {1, ARGV[1], tonumber(ARGV[2])} end
return {0, redis.call('GET', KEYS[1]) or false, redis.call('PTTL', KEYS[1])}`;
// Extend or delete only the lease this replica holds (its value names this very lease).
const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

// Digest guards (push vs garbage collection): `gc:{<digest>}` is a collection's claim (a string with
// a TTL), `use:{<digest>}` the pushes using the digest (a sorted set of tokens scored by their expiry
// on Redis's clock, so a dead replica's mark lapses). Both keys of a digest share a hash tag: one
// slot, one script, also on Redis Cluster.
const USE = `if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1`;
const COLLECT = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) > 0 then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0`;
// An upload session's record `{id, url, repository}`: extended or deleted by its owner only.
const RENEW_OWN = `local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v).id == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;
const RELEASE_OWN = `local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v).id == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

type Client = Redis | Cluster;

const MAINTENANCE_KEY = 'lock:maintenance';

/** A replica revalidating a tag holds its lock this long at most (released when its HEAD is done). */
const TAG_LOCK_MS = 30_000;
const TAG_RECORD_MS = 24 * 3_600_000;

/**
 * The cluster's fill leases in Redis (docs/architecture.md#several-replicas): `fill:<digest>` holds
 * `{id, url, lease}` of the replica downloading the blob, with a TTL it renews while the download
 * moves. Redis unreachable: every claim answers `alone` at once (commands fail instead of
 * queueing), `hubcache_cluster_redis_up` is 0 and readiness says `degraded`; ioredis reconnects by
 * itself and the next claim after that is coordinated again.
 */
export class RedisCoordinator implements FillCoordinator, TagCoordinator, MaintenanceLock, DigestGuards {
  readonly #o: RedisCoordinatorOptions;
  readonly #redis: Client;
  readonly #peers: Agent;
  #up = false;
  readonly #waiters: Array<{ up: boolean; resolve: () => void }> = [];
  #downSince: number | undefined;
  /** Digests whose holder stopped answering: the next lease acquired on them replaced an expired one. */
  readonly #suspect = new Set<Digest>();

  constructor(o: RedisCoordinatorOptions) {
    this.#o = o;
    const conn = redisConnection(o.redis, { connectionName: `hubcache-${o.holderId}`, ...o.tuning });
    this.#redis = conn.kind === 'single' ? new Redis(conn.url, conn.options) : conn.kind === 'sentinel' ? new Redis(conn.options) : new Cluster([...conn.nodes], conn.options);
    this.#redis.on('ready', () => this.#setUp(true));
    this.#redis.on('close', () => this.#setUp(false));
    this.#redis.on('end', () => this.#setUp(false));
    // Errors are reported by the state changes above (once per spell), not per reconnect attempt.
    this.#redis.on('error', () => {});
    o.metrics.redisUp(false);
    this.#peers = new Agent({ headersTimeout: o.peerHeadersTimeoutMs ?? 60_000, bodyTimeout: 60_000, connectTimeout: 2_000 });
  }

  /** Redis answered the last time it was asked (the connection is ready). */
  get up(): boolean {
    return this.#up;
  }

  /** Resolves when Redis is (or becomes) reachable (`true`) or unreachable (`false`): an event, not a poll. */
  until(up: boolean): Promise<void> {
    if (this.#up === up) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ up, resolve }));
  }

  /** Resolves once connected (start-up waits for it briefly; tests wait for it). */
  async connected(timeoutMs = 5_000): Promise<boolean> {
    if (this.#up) return true;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => (this.#redis.off('ready', ok), resolve(false)), timeoutMs);
      const ok = () => (clearTimeout(timer), resolve(true));
      this.#redis.once('ready', ok);
    });
  }

  /** Whether Redis has answered once since start (the first connection is logged once). */
  #connectedOnce = false;

  #setUp(up: boolean): void {
    if (up === this.#up) return;
    this.#up = up;
    this.#o.metrics.redisUp(up);
    for (const w of this.#waiters.filter((x) => x.up === up)) {
      this.#waiters.splice(this.#waiters.indexOf(w), 1);
      w.resolve();
    }
    if (up) {
      if (this.#downSince !== undefined) this.#o.logger.info('redis reachable again: downloads are coordinated across replicas', { downMs: Date.now() - this.#downSince });
      else if (!this.#connectedOnce) this.#o.logger.info('redis connected: downloads are coordinated across replicas', {});
      this.#connectedOnce = true;
      this.#downSince = undefined;
    } else {
      this.#downSince = Date.now();
      this.#o.logger.error('redis unreachable: each replica downloads on its own (verified), tags are served from the store', {});
    }
  }

  #key(digest: Digest): string {
    return `fill:${digest}`;
  }

  async claim(digest: Digest): Promise<FillClaim> {
    if (!this.#up) return { kind: 'alone', reason: 'redis unreachable' };
    const value = JSON.stringify({ id: this.#o.holderId, url: this.#o.advertiseUrl, lease: randomBytes(8).toString('hex') });
    let reply: [number, string | false | null, number];
    try {
      reply = (await this.#redis.eval(CLAIM, 1, this.#key(digest), value, String(this.#o.fillLeaseTtlMs))) as typeof reply;
    } catch (err) {
      this.#o.logger.warn('fill lease not claimed: redis failed', { digest, error: (err as Error).message });
      return { kind: 'alone', reason: 'redis failed' };
    }
    const [won, held, pttl] = reply;
    if (won === 1) {
      this.#o.metrics.fillLease(this.#suspect.delete(digest) ? 'expired' : 'acquired');
      return { kind: 'lease', lease: this.#lease(digest, value) };
    }
    if (typeof held !== 'string') return this.claim(digest); // expired between SET and GET: try again
    try {
      const holder = JSON.parse(held) as { id: string; url: string };
      return { kind: 'peer', holder: holder.id, url: holder.url, ttlMs: pttl > 0 ? pttl : this.#o.fillLeaseTtlMs };
    } catch {
      return { kind: 'alone', reason: 'unreadable lease' };
    }
  }

  #lease(digest: Digest, value: string): FillLease {
    let taken = false;
    let released = false;
    const key = this.#key(digest);
    const ttlMs = this.#o.fillLeaseTtlMs;
    return {
      ttlMs,
      take: () => !taken && (taken = true),
      renew: async () => {
        if (released) return false;
        try {
          return (await this.#redis.eval(RENEW, 1, key, value, String(ttlMs))) === 1;
        } catch {
          // Redis away: the lease may lapse; the fill goes on (verified) whatever happens.
          return true;
        }
      },
      release: async () => {
        if (released) return;
        released = true;
        await this.#redis.eval(RELEASE, 1, key, value).catch(() => {});
      },
    };
  }

  async follow(peerUrl: string, digest: Digest, signal: AbortSignal) {
    let res;
    try {
      res = await request(`${peerUrl}${peerFillPath(digest)}`, {
        dispatcher: this.#peers,
        signal,
        headers: this.#o.peerSecret ? { [PEER_SECRET_HEADER]: this.#o.peerSecret } : {},
      });
    } catch (err) {
      if (signal.aborted) throw err;
      this.#suspect.add(digest);
      throw new PeerUnavailableError(`peer ${peerUrl} unreachable: ${(err as Error).message}`, { cause: err });
    }
    const size = Number(res.headers['content-length']);
    if (res.statusCode !== 200 || !Number.isSafeInteger(size)) {
      // An unread undici body destroyed emits 'error' (RequestAbortedError): unheard, it would
      // crash the process — and a peer answers 404 whenever its fill ended just before we came.
      res.body.on('error', () => {});
      res.body.destroy();
      throw new PeerUnavailableError(`peer ${peerUrl} answered ${res.statusCode}`);
    }
    this.#o.metrics.fillLease('followed');
    res.body.on('data', (c: Buffer) => this.#o.metrics.peerFollowBytes(c.length));
    return { size, body: res.body };
  }

  async waitForRelease(digest: Digest, maxMs: number, signal: AbortSignal): Promise<void> {
    const until = Date.now() + maxMs;
    // A poll every tenth of the TTL: the holder released it (its fill ended) or it expired (it died).
    const step = Math.max(25, Math.floor(this.#o.fillLeaseTtlMs / 10));
    while (Date.now() < until && !signal.aborted && this.#up) {
      const exists = await this.#redis.exists(this.#key(digest)).catch(() => 0);
      if (!exists) return;
      await sleep(Math.min(step, Math.max(0, until - Date.now())), undefined, { signal }).catch(() => {});
    }
  }

  /**
   * A value every replica must agree on (the token signing key): the first replica to ask stores
   * `create()`'s value (SET NX), every replica then reads the stored one. Rejects when Redis can't
   * be asked: a replica must not go on with a value of its own.
   */
  async shared(name: string, create: () => string): Promise<string> {
    const key = `shared:${name}`;
    await this.#redis.set(key, create(), 'NX');
    const value = await this.#redis.get(key);
    if (value === null) throw new Error(`shared value ${name} vanished from redis`);
    return value;
  }

  #tagKey(key: RepoKey, tag: Tag): string {
    return `tag:${key.upstream}/${key.repo}:${tag}`;
  }

  async validated(key: RepoKey, tag: Tag): Promise<TagEntry | undefined> {
    if (!this.#up) return undefined;
    try {
      const v = await this.#redis.get(this.#tagKey(key, tag));
      return v === null ? undefined : toTagEntry(JSON.parse(v));
    } catch {
      return undefined;
    }
  }

  async claimRevalidation(key: RepoKey, tag: Tag): Promise<boolean | 'alone'> {
    if (!this.#up) return 'alone';
    try {
      // Held for the HEAD's duration at most (upstream request deadlines are shorter than this).
      return (await this.#redis.set(`lock:${this.#tagKey(key, tag)}`, this.#o.holderId, 'PX', TAG_LOCK_MS, 'NX')) === 'OK';
    } catch {
      return 'alone';
    }
  }

  async publish(key: RepoKey, tag: Tag, entry: TagEntry): Promise<void> {
    const k = this.#tagKey(key, tag);
    // The record outlives every tag TTL that matters; past a day the store's own record serves.
    await this.#redis
      .multi()
      .set(k, JSON.stringify(entry), 'PX', TAG_RECORD_MS)
      .del(`lock:${k}`)
      .exec()
      .catch(() => {});
  }

  async releaseRevalidation(key: RepoKey, tag: Tag): Promise<void> {
    await this.#redis.eval(RELEASE, 1, `lock:${this.#tagKey(key, tag)}`, this.#o.holderId).catch(() => {});
  }

  /**
   * The maintenance lock (`lock:maintenance`: `<holder id> <random>`, SET NX PX), renewed every
   * third of its TTL by check-and-extend while held; `signal` aborts when a renewal finds it gone
   * or Redis hasn't confirmed it for a whole TTL (it may have lapsed: another replica may run a
   * pass now). Released by check-and-delete.
   */
  async acquire(): Promise<MaintenanceClaim> {
    const metrics = this.#o.metrics;
    if (!this.#up) {
      metrics.maintenanceLock('unavailable');
      return { kind: 'unavailable', reason: 'redis unreachable' };
    }
    const ttl = this.#o.maintenanceLockTtlMs ?? 30_000;
    const value = `${this.#o.holderId} ${randomBytes(8).toString('hex')}`;
    let reply: [number, string | false | null, number];
    try {
      reply = (await this.#redis.eval(CLAIM, 1, MAINTENANCE_KEY, value, String(ttl))) as typeof reply;
    } catch (err) {
      metrics.maintenanceLock('unavailable');
      return { kind: 'unavailable', reason: `redis failed: ${(err as Error).message}` };
    }
    if (reply[0] !== 1) {
      metrics.maintenanceLock('busy');
      return { kind: 'busy', holder: typeof reply[1] === 'string' ? reply[1].split(' ')[0]! : 'unknown' };
    }
    metrics.maintenanceLock('acquired');
    metrics.maintenanceHeld(true);
    const lost = new AbortController();
    let confirmedAt = Date.now();
    let released = false;
    const lose = (why: string) => {
      if (lost.signal.aborted || released) return;
      metrics.maintenanceLock('lost');
      metrics.maintenanceHeld(false);
      this.#o.logger.warn('maintenance lock lost: the pass stops deleting', { why });
      lost.abort(new Error(`maintenance lock lost: ${why}`));
      clearInterval(timer);
    };
    const timer = setInterval(() => {
      void this.#redis.eval(RENEW, 1, MAINTENANCE_KEY, value, String(ttl)).then(
        (ok) => (ok === 1 ? (confirmedAt = Date.now()) : lose('taken over or expired')),
        () => Date.now() - confirmedAt >= ttl && lose('redis did not confirm it for a whole TTL'),
      );
    }, Math.max(10, Math.floor(ttl / 3)));
    timer.unref();
    return {
      kind: 'held',
      signal: lost.signal,
      release: async () => {
        if (released) return;
        released = true;
        clearInterval(timer);
        if (!lost.signal.aborted) metrics.maintenanceHeld(false);
        await this.#redis.eval(RELEASE, 1, MAINTENANCE_KEY, value).catch(() => {});
      },
    };
  }

  readonly #rateLimits: RedisRateLimits[] = [];

  /** The upstreams' rate-limit state shared by the replicas (redis-rate-limits.ts); closed with the coordinator. */
  rateLimits(o: Omit<RedisRateLimitsOptions, 'keyPrefix'>): RedisRateLimits {
    const r = new RedisRateLimits(this.#redis, { ...o, keyPrefix: this.#o.redis.keyPrefix ?? 'hubcache:' });
    this.#rateLimits.push(r);
    return r;
  }

  /** The cluster's shared last-access record (redis-access-record.ts), on this coordinator's connection. */
  accessRecord(o: RedisAccessRecordOptions = {}): RedisAccessRecord {
    return new RedisAccessRecord(this.#redis, o);
  }

  async lastPasses(): Promise<{ retention?: number; garbage?: number }> {
    if (!this.#up) return {};
    try {
      const h = await this.#redis.hgetall('maintenance:last');
      const num = (v: string | undefined) => (v !== undefined && Number.isFinite(Number(v)) ? Number(v) : undefined);
      const retention = num(h.retention);
      const garbage = num(h.garbage);
      return { ...(retention !== undefined ? { retention } : {}), ...(garbage !== undefined ? { garbage } : {}) };
    } catch {
      return {};
    }
  }

  async recordPass(part: 'retention' | 'garbage', atMs: number): Promise<void> {
    await this.#redis.hset('maintenance:last', part, String(atMs)).catch(() => {});
  }

  /** Who holds the maintenance lock (its holder id), or null. For tests and logs. */
  async maintenanceHolder(): Promise<string | null> {
    const v = await this.#redis.get(MAINTENANCE_KEY);
    return v === null ? null : v.split(' ')[0]!;
  }

  /** For tests: the maintenance lock's remaining TTL (ms; negative when absent). */
  async maintenancePttlForTest(): Promise<number> {
    return this.#redis.pttl(MAINTENANCE_KEY);
  }

  /** For tests: removes the maintenance lock as its expiry would (a holder that died). */
  async forceDropMaintenanceForTest(): Promise<void> {
    await this.#redis.del(MAINTENANCE_KEY);
  }

  #guardKeys(digest: Digest): [string, string] {
    return [`gc:{${digest}}`, `use:{${digest}}`];
  }

  async use(digests: readonly Digest[]): Promise<{ coordinated: boolean; release(): Promise<void> }> {
    const list = [...new Set(digests)];
    const token = `${this.#o.holderId} ${randomBytes(8).toString('hex')}`;
    const ttl = String(this.#o.digestGuardTtlMs ?? 60_000);
    const unmark = async (ds: readonly Digest[]) => {
      await Promise.all(ds.map((d) => this.#redis.zrem(this.#guardKeys(d)[1], token).catch(() => 0)));
    };
    const alone = { coordinated: false, release: async () => {} };
    // A collection holds a claim for one digest's delete and unlink (milliseconds), its TTL at most.
    for (;;) {
      if (!this.#up) return alone;
      const taken: Digest[] = [];
      let busy = false;
      try {
        for (const d of list) {
          if ((await this.#redis.eval(USE, 2, ...this.#guardKeys(d), token, ttl)) !== 1) {
            busy = true;
            break;
          }
          taken.push(d);
        }
      } catch {
        await unmark(taken);
        return alone;
      }
      if (!busy) return { coordinated: true, release: () => unmark(list) };
      await unmark(taken);
      await sleep(25);
    }
  }

  async collect(digest: Digest): Promise<(() => Promise<void>) | undefined> {
    if (!this.#up) return undefined;
    const value = `${this.#o.holderId} ${randomBytes(8).toString('hex')}`;
    const [gc, use] = this.#guardKeys(digest);
    try {
      if ((await this.#redis.eval(COLLECT, 2, gc, use, value, String(this.#o.digestGuardTtlMs ?? 60_000))) !== 1) return undefined;
    } catch {
      return undefined;
    }
    return async () => {
      await this.#redis.eval(RELEASE, 1, gc, value).catch(() => {});
    };
  }

  // --- upload sessions of the private registry (issue #15: a push whose requests land anywhere) ---

  #uploadKey(id: string): string {
    return `upload:${id}`;
  }

  /**
   * Publishes that this replica holds upload session `id` (its id and follow endpoint), for
   * `ttlMs`. Redis unreachable: not published — the session works on this replica only (the
   * others answer BLOB_UPLOAD_UNKNOWN and the client starts over).
   */
  async uploadStarted(id: string, repository: string, ttlMs: number): Promise<void> {
    if (!this.#up) return;
    const value = JSON.stringify({ id: this.#o.holderId, url: this.#o.advertiseUrl, repository });
    await this.#redis.set(this.#uploadKey(id), value, 'PX', Math.max(1, Math.round(ttlMs))).catch((err: unknown) => this.#o.logger.warn('upload session not published: redis failed', { uuid: id, error: (err as Error).message }));
  }

  /** The session moved: its record lives `ttlMs` longer (only while it is this replica's). */
  async uploadTouched(id: string, ttlMs: number): Promise<void> {
    if (!this.#up) return;
    await this.#redis.eval(RENEW_OWN, 1, this.#uploadKey(id), this.#o.holderId, String(Math.max(1, Math.round(ttlMs)))).catch(() => {});
  }

  /** The session ended here (finished, cancelled, expired, lost): its record goes, if it is still this replica's. */
  async uploadEnded(id: string): Promise<void> {
    if (!this.#up) return;
    await this.#redis.eval(RELEASE_OWN, 1, this.#uploadKey(id), this.#o.holderId).catch(() => {});
  }

  /** Who holds upload session `id`: `undefined` when nobody does (or Redis can't say). `record` is the stored value, for `forgetUpload`. */
  async uploadOwner(id: string): Promise<{ id: string; url: string; record: string } | undefined> {
    if (!this.#up) return undefined;
    try {
      const record = await this.#redis.get(this.#uploadKey(id));
      if (record === null) return undefined;
      const owner = JSON.parse(record) as { id?: unknown; url?: unknown };
      return typeof owner.id === 'string' && typeof owner.url === 'string' ? { id: owner.id, url: owner.url, record } : undefined;
    } catch {
      return undefined;
    }
  }

  /** Removes the session's record if it is still `record` (its owner is gone: nobody will end it). */
  async forgetUpload(id: string, record: string): Promise<void> {
    await this.#redis.eval(RELEASE, 1, this.#uploadKey(id), record).catch(() => {});
  }

  /** For tests: the lease record of `digest` as stored (`{id, url, lease}`), or null. */
  async holder(digest: Digest): Promise<{ id: string; url: string } | null> {
    const v = await this.#redis.get(this.#key(digest));
    return v ? (JSON.parse(v) as { id: string; url: string }) : null;
  }

  async close(): Promise<void> {
    await Promise.all(this.#rateLimits.map((r) => r.close()));
    await this.#peers.close().catch(() => {});
    this.#redis.disconnect();
  }
}
