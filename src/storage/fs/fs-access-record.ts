import { open, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { LoggedAccessRecord } from '../access-record.js';
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
export class FsAccessRecord extends LoggedAccessRecord {
  readonly #o: FsAccessRecordOptions;
  /** Lines in the log file (live and superseded): compaction is due when they outnumber twice the live entries. */
  #lines = 0;
  /** The log doesn't end with a newline (a torn append): the next batch starts with one. */
  #torn = false;

  constructor(opts: FsAccessRecordOptions) {
    super();
    this.#o = opts;
  }

  /** A missing log is an empty record, and so is an unreadable one (`loadError`): the next compaction replaces it. */
  protected async readLog(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.#o.path, 'utf8');
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    this.#torn = text.length > 0 && !text.endsWith('\n');
    this.#lines += this.applyLines(text);
  }

  protected async writeBatch(batch: Map<string, number | null>): Promise<void> {
    if (this.#lines > 2 * (this.table.times.size + batch.size) + 1024) {
      await this.#compact();
      return;
    }
    const text = (this.#torn ? '\n' : '') + LoggedAccessRecord.batchLines(batch);
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
  }

  /** Rewrites the log with the live entries only (atomically: readers see the old or the new log). */
  async #compact(): Promise<void> {
    await ensureDir(dirname(this.#o.path));
    await writeFileAtomic(this.#o.tempPath(), this.#o.path, this.snapshotLines());
    await fsyncDir(dirname(this.#o.path));
    this.#lines = this.table.times.size;
    this.#torn = false;
  }
}
