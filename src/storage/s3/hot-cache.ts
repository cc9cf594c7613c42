import type { Readable } from 'node:stream';
import type { ByteRange } from '../../domain/descriptor.js';
import type { Digest } from '../../domain/digest.js';
import type { Logger } from '../../lib/logger.js';
import type { BlobInfo, BlobStore, BlobWriter, CreateOptions } from '../blob-store.js';
import { FsBlobStore } from '../fs/fs-blob-store.js';
import type { BufferPool } from '../buffer-pool.js';

export interface HotCacheOptions {
  /** A local directory of this replica alone (a filesystem blob store: blobs/, tmp/). */
  readonly path: string;
  /** The most blob bytes kept there; least recently read blobs go first. */
  readonly maxSize: number;
  readonly logger: Logger;
  readonly readBuffers?: BufferPool;
  /** Copies from the bucket running at once. Default 2. */
  readonly copies?: number;
}

/**
 * The bucket's blobs with a local, bounded, LRU copy of the hot ones in front (`storage.hotCache`):
 * a read that finds the blob in the local directory is served from it at local-disk speed (and with
 * the filesystem store's fast `writeTo` path); a read that doesn't is served from the bucket, and the
 * blob is copied into the directory in the background (a second GET, verified by the filesystem
 * store's writer against its digest), unless it is bigger than the whole cache. Above `maxSize` the
 * least recently read blobs are removed from the directory (never from the bucket). Writes (fills)
 * go to the bucket only. Losing the directory loses nothing. One directory per replica: its tmp/ is
 * emptied at start.
 */
export class HotCachedBlobStore implements BlobStore {
  readonly #bucket: BlobStore;
  readonly #local: FsBlobStore;
  readonly #o: HotCacheOptions;
  /** Local blobs in recency order (oldest first) with their sizes. */
  readonly #lru = new Map<Digest, number>();
  #bytes = 0;
  readonly #copying = new Set<Digest>();
  #ready: Promise<void> | undefined;

  constructor(bucket: BlobStore, o: HotCacheOptions) {
    this.#bucket = bucket;
    this.#o = o;
    this.#local = new FsBlobStore({ root: o.path, ...(o.readBuffers ? { readBuffers: o.readBuffers } : {}) });
  }

  /** Bytes held locally now (tests, the bench). */
  get localBytes(): number {
    return this.#bytes;
  }

  /** Creates the directory, empties its tmp/ and learns what it holds (a walk of a bounded local directory). */
  init(): Promise<void> {
    this.#ready ??= (async () => {
      await this.#local.init();
      for await (const b of this.#local.list()) this.#remember(b.digest, b.size);
      await this.#evict();
    })();
    return this.#ready;
  }

  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    if (this.#lru.has(digest)) {
      const local = await this.#local.stat(digest);
      if (local) return local;
    }
    return this.#bucket.stat(digest);
  }

  async open(digest: Digest, opts: { range?: ByteRange; signal?: AbortSignal } = {}): Promise<Readable> {
    if (this.#lru.has(digest)) {
      try {
        const body = await this.#local.open(digest, opts);
        this.#touch(digest);
        return body;
      } catch (err) {
        if ((err as { code?: string }).code === 'RANGE_INVALID' || (err as { name?: string }).name === 'AbortError') throw err;
        this.#forget(digest); // gone or unreadable locally: the bucket has it
      }
    }
    const body = await this.#bucket.open(digest, opts);
    this.#copy(digest);
    return body;
  }

  create(opts?: CreateOptions): Promise<BlobWriter> {
    return this.#bucket.create(opts);
  }

  async delete(digest: Digest): Promise<void> {
    await this.#bucket.delete(digest);
    this.#forget(digest);
    await this.#local.delete(digest);
  }

  list(): AsyncIterable<BlobInfo> {
    return this.#bucket.list();
  }

  /** Waits for the background copies started so far (tests, the bench). */
  async settled(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all(this.#pending);
  }

  readonly #pending = new Set<Promise<void>>();

  #copy(digest: Digest): void {
    if (this.#copying.has(digest) || this.#copying.size >= (this.#o.copies ?? 2)) return;
    this.#copying.add(digest);
    const job = (async () => {
      let writer: BlobWriter | undefined;
      try {
        const info = await this.#bucket.stat(digest);
        if (!info || info.size > this.#o.maxSize) return;
        const body = await this.#bucket.open(digest);
        writer = await this.#local.create();
        for await (const chunk of body as AsyncIterable<Buffer>) await writer.write(chunk);
        await writer.commit(digest, info.size);
        writer = undefined;
        this.#remember(digest, info.size);
        await this.#evict();
      } catch (err) {
        this.#o.logger.warn('hot cache: copy from the bucket failed', { digest, error: String(err) });
      } finally {
        await writer?.abort().catch(() => {});
        this.#copying.delete(digest);
      }
    })();
    this.#pending.add(job);
    void job.then(() => this.#pending.delete(job));
  }

  #remember(digest: Digest, size: number): void {
    if (!this.#lru.has(digest)) this.#bytes += size;
    this.#lru.delete(digest);
    this.#lru.set(digest, size);
  }

  #touch(digest: Digest): void {
    const size = this.#lru.get(digest);
    if (size === undefined) return;
    this.#lru.delete(digest);
    this.#lru.set(digest, size);
  }

  #forget(digest: Digest): void {
    const size = this.#lru.get(digest);
    if (size === undefined) return;
    this.#lru.delete(digest);
    this.#bytes -= size;
  }

  /** Least recently read first, until the directory holds at most `maxSize`. */
  async #evict(): Promise<void> {
    for (const [digest] of this.#lru) {
      if (this.#bytes <= this.#o.maxSize) return;
      this.#forget(digest);
      await this.#local.delete(digest).catch((err: unknown) => this.#o.logger.warn('hot cache: eviction failed', { digest, error: String(err) }));
    }
  }
}
