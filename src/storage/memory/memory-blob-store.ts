import { addAbortSignal, Readable } from 'node:stream';
import type { ByteRange } from '../../domain/descriptor.js';
import { parseDigest, type Digest } from '../../domain/digest.js';
import { RegistryError } from '../../domain/errors.js';
import type { BlobInfo, BlobStore, BlobWriter, CreateOptions, StoreUsage } from '../blob-store.js';
import { VerifyingBlobWriter, type RawBlobWriter } from '../verifying-writer.js';

// Streams are cut into chunks like a file stream's, so that abort and backpressure behave alike.
const STREAM_CHUNK = 64 * 1024;

/**
 * An in-memory `BlobStore` for tests. It passes the same conformance suite as `FsBlobStore`
 * (including the error codes), so code tested against it behaves the same on disk. Its writers
 * offer no `localPath`: like an object store, it makes a cache fill spool its bytes itself.
 */
export class MemoryBlobStore implements BlobStore {
  readonly #blobs = new Map<Digest, Buffer>();
  readonly #pending = new Set<MemoryRawWriter>();
  #bytes = 0;

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

  async create(opts: CreateOptions = {}): Promise<BlobWriter> {
    const raw: MemoryRawWriter = new MemoryRawWriter({
      publish: (digest, bytes) => {
        // Content addressing: an existing blob already holds these bytes.
        if (!this.#blobs.has(digest)) {
          this.#blobs.set(digest, bytes);
          this.#bytes += bytes.length;
        }
        this.#pending.delete(raw);
      },
      discard: () => void this.#pending.delete(raw),
    });
    this.#pending.add(raw);
    return new VerifyingBlobWriter(raw, opts);
  }

  async delete(digest: Digest): Promise<void> {
    const d = parseDigest(digest);
    this.#bytes -= this.#blobs.get(d)?.length ?? 0;
    this.#blobs.delete(d);
  }

  usage(): StoreUsage {
    return { bytes: this.#bytes, objects: this.#blobs.size };
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

interface MemoryRawWriterOptions {
  /** Called once with the verified bytes. */
  readonly publish: (digest: Digest, bytes: Buffer) => void;
  /** Called once when the writer is discarded without a commit. */
  readonly discard: () => void;
}

/** A blob being written into a growing buffer. */
class MemoryRawWriter implements RawBlobWriter {
  readonly #opts: MemoryRawWriterOptions;
  #buf: Buffer | undefined = Buffer.alloc(64 * 1024);
  #length = 0;

  constructor(opts: MemoryRawWriterOptions) {
    this.#opts = opts;
  }

  async write(chunks: readonly Uint8Array[]): Promise<void> {
    for (const chunk of chunks) this.#append(chunk);
  }

  #append(chunk: Uint8Array): void {
    if (!this.#buf) throw new Error('blob writer is closed');
    const needed = this.#length + chunk.length;
    if (needed > this.#buf.length) {
      const grown = Buffer.alloc(Math.max(needed, this.#buf.length * 2));
      this.#buf.copy(grown, 0, 0, this.#length);
      this.#buf = grown;
    }
    this.#buf.set(chunk, this.#length);
    this.#length = needed;
  }

  async publish(digest: Digest, size: number): Promise<void> {
    if (!this.#buf || size !== this.#length) throw new Error('blob writer: publish of bytes it does not hold');
    // A copy of exactly `size` bytes: the growing buffer has spare room.
    this.#opts.publish(digest, Buffer.from(this.#buf.subarray(0, size)));
    this.#buf = undefined;
  }

  async discard(): Promise<void> {
    if (!this.#buf) return;
    this.#buf = undefined;
    this.#opts.discard();
  }
}
