import { createHash, type Hash } from 'node:crypto';
import type { Digest } from '../domain/digest.js';
import { RegistryError } from '../domain/errors.js';
import type { BlobInfo, BlobWriter, CommitOptions, CreateOptions } from './blob-store.js';

/**
 * What a storage backend implements to write blobs: bytes in, then make them visible or discard
 * them. No hashing, no size or digest checks, no state rules: `VerifyingBlobWriter` does those once
 * for every backend (distribution's blobwriter.go: validate, then move into place). The calls are
 * sequential — never two at once — and the writer ends in one successful `publish` or in `discard`.
 */
export interface RawBlobWriter {
  /** See `BlobWriter.localPath`: a local file holding the bytes written so far, when there is one. */
  readonly localPath?: string;
  /**
   * Writes `chunks`, in order, starting at byte `position` of the blob (the bytes written so far:
   * a backend may ignore it and append). Resolves once the backing storage has them.
   */
  write(chunks: readonly Uint8Array[], position: number): Promise<void>;
  /**
   * Makes the `size` bytes written durable and atomically visible under `digest` (filesystem: fsync,
   * rename, fsync the directory; memory: a map insert; S3: complete the multipart upload). They
   * were verified: they hash to `digest`. A blob already stored under `digest` is success (content
   * addressing). Frees the writer's resources. If it throws, `discard` follows.
   */
  publish(digest: Digest, size: number): Promise<void>;
  /** Removes what was written and frees the writer's resources. Called at most once, never after a successful `publish`. */
  discard(): Promise<void>;
}

type State = 'open' | 'rejected' | 'committed' | 'aborted';

/**
 * A `BlobWriter` over a backend's `RawBlobWriter`: hashes (sha256) and counts the bytes as they
 * pass, and commits in the one order every backend must follow — size, then digest, then
 * `onVerified`, then the backend makes the bytes visible. A mismatch never reaches the backend's
 * `publish`, so no backend can make unverified bytes visible.
 */
export class VerifyingBlobWriter implements BlobWriter {
  readonly #raw: RawBlobWriter;
  #hash: Hash = createHash('sha256');
  #written = 0;
  /** Bytes handed to `write` and hashed: `written` plus a write in flight. */
  #handed = 0;
  /** While a write is in flight: the hash over the `written` bytes only (before that write's). */
  #hashAtWritten: Hash | undefined;
  #busy: 'write' | 'commit' | undefined;
  #state: State = 'open';
  /** The digest the writer was created for (`CreateOptions.digest`): the only one it commits. */
  readonly #expected: Digest | undefined;

  constructor(raw: RawBlobWriter, opts: CreateOptions = {}) {
    this.#raw = raw;
    this.#expected = opts.digest;
  }

  get written(): number {
    return this.#written;
  }

  get localPath(): string | undefined {
    return this.#raw.localPath;
  }

  async write(data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    this.#assertIdle('write');
    this.#busy = 'write';
    // The hash as it was before these bytes: restored if the backend doesn't take them, so that it
    // always covers exactly the bytes stored, in order (runningHash: [0, written)).
    const before = this.#hash.copy();
    this.#hashAtWritten = before;
    try {
      const chunks = data instanceof Uint8Array ? [data] : data;
      // Hashed while the backend writes them (the write is under way, in the thread pool or on
      // the network), not after: the hash then covers every byte handed over as soon as write()
      // returns its promise, which lets a caller check the digest without waiting for the write.
      const stored = this.#raw.write(chunks, this.#written);
      let n = 0;
      for (const chunk of chunks) {
        this.#hash.update(chunk);
        n += chunk.length;
      }
      this.#handed = this.#written + n;
      await stored;
      this.#written += n;
    } catch (err) {
      this.#hash = before;
      this.#handed = this.#written;
      this.#state = 'rejected';
      throw err;
    } finally {
      this.#busy = undefined;
      this.#hashAtWritten = undefined;
    }
  }

  async commit(expected: Digest, expectedSize?: number, opts: CommitOptions = {}): Promise<BlobInfo> {
    this.#assertIdle('commit');
    if (this.#expected !== undefined && expected !== this.#expected) {
      // A caller's bug, not bad bytes: the backend may be writing to the hinted digest's location.
      this.#state = 'rejected';
      throw new Error(`blob writer created for ${this.#expected} cannot commit ${expected}`);
    }
    const size = this.#written;
    if (expectedSize !== undefined && expectedSize !== size) {
      this.#state = 'rejected';
      throw new RegistryError('SIZE_INVALID', { expected: expectedSize, actual: size });
    }
    const actual = `sha256:${this.#hash.digest('hex')}`;
    if (actual !== expected) {
      this.#state = 'rejected';
      throw new RegistryError('DIGEST_INVALID', { expected, actual });
    }
    opts.onVerified?.();
    this.#busy = 'commit';
    try {
      await this.#raw.publish(expected, size);
    } catch (err) {
      // Not retried: after a failed fsync the kernel may have dropped the dirty pages, so a second
      // fsync that succeeds proves nothing (PostgreSQL's "fsyncgate"). The caller aborts.
      this.#state = 'rejected';
      throw err;
    } finally {
      this.#busy = undefined;
    }
    this.#state = 'committed';
    return { digest: expected, size };
  }

  runningHash(): Hash {
    return (this.#hashAtWritten ?? this.#hash).copy();
  }

  /**
   * A copy of the hash over every byte handed to `write` so far — the bytes written plus those of
   * a write still in flight (`handed` of them) — to check a digest before the write completes.
   * Never a reason to commit: `commit` verifies again, after every write succeeded.
   */
  hashAhead(): { hash: Hash; handed: number } {
    return { hash: this.#hash.copy(), handed: this.#handed };
  }

  async abort(): Promise<void> {
    if (this.#state === 'committed' || this.#state === 'aborted') return;
    this.#state = 'aborted';
    await this.#raw.discard();
  }

  #assertIdle(what: 'write' | 'commit'): void {
    if (this.#state !== 'open') throw new Error(`blob writer is ${this.#state}`);
    if (this.#busy) throw new Error(`blob writer: ${what} during a ${this.#busy}; await each call`);
  }
}
