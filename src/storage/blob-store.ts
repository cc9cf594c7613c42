import type { Hash } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import type { ByteRange } from '../domain/descriptor.js';
import type { Digest } from '../domain/digest.js';

/** What the store knows about a committed blob. */
export interface BlobInfo {
  readonly digest: Digest;
  readonly size: number;
  /**
   * When the blob was stored (ms since epoch), where the backend knows it cheaply (`list()` of the
   * filesystem: the file's mtime). Eviction's fallback for content with no last-access record.
   */
  readonly modifiedAt?: number;
}

/**
 * Optional fast path of a blob body (a `Readable` returned by `open`): writes its bytes straight to
 * `dest` without ending it, reusing its buffers, and closes itself. Rejects when a read or a write
 * fails or `dest` closes first. A body is read either this way or as a stream, never both.
 */
export interface DirectBody {
  writeTo(dest: Writable, onBytes?: (n: number) => void): Promise<void>;
}

export function isDirectBody(body: Readable): body is Readable & DirectBody {
  return typeof (body as Partial<DirectBody>).writeTo === 'function';
}

export interface BlobReader {
  /** The committed blob's size, or `undefined` when it is not in the store (never throws for "missing"). */
  stat(digest: Digest): Promise<BlobInfo | undefined>;
  /**
   * A stream of the committed blob's bytes (the whole blob, or `range` inclusive).
   * Throws `RegistryError('BLOB_UNKNOWN')` when the blob is not in the store.
   * The caller owns the stream and must consume or destroy it.
   */
  open(digest: Digest, opts?: { range?: ByteRange; signal?: AbortSignal }): Promise<Readable>;
}

export interface CommitOptions {
  /**
   * Called once the bytes are known to hash to the expected digest, before they are made durable
   * and visible: a cache fill releases the final byte to its clients here, so they don't wait for
   * fsync and rename (or an upload's completion). Not called when verification fails.
   */
  readonly onVerified?: () => void;
}

/**
 * A blob being written: create → write… → `commit` or `abort`. Bytes are hashed (sha256) and counted
 * as they are written. Nothing is visible to readers of the store until `commit` succeeds. Every
 * writer ends in exactly one successful `commit` or in `abort` (the caller's duty:
 * `try { … commit } catch { abort }`; `abort` after a commit does nothing, so `finally` works too).
 *
 * A writer can't read back what it wrote: an S3 multipart upload can't return bytes it hasn't
 * completed. Following a download in flight is the cache's business (cache/spool.ts).
 * Backends don't implement this interface by hand: they implement the smaller `RawBlobWriter`
 * (write, publish, discard) and wrap it in `VerifyingBlobWriter` (verifying-writer.ts), which
 * does the hashing and the checks once for every backend.
 */
export interface BlobWriter {
  /** Bytes written so far. */
  readonly written: number;
  /**
   * Optional capability: a file on the local filesystem holding the bytes written so far, byte `p`
   * of the blob at offset `p` (a filesystem backend's temp file). A reader may open it read-only
   * right after `create()` and read bytes below `written` while the writer is open; `commit` renames
   * it and `abort` removes it, and a handle opened before keeps reading the same bytes (POSIX
   * semantics). A cache fill uses it instead of spooling the bytes a second time. Backends that
   * write elsewhere (object stores) leave it undefined.
   */
  readonly localPath?: string;
  /**
   * Appends bytes — one chunk, or several in order (written with one vectored write where the
   * backend can: no copy into one buffer first). Resolves when they are handed to the backing
   * storage (backpressure). Writes are sequential: await each one before the next. A failed write
   * leaves the writer unable to commit; the caller aborts it.
   */
  write(data: Uint8Array | readonly Uint8Array[]): Promise<void>;
  /**
   * Verifies that the written bytes have `expectedSize` (when given; `SIZE_INVALID` otherwise) and
   * hash to `expected` (`DIGEST_INVALID`), in that order, calls `onVerified`, then makes them durable
   * and atomically visible under `expected`. On a mismatch nothing becomes visible. Committing a
   * digest that already exists succeeds (content addressing makes writes idempotent). A writer
   * whose commit failed can't commit again: abort it.
   */
  commit(expected: Digest, expectedSize?: number, opts?: CommitOptions): Promise<BlobInfo>;
  /** Discards the written bytes and frees the writer's resources. Idempotent; a no-op after a successful commit. */
  abort(): Promise<void>;
  /**
   * Optional capability: a copy of the sha256 state over exactly the `written` bytes, still usable
   * after a failed write or an abort. A cache fill whose store write fails mid-way goes on hashing
   * the rest of the download itself, so that its clients still get verified bytes (pass-through).
   */
  runningHash?(): Hash;
  /**
   * Optional capability: a copy of the sha256 state over every byte handed to `write` so far — the
   * `written` ones and those of a write still in flight (`handed` in all). A cache fill checks the
   * digest of what it received with it as soon as the last byte arrives, without waiting for the
   * write: its clients get the final byte then, while the store finishes writing. `commit` still
   * verifies on its own, after every write succeeded.
   */
  hashAhead?(): { hash: Hash; handed: number };
}

/** How much the store holds: committed blobs and their bytes. */
export interface StoreUsage {
  readonly bytes: number;
  readonly objects: number;
}

/** What the caller of `BlobStore.create` knows about the blob it is about to write. */
export interface CreateOptions {
  /**
   * The digest the blob will be committed under, when the caller knows it up front (a cache fill
   * does; a push doesn't until its final PUT). The writer then refuses to commit under any other
   * digest, and a backend may write straight to the blob's final location (S3: the multipart upload
   * goes to the blob's key and is completed only once verified, no temp object and no copy).
   * Verification is unchanged: `commit` still checks size and digest before anything is visible.
   */
  readonly digest?: Digest;
}

export interface BlobStore extends BlobReader {
  /** A writer for a new blob; the caller must end it with `commit` or `abort`. */
  create(opts?: CreateOptions): Promise<BlobWriter>;
  /** Removes a committed blob. Missing blobs are not an error. */
  delete(digest: Digest): Promise<void>;
  /**
   * Every committed blob, in ascending digest order (for `hubcache ls` and eviction), with
   * `modifiedAt` where the backend knows it.
   * A full walk of the store: nothing on the serving path, and nothing at start, may need it.
   */
  list(): AsyncIterable<BlobInfo>;
  /**
   * Optional: `list()` without `modifiedAt`, for a backend that knows sizes cheaper than it lists
   * with times (the filesystem's sizes files, fs/blob-sizes.ts): `hubcache ls`/`du` (issue #13).
   * In batches (the filesystem: a partition at a time), in digest order: a walk of 100k blobs
   * takes 256 steps of the async iteration instead of 100k.
   */
  listSizes?(): AsyncIterable<ReadonlyArray<{ readonly digest: Digest; readonly size: number }>>;
  /**
   * Optional: what the store holds, cheaply (an in-memory read: it is called at every metrics
   * scrape). `undefined` while not known yet, e.g. while a backend counts in the background after
   * start. Counts what went through this store's `create`/`delete`; changes made behind its back
   * (files removed by hand, another process) show up at the next count. A backend that can't tell
   * cheaply doesn't offer it (the store gauges are then absent). Proper accounting of a bounded store
   * (eviction) will replace the counting.
   */
  usage?(): StoreUsage | undefined;
}
