import { createHash, type Hash } from 'node:crypto';
import { addAbortSignal, Readable } from 'node:stream';
import type { ByteRange } from '../../domain/descriptor.js';
import { parseDigest, type Digest } from '../../domain/digest.js';
import { RegistryError } from '../../domain/errors.js';
import type { BlobInfo, BlobStore, BlobWriter, CommitOptions } from '../blob-store.js';

// Streams are cut into chunks like a file stream's, so that abort and backpressure behave alike.
const STREAM_CHUNK = 64 * 1024;

/**
 * An in-memory `BlobStore` for tests. It passes the same conformance suite as `FsBlobStore`
 * (including the error codes), so code tested against it behaves the same on disk.
 */
export class MemoryBlobStore implements BlobStore {
  readonly #blobs = new Map<Digest, Buffer>();
  readonly #pending = new Set<MemoryBlobWriter>();

  /** Writers neither committed nor aborted: the in-memory counterpart of files left in tmp/. */
  get pendingWrites(): number {
    return this.#pending.size;
  }

  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    const bytes = this.#blobs.get(parseDigest(digest));
    return bytes ? { digest, size: bytes.length } : undefined;
  }

  /** See `FsBlobStore.open`: `BLOB_UNKNOWN`, `RANGE_INVALID`, and `AbortError` through `signal`. */
  async open(digest: Digest, opts: { range?: ByteRange; signal?: AbortSignal } = {}): Promise<Readable> {
    opts.signal?.throwIfAborted();
    const bytes = this.#blobs.get(parseDigest(digest));
    if (!bytes) throw new RegistryError('BLOB_UNKNOWN', { digest });
    const { range } = opts;
    if (range && !(Number.isSafeInteger(range.start) && range.start >= 0 && range.start <= range.end && range.end < bytes.length)) {
      throw new RegistryError('RANGE_INVALID', { digest, range, size: bytes.length });
    }
    const stream = Readable.from(chunks(bytes, range?.start ?? 0, range ? range.end + 1 : bytes.length), { objectMode: false });
    return opts.signal ? addAbortSignal(opts.signal, stream) : stream;
  }

  async create(): Promise<MemoryBlobWriter> {
    const writer: MemoryBlobWriter = new MemoryBlobWriter({
      commit: (digest, bytes) => {
        // Content addressing: an existing blob already holds these bytes.
        if (!this.#blobs.has(digest)) this.#blobs.set(digest, bytes);
        this.#pending.delete(writer);
      },
      abort: () => void this.#pending.delete(writer),
    });
    this.#pending.add(writer);
    return writer;
  }

  async delete(digest: Digest): Promise<void> {
    this.#blobs.delete(parseDigest(digest));
  }

  async *list(): AsyncIterable<BlobInfo> {
    for (const digest of [...this.#blobs.keys()].sort()) {
      const bytes = this.#blobs.get(digest);
      if (bytes) yield { digest, size: bytes.length };
    }
  }
}

function* chunks(bytes: Buffer, start: number, end: number): Generator<Buffer> {
  // Copies, so that a consumer mutating a chunk can't change the stored blob.
  for (let p = start; p < end; p += STREAM_CHUNK) yield Buffer.from(bytes.subarray(p, Math.min(p + STREAM_CHUNK, end)));
}

export interface MemoryBlobWriterOptions {
  /** Called once with the verified bytes. */
  readonly commit: (digest: Digest, bytes: Buffer) => void;
  /** Called once when the writer is discarded without a commit. */
  readonly abort: () => void;
}

/** A blob being written into a growing buffer; same state rules as `FsBlobWriter`. */
export class MemoryBlobWriter implements BlobWriter {
  readonly #opts: MemoryBlobWriterOptions;
  readonly #hash: Hash = createHash('sha256');
  #buf: Buffer | undefined = Buffer.alloc(64 * 1024);
  #written = 0;
  #state: 'open' | 'rejected' | 'committed' | 'closed' = 'open';

  constructor(opts: MemoryBlobWriterOptions) {
    this.#opts = opts;
  }

  get written(): number {
    return this.#written;
  }

  async write(data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    for (const chunk of data instanceof Uint8Array ? [data] : data) this.#append(chunk);
  }

  #append(chunk: Uint8Array): void {
    if (this.#state !== 'open' || !this.#buf) throw new Error(`blob writer is ${this.#state}`);
    const needed = this.#written + chunk.length;
    if (needed > this.#buf.length) {
      const grown = Buffer.alloc(Math.max(needed, this.#buf.length * 2));
      this.#buf.copy(grown, 0, 0, this.#written);
      this.#buf = grown;
    }
    this.#buf.set(chunk, this.#written);
    this.#hash.update(chunk);
    this.#written = needed;
  }

  async readAt(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    if (this.#state === 'closed' || !this.#buf) throw new Error('blob writer is closed');
    const n = Math.min(length, this.#written - position);
    if (n <= 0) return 0;
    buffer.set(this.#buf.subarray(position, position + n), offset);
    return n;
  }

  async commit(expected: Digest, expectedSize?: number, opts: CommitOptions = {}): Promise<BlobInfo> {
    if (this.#state !== 'open' || !this.#buf) throw new Error(`blob writer is ${this.#state}`);
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
    // A copy: the store keeps exactly `size` bytes, and readAt keeps reading the writer's buffer.
    this.#opts.commit(expected, Buffer.from(this.#buf.subarray(0, size)));
    this.#state = 'committed';
    return { digest: expected, size };
  }

  async abort(): Promise<void> {
    if (this.#state === 'closed') return;
    if (this.#state !== 'committed') this.#opts.abort();
    this.#state = 'closed';
    this.#buf = undefined;
  }

  async release(): Promise<void> {
    return this.abort();
  }
}
