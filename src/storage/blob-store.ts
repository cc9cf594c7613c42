import type { Readable, Writable } from 'node:stream';
import type { ByteRange } from '../domain/descriptor.js';
import type { Digest } from '../domain/digest.js';

/** What the store knows about a committed blob. */
export interface BlobInfo {
  readonly digest: Digest;
  readonly size: number;
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
   * fsync and rename. Not called when verification fails.
   */
  readonly onVerified?: () => void;
}

/**
 * A blob being written. Bytes are hashed (sha256) and counted as they are written.
 * Nothing is visible to readers of the store until `commit` succeeds. Every writer ends in exactly
 * one successful `commit` or in `abort` (the caller's duty: `try { … commit } catch { abort }`).
 */
export interface BlobWriter {
  /** Bytes written so far. */
  readonly written: number;
  /**
   * Appends bytes — one chunk, or several in order (written with one vectored write where the
   * backend can: no copy into one buffer first). Resolves when they are handed to the backing
   * storage (backpressure).
   */
  write(data: Uint8Array | readonly Uint8Array[]): Promise<void>;
  /**
   * Reads back bytes already written (positional, like pread): up to `length` bytes from `position`
   * into `buffer` at `offset`, returning how many were read. Lets joiners of a cache fill stream a
   * blob while it is still being downloaded.
   */
  readAt(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /**
   * Verifies that the written bytes hash to `expected` (and have `expectedSize` when given), makes them
   * durable (fsync) and atomically visible under `expected`. Throws `RegistryError('DIGEST_INVALID')`
   * or `RegistryError('SIZE_INVALID')` on a mismatch and leaves nothing visible. Committing a digest
   * that already exists succeeds (content addressing makes writes idempotent).
   * `readAt` keeps working after commit until `abort`/`release` is called.
   */
  commit(expected: Digest, expectedSize?: number, opts?: CommitOptions): Promise<BlobInfo>;
  /** Discards the written bytes. Idempotent; safe after a failed commit. */
  abort(): Promise<void>;
  /** Frees resources held for `readAt` after a successful commit. Idempotent. */
  release(): Promise<void>;
}

export interface BlobStore extends BlobReader {
  create(): Promise<BlobWriter>;
  /** Removes a committed blob. Missing blobs are not an error. */
  delete(digest: Digest): Promise<void>;
  /** Every committed blob (for `hubcache ls`, metrics and garbage collection). */
  list(): AsyncIterable<BlobInfo>;
}
