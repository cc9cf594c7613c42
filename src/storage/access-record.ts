import { isDigest, type Digest } from '../domain/digest.js';
import { isTag, isValidRepoPath, type RepoKey, type RepoName, type Tag } from '../domain/reference.js';
import { isRegistryName } from '../domain/registry-name.js';

/**
 * What was served: a blob or a manifest (by digest: content is shared by every repository), or a
 * tag of one repository of one upstream.
 */
export type AccessSubject =
  | { readonly kind: 'blob'; readonly digest: Digest }
  | { readonly kind: 'manifest'; readonly digest: Digest }
  | { readonly kind: 'tag'; readonly key: RepoKey; readonly tag: Tag };

export interface AccessEntry {
  readonly subject: AccessSubject;
  /** When it was last served (ms since epoch). */
  readonly at: number;
}

/**
 * When each blob, manifest and tag was last served (hits included): the input of LRU eviction and
 * tag retention (cache/evictor.ts) and of `hubcache du`. Part of the `Storage` seam (`Storage.access`)
 * so that several replicas can share it later (a Redis backend, issue #15).
 *
 * Cheap by contract: `touch` is synchronous and only updates memory (no I/O, no await on the
 * request path); the backend persists what changed in batches (`flush`, run periodically by the
 * store's owner and on `Storage.close()`). A crash loses at most the last batch window, which only
 * makes content look older than it is. Memory is one entry per object the store holds.
 *
 * Times only move forward: a `touch` older than the recorded time is ignored (several writers, or a
 * clock that stepped back, can't make content look older).
 */
export interface AccessRecord {
  /** Records that `subject` was served at `at` (ms). Never throws, never waits. */
  touch(subject: AccessSubject, at: number): void;
  /** Removes the subject's entry (it was deleted from the store). Never throws, never waits. */
  forget(subject: AccessSubject): void;
  /** The last access recorded, or `undefined` when there is none (content stored before the record existed). */
  lastAccess(subject: AccessSubject): Promise<number | undefined>;
  /** Every entry, in no particular order. Includes touches not flushed yet. */
  entries(): AsyncIterable<AccessEntry>;
  /** Persists every change made so far; resolves when they are durable. Rejects with the backend's write error. */
  flush(): Promise<void>;
}

/**
 * A subject as one string without spaces inside its fields, used as a map key and as the record's
 * on-disk form (fs/fs-access-record.ts): `b <digest>`, `m <digest>`, `t <upstream> <repo> <tag>`.
 */
export function subjectId(s: AccessSubject): string {
  switch (s.kind) {
    case 'blob':
      return `b ${s.digest}`;
    case 'manifest':
      return `m ${s.digest}`;
    case 'tag':
      return `t ${s.key.upstream} ${s.key.repo} ${s.tag}`;
  }
}

/** The inverse of `subjectId`; `undefined` for anything malformed (a torn line of a crashed write). */
export function parseSubjectId(id: string): AccessSubject | undefined {
  const parts = id.split(' ');
  if ((parts[0] === 'b' || parts[0] === 'm') && parts.length === 2 && isDigest(parts[1]!)) {
    return { kind: parts[0] === 'b' ? 'blob' : 'manifest', digest: parts[1] as Digest };
  }
  if (parts[0] === 't' && parts.length === 4) {
    const [, upstream, repo, tag] = parts as [string, string, string, string];
    if (isRegistryName(upstream) && isValidRepoPath(repo) && isTag(tag)) return { kind: 'tag', key: { upstream, repo: repo as RepoName }, tag: tag as Tag };
  }
  return undefined;
}

/**
 * The in-memory part every backend shares: the latest time per subject, and what changed since the
 * last flush (a time, or `null` for a forgotten subject).
 */
export class AccessTable {
  readonly times = new Map<string, number>();
  /** Changes not persisted yet, by subject id. */
  pending = new Map<string, number | null>();

  touch(subject: AccessSubject, at: number): void {
    if (!Number.isFinite(at)) return;
    const id = subjectId(subject);
    const prev = this.times.get(id);
    if (prev !== undefined && prev >= at) return;
    this.times.set(id, at);
    this.pending.set(id, at);
  }

  forget(subject: AccessSubject): void {
    const id = subjectId(subject);
    this.times.delete(id);
    this.pending.set(id, null);
  }

  /** A persisted entry read back at start: applied unless this process changed the subject since. */
  load(id: string, at: number | null): void {
    if (this.pending.has(id)) return;
    if (at === null) this.times.delete(id);
    else if ((this.times.get(id) ?? -Infinity) < at) this.times.set(id, at);
  }

  /** Hands the pending changes over (to be persisted) and starts a new batch. */
  takePending(): Map<string, number | null> {
    const batch = this.pending;
    this.pending = new Map();
    return batch;
  }

  /** A batch that could not be persisted goes back, unless newer changes replaced its entries. */
  restore(batch: Map<string, number | null>): void {
    for (const [id, at] of batch) if (!this.pending.has(id)) this.pending.set(id, at);
  }

  *entries(): Iterable<AccessEntry> {
    for (const [id, at] of this.times) {
      const subject = parseSubjectId(id);
      if (subject) yield { subject, at };
    }
  }
}

/**
 * An access record kept as a log of batches, `<ms> <subject>` lines (`- <subject>` for a forgotten
 * subject), loaded into memory once and appended to by `flush`: the filesystem's `access.log` and
 * the S3 store's `_access/` batch objects. A backend says how to read its log (`readLog`, applying
 * lines with `applyLines`) and how to write one batch (`writeBatch`); loading once, one flush at a
 * time in order, and a failed batch kept for the next flush are decided here.
 */
export abstract class LoggedAccessRecord implements AccessRecord {
  protected readonly table = new AccessTable();
  #loading: Promise<void> | undefined;
  #flushing: Promise<void> = Promise.resolve();
  /** Why the log could not be read, when it could not (then the record starts empty: it is a hint, never a reason not to serve). */
  loadError: Error | undefined;

  touch(subject: AccessSubject, at: number): void {
    this.table.touch(subject, at);
  }

  forget(subject: AccessSubject): void {
    this.table.forget(subject);
  }

  /** Reads the log into memory (once; later calls share it). */
  load(): Promise<void> {
    return (this.#loading ??= this.readLog().catch((err: unknown) => {
      this.loadError = err as Error;
    }));
  }

  async lastAccess(subject: AccessSubject): Promise<number | undefined> {
    await this.load();
    return this.table.times.get(subjectId(subject));
  }

  async *entries(): AsyncIterable<AccessEntry> {
    await this.load();
    yield* [...this.table.entries()];
  }

  flush(): Promise<void> {
    const run = this.#flushing.then(() => this.#flush());
    this.#flushing = run.catch(() => {});
    return run;
  }

  async #flush(): Promise<void> {
    await this.load();
    const batch = this.table.takePending();
    if (batch.size === 0) return;
    try {
      await this.writeBatch(batch);
    } catch (err) {
      this.table.restore(batch);
      throw err;
    }
  }

  /** Reads the whole log into `table` (through `applyLines`). A missing log is an empty record. */
  protected abstract readLog(): Promise<void>;
  /** Makes `batch` durable (or compacts the log, the batch's changes included: they are in `table`). */
  protected abstract writeBatch(batch: Map<string, number | null>): Promise<void>;

  /** Applies a log's lines to the table (the latest time wins, a forget removes; bad lines skipped). Returns how many lines there were. */
  protected applyLines(text: string): number {
    let lines = 0;
    let start = 0;
    while (start < text.length) {
      let end = text.indexOf('\n', start);
      if (end === -1) end = text.length;
      const line = text.slice(start, end);
      start = end + 1;
      lines++;
      const space = line.indexOf(' ');
      if (space <= 0) continue;
      const time = line.slice(0, space);
      const id = line.slice(space + 1);
      const at = time === '-' ? null : Number(time);
      if (at !== null && !Number.isSafeInteger(at)) continue;
      if (parseSubjectId(id) === undefined) continue;
      this.table.load(id, at);
    }
    return lines;
  }

  /** A batch as log lines. */
  protected static batchLines(batch: Map<string, number | null>): string {
    let text = '';
    for (const [id, at] of batch) text += `${at === null ? '-' : at} ${id}\n`;
    return text;
  }

  /** The live entries as log lines (a compaction's snapshot). */
  protected snapshotLines(): string {
    let text = '';
    for (const [id, at] of this.table.times) text += `${at} ${id}\n`;
    return text;
  }
}
