import type { Cluster, Redis } from 'ioredis';
import type { Logger } from '../lib/logger.js';
import type { RateLimitSnapshot, SharedRateLimits } from '../upstream/upstream.js';

/** An upstream's shared state as stored in Redis (`ratelimit:<upstream>`, JSON) and published. */
interface State {
  readonly upstream: string;
  readonly snapshot?: RateLimitSnapshot;
  readonly heldOffUntil?: number;
}

export interface RedisRateLimitsOptions {
  /** The client's keyPrefix: the channel's name is prefixed by hand (ioredis prefixes keys only). */
  readonly keyPrefix: string;
  /** The upstreams' names (config.upstreams): their state is read at start and after a reconnect. */
  readonly upstreams: readonly string[];
  /** Called with every reading this replica hears of, its own and the others' (the gauges). */
  readonly onReading: (upstream: string, snap: RateLimitSnapshot) => void;
  readonly logger: Logger;
  /** The state's TTL in Redis when no hold-off is longer. Default 10 min. */
  readonly ttlMs?: number;
  /** Ms since epoch. Default `Date.now`. */
  readonly clock?: () => number;
}

// Merges a new reading or hold-off into the stored state (the newer reading wins; a hold-off is
// never shortened), stores it with its TTL and publishes the result: one script, so two replicas
// writing at once can't lose either's part.
const MERGE = `local new = cjson.decode(ARGV[1])
local cur = redis.call('GET', KEYS[1])
if cur then
  local c = cjson.decode(cur)
  if c.heldOffUntil and ((not new.heldOffUntil) or c.heldOffUntil > new.heldOffUntil) then new.heldOffUntil = c.heldOffUntil end
  if c.snapshot and ((not new.snapshot) or c.snapshot.observedAt > new.snapshot.observedAt) then new.snapshot = c.snapshot end
end
local v = cjson.encode(new)
local ttl = tonumber(ARGV[2])
if new.heldOffUntil and (new.heldOffUntil - tonumber(ARGV[4])) > ttl then ttl = new.heldOffUntil - tonumber(ARGV[4]) end
redis.call('SET', KEYS[1], v, 'PX', math.floor(ttl))
redis.call('PUBLISH', ARGV[3], v)
return v`;

/** A reading equal to the last one shared is not sent again within this long (a write per manifest response otherwise). */
const SAME_READING_MS = 5_000;

/**
 * Upstream rate-limit state shared through Redis (issue #15, docs/architecture.md#several-replicas):
 * `ratelimit:<upstream>` holds the latest reading (`ratelimit-limit`/`-remaining`, newest wins) and,
 * after a 429 on a manifest GET, until when manifest GETs are held off (never shortened), with a
 * short TTL (10 min, or the hold-off if longer). Every change is published on the `ratelimit`
 * channel; each replica keeps what it hears in memory, so the request path reads it synchronously
 * (`heldOffUntil`) and never waits for Redis. The replicas' gauges follow the cluster's latest
 * reading. Redis unreachable: each replica knows what it knew, plus its own readings and 429s.
 */
export class RedisRateLimits implements SharedRateLimits {
  readonly #redis: Redis | Cluster;
  readonly #sub: Redis | Cluster;
  readonly #o: RedisRateLimitsOptions;
  readonly #clock: () => number;
  readonly #channel: string;
  readonly #state = new Map<string, State>();
  readonly #lastShared = new Map<string, { remaining?: number | undefined; limit?: number | undefined; at: number }>();
  /** Resolves when the subscription is in place (tests wait for it). */
  readonly subscribed: Promise<void>;

  constructor(redis: Redis | Cluster, o: RedisRateLimitsOptions) {
    this.#redis = redis;
    this.#o = o;
    this.#clock = o.clock ?? Date.now;
    this.#channel = `${o.keyPrefix}ratelimit`;
    this.#sub = 'isCluster' in redis && redis.isCluster ? (redis as Cluster).duplicate() : (redis as Redis).duplicate();
    this.#sub.on('error', () => {});
    this.#sub.on('message', (_channel: string, message: string) => this.#heard(message));
    // Subscribed on every connection (commands fail rather than queue while it is down: no offline
    // queue); the stored state is read again then, since messages published meanwhile are lost.
    let resolveSubscribed!: () => void;
    this.subscribed = new Promise<void>((r) => (resolveSubscribed = r));
    this.#sub.on('ready', () => {
      void this.#sub
        .subscribe(this.#channel)
        .then(() => this.#load())
        .then(resolveSubscribed, () => {});
    });
  }

  reading(upstream: string, snap: RateLimitSnapshot): void {
    const last = this.#lastShared.get(upstream);
    if (last && last.remaining === snap.remaining && last.limit === snap.limit && snap.observedAt - last.at < SAME_READING_MS) return;
    this.#lastShared.set(upstream, { remaining: snap.remaining, limit: snap.limit, at: snap.observedAt });
    this.#apply({ upstream, snapshot: snap });
    this.#share({ upstream, snapshot: snap });
  }

  throttled(upstream: string, untilMs: number): void {
    this.#apply({ upstream, heldOffUntil: untilMs });
    this.#share({ upstream, heldOffUntil: untilMs });
    this.#o.logger.warn('upstream rate limited: manifest GETs held off on every replica', { upstream, seconds: Math.round((untilMs - this.#clock()) / 1000) });
  }

  heldOffUntil(upstream: string): number | undefined {
    const until = this.#state.get(upstream)?.heldOffUntil;
    return until !== undefined && until > this.#clock() ? until : undefined;
  }

  /** What this replica knows of `upstream` (tests). */
  state(upstream: string): { readonly snapshot?: RateLimitSnapshot; readonly heldOffUntil?: number } | undefined {
    return this.#state.get(upstream);
  }

  async close(): Promise<void> {
    this.#sub.disconnect();
  }

  #share(s: State): void {
    void this.#redis.eval(MERGE, 1, `ratelimit:${s.upstream}`, JSON.stringify(s), String(this.#o.ttlMs ?? 600_000), this.#channel, String(this.#clock())).catch(() => {});
  }

  #heard(message: string): void {
    let s: State;
    try {
      s = JSON.parse(message) as State;
    } catch {
      return;
    }
    if (typeof s?.upstream !== 'string') return;
    const before = this.heldOffUntil(s.upstream);
    this.#apply(s);
    const after = this.heldOffUntil(s.upstream);
    if (after !== undefined && after !== before) this.#o.logger.info('upstream held off by the cluster: manifest GETs wait for the Retry-After', { upstream: s.upstream, seconds: Math.round((after - this.#clock()) / 1000) });
  }

  /** Merged like the script does: the newer reading, the later hold-off. */
  #apply(s: State): void {
    const cur = this.#state.get(s.upstream);
    const snapshot = cur?.snapshot && (!s.snapshot || cur.snapshot.observedAt > s.snapshot.observedAt) ? cur.snapshot : s.snapshot;
    const heldOffUntil = Math.max(cur?.heldOffUntil ?? 0, s.heldOffUntil ?? 0) || undefined;
    this.#state.set(s.upstream, { upstream: s.upstream, ...(snapshot ? { snapshot } : {}), ...(heldOffUntil ? { heldOffUntil } : {}) });
    if (s.snapshot && snapshot === s.snapshot) this.#o.onReading(s.upstream, s.snapshot);
  }

  async #load(): Promise<void> {
    for (const upstream of this.#o.upstreams) {
      const v = await this.#redis.get(`ratelimit:${upstream}`).catch(() => null);
      if (v !== null) this.#heard(v);
    }
  }
}
