import type { Digest } from '../domain/digest.js';
import type { BlobInfo, BlobStore, BlobWriter } from '../storage/blob-store.js';
import type { Metrics } from './metrics.js';

/**
 * A `BlobStore` decorator that keeps `hubcache_store_bytes` / `hubcache_store_objects` current:
 * `init()` counts what is already stored (one `list()` pass, at start), then every commit of a new
 * digest adds to the gauges and every delete of a stored one subtracts. Whatever the backend, the
 * gauges cost nothing at scrape time.
 */
export class StoreMetricsBlobStore implements BlobStore {
  readonly #inner: BlobStore;
  readonly #metrics: Metrics;
  #bytes = 0;
  #objects = 0;

  constructor(inner: BlobStore, metrics: Metrics) {
    this.#inner = inner;
    this.#metrics = metrics;
  }

  /** Counts the committed blobs. Call once, before serving (a commit racing the scan would be counted twice). */
  async init(): Promise<{ bytes: number; objects: number }> {
    let bytes = 0;
    let objects = 0;
    for await (const b of this.#inner.list()) {
      bytes += b.size;
      objects++;
    }
    this.#bytes = bytes;
    this.#objects = objects;
    this.#publish();
    return { bytes, objects };
  }

  stat(digest: Digest) {
    return this.#inner.stat(digest);
  }

  open(...args: Parameters<BlobStore['open']>) {
    return this.#inner.open(...args);
  }

  list(): AsyncIterable<BlobInfo> {
    return this.#inner.list();
  }

  async delete(digest: Digest): Promise<void> {
    const had = await this.#inner.stat(digest);
    await this.#inner.delete(digest);
    if (had) this.#add(-had.size, -1);
  }

  async create(): Promise<BlobWriter> {
    const writer = await this.#inner.create();
    const store = this;
    return {
      get written() {
        return writer.written;
      },
      // Passed on: without it a fill would spool the bytes a second time.
      localPath: writer.localPath,
      write: (data) => writer.write(data),
      abort: () => writer.abort(),
      async commit(expected, expectedSize, opts) {
        // Committing a digest that is already stored succeeds without adding anything.
        const existed = (await store.#inner.stat(expected)) !== undefined;
        const info = await writer.commit(expected, expectedSize, opts);
        if (!existed) store.#add(info.size, 1);
        return info;
      },
    };
  }

  #add(bytes: number, objects: number): void {
    this.#bytes += bytes;
    this.#objects += objects;
    this.#publish();
  }

  #publish(): void {
    this.#metrics.storeSize(this.#bytes, this.#objects);
  }
}
