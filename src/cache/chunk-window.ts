/**
 * The most recent bytes of a download, kept in memory so that clients following a fill get them as
 * they arrive from upstream — without waiting for the file write and without reading them back
 * from disk. Only bytes already written to the store's file may be evicted, so a client that falls
 * behind the window continues from the file; memory stays bounded by `maxBytes` plus the writes in
 * flight, whatever the blob size or the number of clients (they share the same buffers).
 */
export class ChunkWindow {
  readonly #maxBytes: number;
  #chunks: Buffer[] = [];
  /** Blob offset of the first byte of #chunks[0]. */
  #start = 0;
  #bytes = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** Offset of the first byte still held. */
  get start(): number {
    return this.#start;
  }

  /** Offset just past the last byte received. */
  get end(): number {
    return this.#start + this.#bytes;
  }

  append(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#bytes += chunk.length;
  }

  /** Drops the oldest chunks that are fully below `written` while more than `maxBytes` are held. */
  evict(written: number): void {
    while (this.#chunks.length > 0 && this.#bytes > this.#maxBytes) {
      const first = this.#chunks[0]!;
      if (this.#start + first.length > written) return;
      this.#chunks.shift();
      this.#start += first.length;
      this.#bytes -= first.length;
    }
  }

  /** Drops everything (the fill is over); later slices read from the file. */
  clear(written: number): void {
    this.#chunks = [];
    this.#start = written;
    this.#bytes = 0;
  }

  /**
   * A view (no copy) of the held bytes from `pos`, up to `limit` (exclusive) and the end of the
   * chunk holding `pos`; undefined when `pos` is no longer (or not yet) held. Views, not copies:
   * merging chunks into one buffer per follower looked like fewer socket writes, but the bench
   * showed the allocations (fresh 1 MiB backing stores, page faults) cost more CPU than they saved.
   */
  slice(pos: number, limit: number): Buffer | undefined {
    const stop = Math.min(limit, this.end);
    if (pos < this.#start || pos >= stop) return undefined;
    // From the newest chunk back: followers keep up, so `pos` is almost always near the end.
    let at = this.end;
    for (let i = this.#chunks.length - 1; i >= 0; i--) {
      const chunk = this.#chunks[i]!;
      at -= chunk.length;
      if (pos >= at) return chunk.subarray(pos - at, Math.min(chunk.length, stop - at));
    }
    return undefined;
  }
}
