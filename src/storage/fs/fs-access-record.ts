import { open, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { AccessTable, parseSubjectId, subjectId, type AccessEntry, type AccessRecord, type AccessSubject } from '../access-record.js';
import { ensureDir, fsyncDir, isNotFound, writeFileAtomic } from './fs-util.js';

export interface FsAccessRecordOptions {
  /** `<root>/access.log` (layout.ts). */
  readonly path: string;
  /** A fresh temp path in the store's tmp/ (same filesystem), for compaction. */
  readonly tempPath: () => string;
}

/**
 * The last-access record on a local filesystem: one append-only log, `<root>/access.log`, of lines
 * `<ms> <subject>` (a forgotten subject: `- <subject>`; subjects as `subjectId` writes them). The
 * latest line of a subject wins. Loaded into memory once (lazily, in the background of a start),
 * appended to in batches by `flush` (one write and one fsync per batch, never per request), and
 * compacted — rewritten with one line per live entry, in tmp/ then renamed over the log — when it
 * has grown to more than twice the live entries. A crash loses at most the batch not flushed yet;
 * a torn last line (a crash in the middle of an append) is skipped when read and never glued to
 * the next batch.
 */
export class FsAccessRecord implements AccessRecord {
  readonly #o: FsAccessRecordOptions;
  readonly #table = new AccessTable();
  #loading: Promise<void> | undefined;
  /** Lines in the log file (live and superseded): compaction is due when they outnumber twice the live entries. */
  #lines = 0;
  /** The log doesn't end with a newline (a torn append): the next batch starts with one. */
  #torn = false;
  /** Flushes run one at a time, in order. */
  #flushing: Promise<void> = Promise.resolve();

  constructor(opts: FsAccessRecordOptions) {
    this.#o = opts;
  }

  touch(subject: AccessSubject, at: number): void {
    this.#table.touch(subject, at);
  }

  forget(subject: AccessSubject): void {
    this.#table.forget(subject);
  }

  /**
   * Reads the log into memory (once; later calls share it). A missing log is an empty record, and
   * so is an unreadable one (it is a cache's hint, never a reason not to serve): the error is
   * kept in `loadError`, and the next compaction replaces the log.
   */
  load(): Promise<void> {
    return (this.#loading ??= this.#load().catch((err: unknown) => {
      this.loadError = err as Error;
    }));
  }

  /** Why the log could not be read, when it could not. */
  loadError: Error | undefined;

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
    let text: string;
    try {
      text = await readFile(this.#o.path, 'utf8');
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    this.#torn = text.length > 0 && !text.endsWith('\n');
    let start = 0;
    while (start < text.length) {
      let end = text.indexOf('\n', start);
      if (end === -1) end = text.length;
      const line = text.slice(start, end);
      start = end + 1;
      this.#lines++;
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

  async #flush(): Promise<void> {
    await this.load();
    const batch = this.#table.takePending();
    if (batch.size === 0) return;
    try {
      if (this.#lines > 2 * (this.#table.times.size + batch.size) + 1024) {
        await this.#compact();
        return;
      }
      let text = this.#torn ? '\n' : '';
      for (const [id, at] of batch) text += `${at === null ? '-' : at} ${id}\n`;
      await ensureDir(dirname(this.#o.path));
      const fh = await open(this.#o.path, 'a', 0o644);
      try {
        await fh.writeFile(text);
        await fh.sync();
      } finally {
        await fh.close();
      }
      this.#torn = false;
      this.#lines += batch.size;
    } catch (err) {
      this.#table.restore(batch);
      throw err;
    }
  }

  /** Rewrites the log with the live entries only (atomically: readers see the old or the new log). */
  async #compact(): Promise<void> {
    const lines: string[] = [];
    for (const [id, at] of this.#table.times) lines.push(`${at} ${id}\n`);
    await ensureDir(dirname(this.#o.path));
    await writeFileAtomic(this.#o.tempPath(), this.#o.path, lines.join(''));
    await fsyncDir(dirname(this.#o.path));
    this.#lines = lines.length;
    this.#torn = false;
  }
}
