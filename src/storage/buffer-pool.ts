/**
 * A bounded pool of equal-sized buffers, shared by every response that streams a stored blob
 * (issue #11, point 7): however many clients download at once — or stop reading and hold their
 * buffers until the send timeout closes them — the pooled memory never exceeds `maxBytes`.
 *
 * Buffers are allocated on first use, up to the bound, and kept for reuse once returned (an idle
 * process holds only what its busiest moment needed). Nobody waits for a buffer: `tryAcquire`
 * answers at once, and `acquire` hands out a small buffer from outside the pool when it is all in
 * use, so a response streams on at reduced speed (see FileRangeStream.writeTo) rather than
 * stalling behind clients that may never read again.
 */
export interface BufferPoolOptions {
  /** Size of every buffer. */
  readonly bufferSize: number;
  /** Upper bound of the buffers' total size (rounded down to whole buffers; 0: an empty pool). */
  readonly maxBytes: number;
  /** Called whenever `acquire` hands out a fallback buffer (a metric). */
  readonly onFallback?: () => void;
}

export interface BufferPoolStats {
  /** Bytes of buffers handed out and not returned yet. */
  readonly inUseBytes: number;
  /** Bytes of buffers allocated and free for reuse. */
  readonly idleBytes: number;
  /** The bound, in bytes (whole buffers). */
  readonly capacityBytes: number;
  /** Buffers `acquire` handed out from outside the pool because it was all in use (ever). */
  readonly fallbacks: number;
}

export class BufferPool {
  readonly bufferSize: number;
  /** How many buffers the pool may hold in all. */
  readonly capacity: number;
  readonly #idle: Buffer[] = [];
  readonly #inUse = new Set<Buffer>();
  #fallbacks = 0;
  readonly #onFallback: (() => void) | undefined;

  constructor(opts: BufferPoolOptions) {
    this.#onFallback = opts.onFallback;
    if (!(Number.isSafeInteger(opts.bufferSize) && opts.bufferSize > 0)) throw new RangeError('bufferSize must be a positive integer');
    this.bufferSize = opts.bufferSize;
    this.capacity = Math.max(0, Math.floor(opts.maxBytes / opts.bufferSize));
  }

  /** Buffers that `tryAcquire` could hand out now. */
  get available(): number {
    return this.capacity - this.#inUse.size;
  }

  /**
   * A buffer of `bufferSize` bytes (uninitialised: old contents), or `undefined` when handing one
   * out would leave `reserve` or fewer available: a caller that can do without (a second buffer
   * for read-ahead) passes a reserve so that others still find one. The caller owns the buffer
   * until it passes it to `release`, and must not touch it afterwards.
   */
  tryAcquire(reserve = 0): Buffer | undefined {
    if (this.available <= reserve) return undefined;
    const buf = this.#idle.pop() ?? Buffer.allocUnsafeSlow(this.bufferSize);
    this.#inUse.add(buf);
    return buf;
  }

  /**
   * A pooled buffer when one is available, else a fresh one of `fallbackSize` bytes that belongs
   * to the caller alone (`pooled: false`: not to be released; the garbage collector frees it).
   */
  acquire(fallbackSize: number): { buffer: Buffer; pooled: boolean } {
    const buffer = this.tryAcquire();
    if (buffer) return { buffer, pooled: true };
    this.#fallbacks++;
    this.#onFallback?.();
    return { buffer: Buffer.allocUnsafeSlow(fallbackSize), pooled: false };
  }

  /**
   * Returns a buffer from `tryAcquire` or a pooled one from `acquire`. Only once nothing reads it any more: a write that may
   * still be copying from it (a socket's pending write) must have completed or been cancelled.
   * Returning a buffer twice, or one that isn't from this pool, is ignored.
   */
  release(buf: Buffer): void {
    if (!this.#inUse.delete(buf)) return;
    this.#idle.push(buf);
  }

  stats(): BufferPoolStats {
    return {
      inUseBytes: this.#inUse.size * this.bufferSize,
      idleBytes: this.#idle.length * this.bufferSize,
      capacityBytes: this.capacity * this.bufferSize,
      fallbacks: this.#fallbacks,
    };
  }
}
