import { randomBytes } from 'node:crypto';
import { AccessTable, parseSubjectId, subjectId, type AccessEntry, type AccessRecord, type AccessSubject } from '../access-record.js';
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
export class S3AccessRecord implements AccessRecord {
  readonly #o: S3AccessRecordOptions;
  readonly #table = new AccessTable();
  readonly #clock: () => number;
  #loading: Promise<void> | undefined;
  /** Batch objects this process read or wrote (compaction may delete them), in name order. */
  #known: string[] = [];
  #seq = 0;
  /** The latest time in a batch name so far (read or written): names only grow, even if the clock steps back. */
  #lastMs = 0;
  #flushing: Promise<void> = Promise.resolve();
  /** Why the record could not be read, when it could not (then it starts empty). */
  loadError: Error | undefined;

  constructor(o: S3AccessRecordOptions) {
    this.#o = o;
    this.#clock = o.clock ?? Date.now;
  }

  touch(subject: AccessSubject, at: number): void {
    this.#table.touch(subject, at);
  }

  forget(subject: AccessSubject): void {
    this.#table.forget(subject);
  }

  /** Reads the batches into memory (once; later calls share it). Unreadable: an empty record, the error in `loadError`. */
  load(): Promise<void> {
    return (this.#loading ??= this.#load().catch((err: unknown) => {
      this.loadError = err as Error;
    }));
  }

  async lastAccess(subject: AccessSubject): Promise<number | undefined> {
    await this.load();
    return this.#table.times.get(subjectId(subject));
  }

  async *entries(): AsyncIterable<AccessEntry> {
    await this.load();
    yield* [...this.#table.entries()];
  }

  flush(): Promise<void> {
    const run = this.#flushing.then(() => this.#flush());
    this.#flushing = run.catch(() => {});
    return run;
  }

  async #load(): Promise<void> {
    const keys: string[] = [];
    for await (const key of listKeys(this.#o, this.#o.layout.accessPrefix())) keys.push(key);
    keys.sort();
    for (const key of keys) {
      const obj = await getObject(this.#o, key);
      if (!obj) continue; // compacted away by another process meanwhile
      this.#apply(obj.body.toString('utf8'));
      this.#known.push(key);
      const ms = Number(key.slice(this.#o.layout.accessPrefix().length).split('-')[0]);
      if (Number.isSafeInteger(ms)) this.#lastMs = Math.max(this.#lastMs, ms);
    }
  }

  #apply(text: string): void {
    for (const line of text.split('\n')) {
      const space = line.indexOf(' ');
      if (space <= 0) continue;
      const time = line.slice(0, space);
      const id = line.slice(space + 1);
      const at = time === '-' ? null : Number(time);
      if (at !== null && !Number.isSafeInteger(at)) continue;
      if (parseSubjectId(id) === undefined) continue;
      this.#table.load(id, at);
    }
  }

  /** A new batch object's key: after every earlier one of this process (time, then a sequence). */
  #nextKey(): string {
    this.#lastMs = Math.max(this.#lastMs, Math.floor(this.#clock()));
    const ms = String(this.#lastMs).padStart(15, '0');
    return `${this.#o.layout.accessPrefix()}${ms}-${String(++this.#seq).padStart(9, '0')}-${randomBytes(4).toString('hex')}`;
  }

  async #flush(): Promise<void> {
    await this.load();
    const batch = this.#table.takePending();
    if (batch.size === 0) return;
    try {
      if (this.#known.length >= (this.#o.compactAfter ?? 32)) {
        await this.#compact();
        return;
      }
      let text = '';
      for (const [id, at] of batch) text += `${at === null ? '-' : at} ${id}\n`;
      const key = this.#nextKey();
      await putObject(this.#o, key, Buffer.from(text));
      this.#known.push(key);
    } catch (err) {
      this.#table.restore(batch);
      throw err;
    }
  }

  /** One snapshot of the live entries, newer than every batch; then the batches this process knows, oldest first. */
  async #compact(): Promise<void> {
    let text = '';
    for (const [id, at] of this.#table.times) text += `${at} ${id}\n`;
    const key = this.#nextKey();
    await putObject(this.#o, key, Buffer.from(text));
    const old = this.#known;
    this.#known = [key];
    for (const k of old) await deleteObject(this.#o, k);
  }
}
