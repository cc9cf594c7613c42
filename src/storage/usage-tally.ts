import type { StoreUsage } from './blob-store.js';

/** A change of usage made by one mutation (a commit that added a blob, a delete that removed one). */
export type UsageDelta = StoreUsage;

export const NO_CHANGE: UsageDelta = Object.freeze({ bytes: 0, objects: 0 });

/**
 * `BlobStore.usage()` for a backend that learns its usage by walking its blobs, without making the
 * start wait for the walk: `count()` walks the store partition by partition in the background
 * (the filesystem's 256 `blobs/sha256/<ab>/` directories) while commits and deletes go on, and the
 * result is exact, not "about right":
 *
 * - a mutation in a partition already counted is applied to the tally at once;
 * - one in a partition not counted yet is not: the walk will see its result;
 * - a partition isn't counted while a mutation in it is in flight, and a mutation waits while its
 *   partition is being counted (a few milliseconds), so each mutation lands on exactly one side.
 *
 * Only mutations made through `track` are known: one process owns a store (the ownership lock),
 * and changes made behind the store's back show up at the next count (next start).
 */
export class UsageTally {
  readonly #partitions: readonly string[];
  readonly #index: ReadonlyMap<string, number>;
  #state: 'idle' | 'counting' | 'known' | 'stopped' = 'idle';
  #bytes = 0;
  #objects = 0;
  /** Partitions [0, #counted) are counted: mutations there are applied at once. */
  #counted = 0;
  #scanning: { partition: string; done: Promise<void> } | undefined;
  readonly #inflight = new Map<string, number>();
  readonly #idle = new Map<string, Array<() => void>>();
  #counting: Promise<StoreUsage> | undefined;

  /** `partitions` in the order `count` walks them; every mutation names one of them. */
  constructor(partitions: readonly string[]) {
    this.#partitions = partitions;
    this.#index = new Map(partitions.map((p, i) => [p, i]));
  }

  /** The usage once counted, kept current by `track`; `undefined` before (and if the count failed). */
  usage(): StoreUsage | undefined {
    return this.#state === 'known' ? { bytes: this.#bytes, objects: this.#objects } : undefined;
  }

  /**
   * Runs `op`, a mutation of `partition`, and applies the change it reports (`delta` of its result)
   * to the tally when the count has already passed that partition.
   */
  async track<T>(partition: string, op: () => Promise<T>, delta: (result: T) => UsageDelta): Promise<T> {
    while (this.#scanning?.partition === partition) await this.#scanning.done;
    this.#inflight.set(partition, (this.#inflight.get(partition) ?? 0) + 1);
    try {
      const result = await op();
      if (this.#state === 'known' || (this.#state === 'counting' && (this.#index.get(partition) ?? -1) < this.#counted)) {
        const d = delta(result);
        this.#bytes += d.bytes;
        this.#objects += d.objects;
      }
      return result;
    } finally {
      const left = this.#inflight.get(partition)! - 1;
      if (left > 0) this.#inflight.set(partition, left);
      else {
        this.#inflight.delete(partition);
        for (const wake of this.#idle.get(partition)?.splice(0) ?? []) wake();
      }
    }
  }

  /**
   * Counts every partition with `countPartition` (once: later calls return the same promise).
   * Resolves with the usage at the end of the walk; rejects when a partition can't be counted or
   * `signal` aborts, and `usage()` stays undefined then.
   */
  count(countPartition: (partition: string) => Promise<StoreUsage>, signal?: AbortSignal): Promise<StoreUsage> {
    this.#counting ??= this.#count(countPartition, signal);
    return this.#counting;
  }

  async #count(countPartition: (partition: string) => Promise<StoreUsage>, signal?: AbortSignal): Promise<StoreUsage> {
    this.#state = 'counting';
    try {
      for (const [i, partition] of this.#partitions.entries()) {
        signal?.throwIfAborted();
        while (this.#inflight.has(partition)) await new Promise<void>((r) => this.#idle.set(partition, [...(this.#idle.get(partition) ?? []), r]));
        let finished!: () => void;
        this.#scanning = { partition, done: new Promise<void>((r) => (finished = r)) };
        try {
          const u = await countPartition(partition);
          this.#bytes += u.bytes;
          this.#objects += u.objects;
          this.#counted = i + 1;
        } finally {
          this.#scanning = undefined;
          finished();
        }
      }
      this.#state = 'known';
      return { bytes: this.#bytes, objects: this.#objects };
    } catch (err) {
      this.#state = 'stopped';
      throw err;
    }
  }
}
