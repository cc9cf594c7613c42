import type { Cluster, Redis } from 'ioredis';
import { AccessTable, parseSubjectId, subjectId, type AccessEntry, type AccessRecord, type AccessSubject } from '../storage/access-record.js';

export interface RedisAccessRecordOptions {
  /** The key of the sorted set (under the client's keyPrefix). Default `access`. */
  readonly key?: string;
  /**
   * How old the local copy of the cluster's record may be before a read refreshes it (one ZSCAN of
   * the whole set). Default: the flush interval's 10 s — what other replicas served in the last
   * interval isn't in Redis yet anyway.
   */
  readonly refreshMs?: number;
  /** Ms since epoch (the copy's age). Default `Date.now`. */
  readonly clock?: () => number;
}

/** Entries per ZSCAN step and per ZADD batch. */
const SCAN_COUNT = 1000;

/**
 * The last-access record of a cluster (issue #15): one sorted set in Redis, member = the subject
 * (`subjectId`), score = its last access (ms). Every replica records what it serves in memory
 * (`touch`, no I/O) and `flush` sends what changed as one pipeline per flush interval per replica:
 * `ZADD GT` (max-merge: an older time, from a replica that served it earlier or whose clock lags,
 * never replaces a newer one) and `ZREM` for deleted content. Eviction, on whichever replica runs
 * it, reads the cluster's record: a local copy of the whole set, refreshed by one ZSCAN when older
 * than `refreshMs`, merged with this replica's touches not flushed yet.
 *
 * Redis unreachable: touches stay in memory (a failed flush keeps its batch for the next one) and
 * reads answer from the local copy as it was. A `forget` racing another replica's flush of an older
 * touch may leave an entry for deleted content: harmless (eviction lists what the store holds and
 * asks the record about it, never the other way round). Persistent as far as Redis is.
 */
export class RedisAccessRecord implements AccessRecord {
  readonly #redis: Redis | Cluster;
  readonly #key: string;
  readonly #refreshMs: number;
  readonly #clock: () => number;
  /** This replica's touches and forgets (pending: not flushed yet). */
  readonly #table = new AccessTable();
  /** The cluster's record as last read. */
  #copy = new Map<string, number>();
  #copyAt = -Infinity;
  #refreshing: Promise<void> | undefined;
  /** Subjects this replica forgot: hidden from the copy until touched again. */
  readonly #forgotten = new Set<string>();
  #flushing: Promise<void> = Promise.resolve();

  constructor(redis: Redis | Cluster, o: RedisAccessRecordOptions = {}) {
    this.#redis = redis;
    this.#key = o.key ?? 'access';
    this.#refreshMs = o.refreshMs ?? 10_000;
    this.#clock = o.clock ?? Date.now;
  }

  touch(subject: AccessSubject, at: number): void {
    this.#table.touch(subject, at);
    this.#forgotten.delete(subjectId(subject));
  }

  forget(subject: AccessSubject): void {
    this.#table.forget(subject);
    const id = subjectId(subject);
    this.#forgotten.add(id);
    this.#copy.delete(id);
  }

  async lastAccess(subject: AccessSubject): Promise<number | undefined> {
    await this.#fresh();
    return this.#time(subjectId(subject));
  }

  async *entries(): AsyncIterable<AccessEntry> {
    await this.#fresh();
    const ids = new Set([...this.#copy.keys(), ...this.#table.times.keys()]);
    const out: AccessEntry[] = [];
    for (const id of ids) {
      const at = this.#time(id);
      const subject = at === undefined ? undefined : parseSubjectId(id);
      if (subject) out.push({ subject, at: at! });
    }
    yield* out;
  }

  flush(): Promise<void> {
    const run = this.#flushing.then(() => this.#flush());
    this.#flushing = run.catch(() => {});
    return run;
  }

  #time(id: string): number | undefined {
    const mine = this.#table.times.get(id);
    const theirs = this.#forgotten.has(id) ? undefined : this.#copy.get(id);
    if (mine === undefined) return theirs;
    return theirs === undefined ? mine : Math.max(mine, theirs);
  }

  async #flush(): Promise<void> {
    const batch = this.#table.takePending();
    if (batch.size === 0) return;
    try {
      const entries = [...batch];
      for (let i = 0; i < entries.length; i += SCAN_COUNT) {
        const pipeline = this.#redis.pipeline();
        const adds: Array<string | number> = [];
        for (const [id, at] of entries.slice(i, i + SCAN_COUNT)) {
          if (at === null) pipeline.zrem(this.#key, id);
          else adds.push(at, id);
        }
        if (adds.length > 0) pipeline.zadd(this.#key, 'GT', ...adds);
        const results = (await pipeline.exec()) ?? [];
        const failed = results.find(([err]) => err);
        if (failed) throw failed[0];
      }
    } catch (err) {
      this.#table.restore(batch);
      throw err;
    }
    // Forgets that reached Redis: the set no longer has them (unless another replica touches them
    // again, which then counts).
    for (const [id, at] of batch) if (at === null && !this.#table.pending.has(id)) this.#forgotten.delete(id);
  }

  /** The local copy, refreshed when older than `refreshMs` (one at a time; Redis failing: the copy as it is). */
  async #fresh(): Promise<void> {
    if (this.#clock() - this.#copyAt < this.#refreshMs) return;
    await (this.#refreshing ??= this.#refresh().finally(() => (this.#refreshing = undefined)));
  }

  async #refresh(): Promise<void> {
    const copy = new Map<string, number>();
    try {
      let cursor = '0';
      do {
        const [next, flat] = await this.#redis.zscan(this.#key, cursor, 'COUNT', SCAN_COUNT);
        for (let i = 0; i + 1 < flat.length; i += 2) copy.set(flat[i]!, Number(flat[i + 1]));
        cursor = next;
      } while (cursor !== '0');
    } catch {
      return; // Redis away: keep the copy we have, try again at the next read
    }
    this.#copy = copy;
    this.#copyAt = this.#clock();
  }
}
