import { randomBytes } from 'node:crypto';
import { LoggedAccessRecord } from '../access-record.js';
import { deleteObject, getObject, listKeys, putObject, type S3Location } from './s3-manifest-store.js';

export interface S3AccessRecordOptions extends S3Location {
  /** Batch objects at most before a flush compacts them into one snapshot. Default 32. */
  readonly compactAfter?: number;
  /** Ms since epoch, for the batch objects' names (their order). Default `Date.now`. */
  readonly clock?: () => number;
}

/**
 * The last-access record of an S3 store without `cluster` (issue #15): persistent across restarts,
 * in the bucket, like the filesystem's access.log. Every flush writes the changes of its interval as
 * ONE new object `_access/<ms>-<seq>-<random>` (lines `<ms> <subject>`, `- <subject>` for a forgotten
 * subject: the filesystem log's format), never rewriting one: a PUT is atomic, so a crash loses at
 * most the batch not flushed yet and never leaves a torn object. Loaded once (lazily, in the
 * background of a start): every batch in name order — the name starts with the time, zero-padded —
 * each line applied like a log's (the latest time wins, a forget removes). When more than
 * `compactAfter` batches exist, a flush writes the whole record as one newer snapshot object and
 * then deletes the batches it has read or written itself, oldest first (a crash in between leaves
 * both: read again in order, same result; a batch another process wrote since this one loaded is
 * never deleted).
 *
 * Why objects per batch and not Redis or one rewritten object: without `cluster` there is no Redis,
 * and rewriting the whole record every interval would upload every entry every 10 s; a batch costs
 * one PUT of what changed. Several replicas use the Redis record instead (cluster/redis-access-record.ts).
 */
export class S3AccessRecord extends LoggedAccessRecord {
  readonly #o: S3AccessRecordOptions;
  readonly #clock: () => number;
  /** Batch objects this process read or wrote (compaction may delete them), in name order. */
  #known: string[] = [];
  #seq = 0;
  /** The latest time in a batch name so far (read or written): names only grow, even if the clock steps back. */
  #lastMs = 0;

  constructor(o: S3AccessRecordOptions) {
    super();
    this.#o = o;
    this.#clock = o.clock ?? Date.now;
  }

  /** Every batch object in name order. Unreadable: an empty record, the error in `loadError`. */
  protected async readLog(): Promise<void> {
    const keys: string[] = [];
    for await (const key of listKeys(this.#o, this.#o.layout.accessPrefix())) keys.push(key);
    keys.sort();
    for (const key of keys) {
      const obj = await getObject(this.#o, key);
      if (!obj) continue; // compacted away by another process meanwhile
      this.applyLines(obj.body.toString('utf8'));
      this.#known.push(key);
      const ms = Number(key.slice(this.#o.layout.accessPrefix().length).split('-')[0]);
      if (Number.isSafeInteger(ms)) this.#lastMs = Math.max(this.#lastMs, ms);
    }
  }

  /** A new batch object's key: after every earlier one of this process (time, then a sequence). */
  #nextKey(): string {
    this.#lastMs = Math.max(this.#lastMs, Math.floor(this.#clock()));
    const ms = String(this.#lastMs).padStart(15, '0');
    return `${this.#o.layout.accessPrefix()}${ms}-${String(++this.#seq).padStart(9, '0')}-${randomBytes(4).toString('hex')}`;
  }

  protected async writeBatch(batch: Map<string, number | null>): Promise<void> {
    if (this.#known.length >= (this.#o.compactAfter ?? 32)) {
      await this.#compact();
      return;
    }
    const key = this.#nextKey();
    await putObject(this.#o, key, Buffer.from(LoggedAccessRecord.batchLines(batch)));
    this.#known.push(key);
  }

  /** One snapshot of the live entries, newer than every batch; then the batches this process knows, oldest first. */
  async #compact(): Promise<void> {
    const key = this.#nextKey();
    await putObject(this.#o, key, Buffer.from(this.snapshotLines()));
    const old = this.#known;
    this.#known = [key];
    for (const k of old) await deleteObject(this.#o, k);
  }
}
