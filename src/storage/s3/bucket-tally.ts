import type { StoreUsage } from '../blob-store.js';

/** What a mutation of one key did: the object's size before and after it (`undefined`: absent). */
export interface KeyChange {
  readonly before: number | undefined;
  readonly after: number | undefined;
}

/** One page of a listing in key order: the objects to count, and the last key the page covered. */
export interface ListedPage {
  readonly entries: ReadonlyArray<{ readonly key: string; readonly size: number }>;
  /** The page's last key (counted or not); `undefined` for an empty page. */
  readonly lastKey: string | undefined;
}

interface Recount {
  /** Keys up to this one (inclusive) are listed: the listing won't see a mutation of them any more. */
  cursor: string | undefined;
  bytes: number;
  objects: number;
  /**
   * Keys mutated by this replica while the listing had not passed them: the listing may or may not
   * show the mutation. `listed`: what the listing saw; `after`: the state after the last mutation
   * that completed (`settled`). At the end the listing's view of them is replaced by `after`.
   */
  readonly pending: Map<string, { listed: number | undefined; after: number | undefined; settled: boolean }>;
}

const change = (before: number | undefined, after: number | undefined): StoreUsage => ({
  bytes: (after ?? 0) - (before ?? 0),
  objects: (after === undefined ? 0 : 1) - (before === undefined ? 0 : 1),
});

/**
 * `BlobStore.usage()` of a bucket several replicas write (S3BlobStore): a count from a full listing
 * (`recount`, in the background, again and again), kept current between listings by this replica's
 * own commits and deletes (`track`). Other replicas' commits and deletes show up at the next
 * listing. Exact for this replica's own mutations, even those made while a listing runs, without
 * ever making one wait for a listing:
 *
 * - a mutation of a key the listing has passed is added to the listing's total (the listing saw the
 *   state before it);
 * - a mutation of a key the listing hasn't passed yet (or that was in flight when it began) may or
 *   may not be in the listing: the key is remembered with what the listing saw of it, and at the
 *   end that is replaced by the state the mutation left (known: a commit leaves the object there,
 *   a delete leaves it gone). A mutation still in flight then corrects the total when it ends.
 *
 * A mutation reports the object's size before and after it (`KeyChange`): a commit that found the
 * digest already there (another replica's, or a race lost) changes nothing, so an object is never
 * counted twice. Mutations of one key by this replica run one at a time. Multipart uploads in
 * progress are not objects: a listing doesn't show them and they count once completed.
 */
export class BucketTally {
  #known: StoreUsage | undefined;
  #recount: Recount | undefined;
  /** Keys pending in a recount that ended while their mutation was in flight: what it listed. */
  readonly #late = new Map<string, number | undefined>();
  readonly #inflight = new Set<string>();
  readonly #chains = new Map<string, Promise<void>>();
  #running: Promise<StoreUsage> | undefined;

  /** The usage as of the last listing plus this replica's mutations since; `undefined` before the first listing ended. */
  usage(): StoreUsage | undefined {
    return this.#known && { bytes: this.#known.bytes, objects: this.#known.objects };
  }

  /** Whether a listing runs now. */
  get counting(): boolean {
    return this.#running !== undefined;
  }

  /**
   * Runs `op`, a mutation of `key` (after this replica's previous mutation of it ended), and counts
   * what `describe` says it did. A failed `op` changes nothing (the next listing tells).
   */
  async track<T>(key: string, op: () => Promise<T>, describe: (result: T) => KeyChange): Promise<T> {
    const previous = this.#chains.get(key);
    let done!: () => void;
    const mine = new Promise<void>((r) => (done = r));
    this.#chains.set(key, mine);
    try {
      await previous;
      const rc = this.#recount;
      if (rc && !(rc.cursor !== undefined && key <= rc.cursor) && !rc.pending.has(key)) rc.pending.set(key, { listed: undefined, after: undefined, settled: false });
      this.#inflight.add(key);
      let result: T;
      try {
        result = await op();
      } catch (err) {
        this.#late.delete(key);
        throw err;
      } finally {
        this.#inflight.delete(key);
      }
      this.#apply(key, describe(result));
      return result;
    } finally {
      done();
      if (this.#chains.get(key) === mine) this.#chains.delete(key);
    }
  }

  #apply(key: string, c: KeyChange): void {
    let d = change(c.before, c.after);
    const rc = this.#recount;
    if (rc) {
      const p = rc.pending.get(key);
      if (p) {
        p.after = c.after;
        p.settled = true;
      } else {
        rc.bytes += d.bytes;
        rc.objects += d.objects;
      }
    }
    if (this.#late.has(key)) {
      d = change(this.#late.get(key), c.after);
      this.#late.delete(key);
    }
    if (this.#known) this.#known = { bytes: this.#known.bytes + d.bytes, objects: this.#known.objects + d.objects };
  }

  /**
   * Counts the pages of a full listing (key order) and makes the result the usage. A listing starts
   * after this call: one already running is waited for first. Rejects when the listing fails (the
   * usage stays what it was).
   */
  async recount(pages: () => AsyncIterable<ListedPage>): Promise<StoreUsage> {
    while (this.#running) await this.#running.catch(() => {});
    const run = this.#count(pages());
    this.#running = run;
    try {
      return await run;
    } finally {
      if (this.#running === run) this.#running = undefined;
    }
  }

  async #count(pages: AsyncIterable<ListedPage>): Promise<StoreUsage> {
    const rc: Recount = { cursor: undefined, bytes: 0, objects: 0, pending: new Map([...this.#inflight].map((k) => [k, { listed: undefined, after: undefined, settled: false }])) };
    this.#recount = rc;
    try {
      for await (const page of pages) {
        for (const e of page.entries) {
          rc.bytes += e.size;
          rc.objects++;
          const p = rc.pending.get(e.key);
          if (p) p.listed = e.size;
        }
        if (page.lastKey !== undefined) rc.cursor = page.lastKey;
      }
      for (const [key, p] of rc.pending) {
        if (p.settled) {
          const d = change(p.listed, p.after);
          rc.bytes += d.bytes;
          rc.objects += d.objects;
        } else if (this.#inflight.has(key)) this.#late.set(key, p.listed);
      }
      this.#known = { bytes: rc.bytes, objects: rc.objects };
      return this.usage()!;
    } finally {
      this.#recount = undefined;
    }
  }
}
