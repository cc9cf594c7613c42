import { randomUUID } from 'node:crypto';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlobWriter } from '../storage/blob-store.js';
import { writevAll } from '../storage/chunks.js';

/**
 * The bytes of a fill in flight, readable back by position: what a follower reads once it has
 * fallen behind the fill's in-memory window (cache/chunk-window.ts). It belongs to the cache, not
 * to the store: a store writer only takes bytes (an S3 multipart upload can't return what it
 * hasn't completed), so the cache keeps its own local copy while the download runs.
 *
 * Two kinds:
 * - **borrowed**: the store writer already writes a local file (`BlobWriter.localPath`, the
 *   filesystem backend's temp file). The spool opens it read-only and writes nothing: no second
 *   copy of the bytes on disk. The handle keeps reading after the commit renamed the file.
 * - **own**: a file of the cache's own in `dir`, unlinked as soon as it is open (its space is freed
 *   when the spool closes, and a crash leaves nothing behind). Every batch goes to the store writer
 *   and to this file at the same time.
 */
export interface Spool {
  /** `borrowed` (the store writer's own file) or `own` (a copy the cache writes). */
  readonly kind: 'borrowed' | 'own';
  /** Bytes [0, readable) can be read back. */
  readonly readable: number;
  /**
   * Writes `chunks`, the next bytes of the blob, to the store writer, and to the spool file when
   * it is the cache's own, concurrently. Sequential: await each call. Rejects with a
   * `StorageWriteError` when either fails.
   */
  write(chunks: readonly Buffer[]): Promise<void>;
  /** Reads up to `length` bytes at `position` (below `readable`) into `buffer` at `offset`; returns how many. */
  readAt(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /** Closes the file (after reads in flight). Idempotent. */
  close(): Promise<void>;
}

export interface SpoolOptions {
  /** Where an own spool file goes (a local disk). */
  readonly dir: string;
}

/**
 * Writing a fill's bytes failed locally — the store (a full or read-only disk, a failed upload) or
 * the spool file: a storage failure, never resumed from upstream and counted as `storage_error`.
 */
export class StorageWriteError extends Error {
  constructor(what: 'store' | 'spool', cause: unknown) {
    super(`${what} write failed: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'StorageWriteError';
  }
}

/** A spool for the bytes `writer` is about to receive (call right after `create()`, before any write). */
export async function openSpool(writer: BlobWriter, opts: SpoolOptions): Promise<Spool> {
  if (writer.localPath !== undefined) return new BorrowedSpool(writer, await open(writer.localPath, 'r'));
  const path = join(opts.dir, `spool-${randomUUID()}`);
  const fh = await open(path, 'wx+', 0o600);
  // Anonymous from now on: only our handle reaches the bytes. Where unlinking an open file is
  // refused (not on Linux), the file is removed at close instead.
  const unlinked = await unlink(path).then(
    () => true,
    () => false,
  );
  return new OwnSpool(writer, fh, unlinked ? undefined : path);
}

/** Positional reads of the spool file, below `readable`, through the spool's own handle. */
abstract class FileSpool implements Spool {
  abstract readonly kind: 'borrowed' | 'own';
  abstract readonly readable: number;
  protected readonly fh: FileHandle;
  #closed = false;

  constructor(fh: FileHandle) {
    this.fh = fh;
  }

  abstract write(chunks: readonly Buffer[]): Promise<void>;

  async readAt(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    const n = Math.min(length, this.readable - position);
    if (n <= 0) return 0;
    return (await this.fh.read(buffer, offset, n, position)).bytesRead;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.fh.close().catch(() => {});
    await this.closed();
  }

  /** After the handle is closed (once). */
  protected async closed(): Promise<void> {}
}

/** The store writer's own local file, read through a read-only handle; the spool writes nothing. */
class BorrowedSpool extends FileSpool {
  readonly kind = 'borrowed';
  readonly #writer: BlobWriter;

  constructor(writer: BlobWriter, fh: FileHandle) {
    super(fh);
    this.#writer = writer;
  }

  get readable(): number {
    return this.#writer.written;
  }

  write(chunks: readonly Buffer[]): Promise<void> {
    return this.#writer.write(chunks).catch((err: unknown) => Promise.reject(new StorageWriteError('store', err)));
  }
}

/** A file of the cache's own, written alongside the store writer. */
class OwnSpool extends FileSpool {
  readonly kind = 'own';
  readonly #writer: BlobWriter;
  /** Set when the file could not be unlinked at open: removed at close. */
  readonly #path: string | undefined;
  #readable = 0;

  constructor(writer: BlobWriter, fh: FileHandle, path: string | undefined) {
    super(fh);
    this.#writer = writer;
    this.#path = path;
  }

  get readable(): number {
    return this.#readable;
  }

  async write(chunks: readonly Buffer[]): Promise<void> {
    const at = this.#readable;
    const bytes = chunks.reduce((n, c) => n + c.length, 0);
    // Both settle before this returns: a write left running could land after a later one.
    const [stored, spooled] = await Promise.allSettled([this.#writer.write(chunks), writevAll(this.fh, chunks, at)]);
    if (stored.status === 'rejected') throw new StorageWriteError('store', stored.reason);
    if (spooled.status === 'rejected') throw new StorageWriteError('spool', spooled.reason);
    this.#readable = at + bytes;
  }

  protected override async closed(): Promise<void> {
    if (this.#path) await unlink(this.#path).catch(() => {});
  }
}
