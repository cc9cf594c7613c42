import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream';
import type { ByteRange } from '../../domain/descriptor.js';
import type { Digest } from '../../domain/digest.js';
import type { Logger } from '../../lib/logger.js';
import type { BlobInfo, BlobStore, BlobWriter, CreateOptions, StoreUsage } from '../blob-store.js';
import { FsBlobStore } from '../fs/fs-blob-store.js';
import type { BufferPool } from '../buffer-pool.js';

export interface HotCacheOptions {
  /** A local directory of this replica alone (a filesystem blob store: blobs/, tmp/). */
  readonly path: string;
  /** The most blob bytes kept there; least recently read blobs go first. */
  readonly maxSize: number;
  readonly logger: Logger;
  readonly readBuffers?: BufferPool;
  /** Copies into the directory running at once. Default 2. */
  readonly copies?: number;
  /**
   * The most bytes a copy may lag behind the client it is teed from (passed to the client, not yet
   * written to the local file): the memory a copy holds; beyond it the stream waits for the disk.
   * Default 8 MiB.
   */
  readonly maxCopyLag?: number;
}

/**
 * The bucket's blobs with a local, bounded, LRU copy of the hot ones in front (`storage.hotCache`):
 * a read that finds the blob in the local directory is served from it at local-disk speed (and with
 * the filesystem store's fast `writeTo` path); a whole-blob read that doesn't is served from the
 * bucket and the same bytes are teed into the directory as they pass — one GET, no second read of
 * the bucket (see `#tee`). Above `maxSize` the
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
    // A range is part of the blob: no copy (a later whole read makes one).
    if (opts.range || this.#copying.has(digest) || this.#copying.size >= (this.#o.copies ?? 2)) return body;
    return this.#tee(digest, body);
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

  /** The bucket's usage (the local copies are a cache of it, not counted: `localBytes`). */
  usage(): StoreUsage | undefined {
    return this.#bucket.usage?.();
  }

  /** Waits for the background copies started so far (tests, the bench). */
  async settled(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all(this.#pending);
  }

  readonly #pending = new Set<Promise<void>>();

  /**
   * The bucket's `body` for the client, its bytes also written to a local writer as they pass (a
   * Transform: one read of the bucket for both):
   * - pace: the client's, as for any body read from the bucket; the local writes follow behind, at
   *   most `maxCopyLag` bytes (memory per copy); past that the stream waits for the local disk —
   *   normally far faster than the bucket — before taking more from the bucket;
   * - the copy is published only by the filesystem writer's `commit`, which verifies size and
   *   digest first: bytes that don't hash to `digest` never become a local blob;
   * - a client that goes away, a bucket error, a failed local write or a blob bigger than
   *   `maxSize` drops the copy (aborted, nothing left in tmp/) and never the client's response;
   *   the next whole read from the bucket tries again.
   * The client's stream ends as soon as its last byte is through; the commit (fsync, rename)
   * follows in the background (`settled()` waits for it).
   */
  #tee(digest: Digest, body: Readable): Readable {
    this.#copying.add(digest);
    const maxLag = this.#o.maxCopyLag ?? 8 * 1024 * 1024;
    const writer = this.#local.create({ digest });
    let chain: Promise<unknown> = writer;
    let lag = 0;
    let seen = 0;
    let dropped = false;
    let finished = false;
    // Settles when the copy is published or dropped (`settled()` waits for it).
    let copyEnded!: () => void;
    this.#track(new Promise<void>((resolve) => (copyEnded = resolve)));
    const end = () => {
      this.#copying.delete(digest);
      copyEnded();
    };
    const drop = (why: string, error?: unknown) => {
      if (dropped) return;
      dropped = true;
      if (error !== undefined) this.#o.logger.warn('hot cache: copy of a blob read from the bucket dropped', { digest, reason: why, error: String(error) });
      else this.#o.logger.debug('hot cache: copy of a blob read from the bucket dropped', { digest, reason: why });
      void chain
        .then(
          () => undefined,
          () => undefined,
        )
        .then(async () => (await writer.catch(() => undefined))?.abort())
        .catch(() => {})
        .finally(end);
    };
    const tee = new Transform({
      highWaterMark: 1024 * 1024,
      transform: (chunk: Buffer, _enc, cb: TransformCallback) => {
        seen += chunk.length;
        if (!dropped && seen > this.#o.maxSize) drop('bigger than the hot cache');
        if (dropped) return cb(null, chunk);
        lag += chunk.length;
        const written = chain.then(async () => {
          await (await writer).write(chunk);
          lag -= chunk.length;
        });
        chain = written;
        written.catch((err: unknown) => drop('a local write failed', err));
        tee.push(chunk);
        // Too far ahead of the disk: wait for this write (and every one before it).
        if (lag > maxLag) written.then(() => cb(), () => cb());
        else cb();
      },
      flush: (cb: TransformCallback) => {
        finished = true;
        if (!dropped) {
          const size = seen;
          void chain
            .then(async () => {
              await (await writer).commit(digest, size);
              this.#remember(digest, size);
              this.#o.logger.debug('hot cache: blob copied', { digest, size });
              await this.#evict();
            })
            .catch(async (err: unknown) => {
              this.#o.logger.warn('hot cache: copy of a blob read from the bucket failed', { digest, error: String(err) });
              await (await writer.catch(() => undefined))?.abort().catch(() => {});
            })
            .finally(end);
        }
        cb();
      },
    });
    tee.once('close', () => {
      if (!finished) drop('the client went away');
    });
    pipeline(body, tee, () => {
      // Errors reach the client through `tee`; its 'close' drops the copy.
    });
    return tee;
  }

  #track(job: Promise<void>): void {
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
