import { createHash, type Hash } from 'node:crypto';
import { mkdir, open, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { addAbortSignal, type Readable } from 'node:stream';
import type { ByteRange } from '../../domain/descriptor.js';
import { type Digest } from '../../domain/digest.js';
import { RegistryError } from '../../domain/errors.js';
import type { BlobInfo, BlobStore, BlobWriter, CommitOptions } from '../blob-store.js';
import type { BufferPool } from '../buffer-pool.js';
import { emptyDir, isNotFound, openCreating, readdirSorted, renameDurable } from './fs-util.js';
import { FileRangeStream } from './file-range-stream.js';
import { StorageLayout } from './layout.js';

export interface FsBlobStoreOptions {
  /** The storage root (see layout.ts); shared with the manifest and metadata stores. */
  readonly root: string;
  /**
   * Buffers (of FILE_READ_CHUNK bytes) shared by the blob bodies written out with `writeTo`
   * (responses). Default: each body gets two of its own.
   */
  readonly readBuffers?: BufferPool;
}

const HEX2_RE = /^[a-f0-9]{2}$/;
const HEX64_RE = /^[a-f0-9]{64}$/;

/**
 * Content-addressed blobs on a local filesystem: `<root>/blobs/sha256/<ab>/<hex>`. Writes go to a
 * temp file in `<root>/tmp/` and become visible only through `FsBlobWriter.commit` (verify → fsync →
 * rename), so a reader never sees a partial or unverified blob.
 */
export class FsBlobStore implements BlobStore {
  readonly layout: StorageLayout;
  readonly #readBuffers: BufferPool | undefined;

  constructor(opts: FsBlobStoreOptions) {
    this.layout = new StorageLayout({ root: opts.root });
    this.#readBuffers = opts.readBuffers;
  }

  /**
   * Creates the directories and removes everything left in tmp/ by a previous run (uploads that
   * never committed: a crash or a kill). Returns how many leftovers were removed. Call once at start,
   * before any writer is created: it would delete the temp files of writers in progress.
   */
  async init(): Promise<number> {
    await mkdir(this.layout.blobsDir, { recursive: true });
    return emptyDir(this.layout.tmpDir);
  }

  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    try {
      const st = await stat(this.layout.blobPath(digest));
      return st.isFile() ? { digest, size: st.size } : undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /**
   * Streams the committed blob, or the inclusive `range` of it. Throws `BLOB_UNKNOWN` when missing,
   * `RANGE_INVALID` when the range does not fit the blob, and the signal's reason when it is already
   * aborted. Aborting `signal` later destroys the stream with an `AbortError`.
   */
  async open(digest: Digest, opts: { range?: ByteRange; signal?: AbortSignal } = {}): Promise<Readable> {
    opts.signal?.throwIfAborted();
    let fh: FileHandle;
    try {
      fh = await open(this.layout.blobPath(digest), 'r');
    } catch (err) {
      if (isNotFound(err)) throw new RegistryError('BLOB_UNKNOWN', { digest });
      throw err;
    }
    try {
      const { size } = await fh.stat();
      const { range } = opts;
      if (range && !(Number.isSafeInteger(range.start) && range.start >= 0 && range.start <= range.end && range.end < size)) {
        throw new RegistryError('RANGE_INVALID', { digest, range, size });
      }
      // The stream owns the handle from here on and closes it on end, error or destroy.
      const stream = new FileRangeStream({ handle: fh, start: range?.start ?? 0, end: range?.end ?? size - 1, buffers: this.#readBuffers });
      return opts.signal ? addAbortSignal(opts.signal, stream) : stream;
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** A writer on a fresh temp file; the caller must end it with `commit` or `abort` (and `release`). */
  async create(): Promise<FsBlobWriter> {
    const path = this.layout.tempPath('blob');
    const fh = await openCreating(path, 'wx+');
    return new FsBlobWriter({ layout: this.layout, tempPath: path, handle: fh });
  }

  async delete(digest: Digest): Promise<void> {
    await rm(this.layout.blobPath(digest), { force: true });
  }

  /** Committed blobs, in digest order. Blobs deleted during the walk may or may not appear. */
  async *list(): AsyncIterable<BlobInfo> {
    for (const prefix of await readdirSorted(this.layout.blobsDir)) {
      if (!HEX2_RE.test(prefix)) continue;
      for (const name of await readdirSorted(join(this.layout.blobsDir, prefix))) {
        if (!HEX64_RE.test(name) || !name.startsWith(prefix)) continue;
        const info = await this.stat(`sha256:${name}` as Digest);
        if (info) yield info;
      }
    }
  }
}

export interface FsBlobWriterOptions {
  readonly layout: StorageLayout;
  /** The temp file in tmp/, already created and opened read-write as `handle`. */
  readonly tempPath: string;
  /** Owned by the writer from now on: closed by `abort` or `release`. */
  readonly handle: FileHandle;
}

type WriterState = 'open' | 'rejected' | 'committed' | 'closed';

/**
 * One blob being written to a temp file. Bytes are hashed and counted as they are written, so
 * `commit` needs no second pass over the file. The file handle stays open after commit so that
 * followers of a cache fill can keep reading with `readAt` until `release`.
 */
export class FsBlobWriter implements BlobWriter {
  readonly #layout: StorageLayout;
  readonly #tempPath: string;
  readonly #fh: FileHandle;
  readonly #hash: Hash = createHash('sha256');
  #digest: Digest | undefined;
  #written = 0;
  #writing = false;
  #state: WriterState = 'open';

  constructor(opts: FsBlobWriterOptions) {
    this.#layout = opts.layout;
    this.#tempPath = opts.tempPath;
    this.#fh = opts.handle;
  }

  get written(): number {
    return this.#written;
  }

  /**
   * Appends `chunk`. Writes are sequential: await each one before the next (a concurrent call
   * throws, since the hash must see bytes in file order). A failed write leaves the writer unable to
   * commit; the caller aborts it.
   */
  async write(data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    if (this.#state !== 'open') throw new Error(`blob writer is ${this.#state}`);
    if (this.#writing) throw new Error('blob writer: concurrent write; await each write');
    this.#writing = true;
    try {
      const chunks = data instanceof Uint8Array ? [data] : data;
      const total = chunks.reduce((n, c) => n + c.length, 0);
      // One pwritev for the whole batch; after a short write (rare: signals, a full disk) the rest.
      let rest: readonly Uint8Array[] = chunks;
      for (let done = 0; done < total; ) {
        const { bytesWritten } = await this.#fh.writev(rest as Uint8Array[], this.#written + done);
        if (bytesWritten === 0) throw new Error('blob writer: the file took no bytes');
        done += bytesWritten;
        rest = dropBytes(rest, bytesWritten);
      }
      for (const chunk of chunks) this.#hash.update(chunk);
      this.#written += total;
    } catch (err) {
      this.#state = 'rejected';
      throw err;
    } finally {
      this.#writing = false;
    }
  }

  /** Positional read of bytes already written (never past `written`); works after commit until `release`/`abort`. */
  async readAt(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    if (this.#state === 'closed') throw new Error('blob writer is closed');
    const n = Math.min(length, this.#written - position);
    if (n <= 0) return 0;
    const { bytesRead } = await this.#fh.read(buffer, offset, n, position);
    return bytesRead;
  }

  async commit(expected: Digest, expectedSize?: number, opts: CommitOptions = {}): Promise<BlobInfo> {
    if (this.#state !== 'open') throw new Error(`blob writer is ${this.#state}`);
    if (this.#writing) throw new Error('blob writer: commit during a write');
    const size = this.#written;
    if (expectedSize !== undefined && expectedSize !== size) {
      this.#state = 'rejected';
      throw new RegistryError('SIZE_INVALID', { expected: expectedSize, actual: size });
    }
    // Hash.digest() may run once; keep the result for a commit retried after an I/O error.
    this.#digest ??= `sha256:${this.#hash.digest('hex')}` as Digest;
    if (this.#digest !== expected) {
      this.#state = 'rejected';
      throw new RegistryError('DIGEST_INVALID', { expected, actual: this.#digest });
    }
    opts.onVerified?.();
    const final = this.#layout.blobPath(expected);
    await this.#fh.sync();
    // Content addressing: an existing complete blob under this name already has these bytes.
    // A file of another size there is damage; the rename below replaces it.
    const existing = await stat(final).catch((err) => (isNotFound(err) ? undefined : Promise.reject(err)));
    if (existing?.isFile() && existing.size === size) {
      await unlink(this.#tempPath).catch(() => {});
    } else {
      await renameDurable(this.#tempPath, final);
    }
    this.#state = 'committed';
    return { digest: expected, size };
  }

  /** Closes the file and removes the temp file. Idempotent; after a successful commit it only closes. */
  async abort(): Promise<void> {
    const wasCommitted = this.#state === 'committed';
    await this.#close();
    if (!wasCommitted) await rm(this.#tempPath, { force: true });
  }

  /** Closes the file handle. Idempotent. On a writer that never committed it is an `abort`. */
  async release(): Promise<void> {
    if (this.#state === 'committed' || this.#state === 'closed') return this.#close();
    return this.abort();
  }

  async #close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    await this.#fh.close().catch(() => {});
  }
}

/** `chunks` without their first `n` bytes (views, no copies). */
export function dropBytes(chunks: readonly Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const chunk of chunks) {
    if (n >= chunk.length) n -= chunk.length;
    else {
      out.push(n > 0 ? chunk.subarray(n) : chunk);
      n = 0;
    }
  }
  return out;
}
