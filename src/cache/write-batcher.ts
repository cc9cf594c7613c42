import { performance } from 'node:perf_hooks';

/**
 * Turns a stream of small chunks into few large sequential writes: chunks that arrive while a write
 * is in flight are queued and written together (one vectored write) when it finishes. Upstream bodies
 * arrive in 16–64 KiB pieces; awaiting a file write for each one made the write path, not the
 * network, the limit of a cold fill. Memory stays bounded: `push` waits once `maxPendingBytes` are
 * queued (backpressure on the source), until they are written.
 */
export class WriteBatcher {
  readonly #write: (chunks: readonly Buffer[], bytes: number) => Promise<void>;
  readonly #maxPendingBytes: number;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #draining: Promise<void> | undefined;
  #error: unknown;
  #waits = 0;
  #waitedMs = 0;

  /** `write` is called sequentially, never concurrently, with the chunks in the order pushed. */
  constructor(write: (chunks: readonly Buffer[], bytes: number) => Promise<void>, maxPendingBytes: number) {
    this.#write = write;
    this.#maxPendingBytes = maxPendingBytes;
  }

  /** The chunks queued and not yet handed to `write`, in order (a view: don't keep it). */
  get pending(): readonly Buffer[] {
    return this.#pending;
  }

  /** How often `push` waited for a write (the queue was full) and for how long in all (ms): the source was not read meanwhile. */
  get waited(): { count: number; ms: number } {
    return { count: this.#waits, ms: this.#waitedMs };
  }

  /** Bytes queued and not yet handed to `write`. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  /**
   * Queues `chunk`. Resolves at once unless too much is queued; rejects with the error of an earlier
   * failed write (nothing more is written after a failure).
   */
  async push(chunk: Buffer): Promise<void> {
    if (this.#error !== undefined) throw this.#error;
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    this.#draining ??= this.#drain();
    if (this.#pendingBytes >= this.#maxPendingBytes) {
      // Until everything queued is written. Waiting only for the write in flight (reading on while
      // the queue is written) was measured: 0.92× the wait per fill at load ~20, wall and CPU
      // within the noise, the fan-out's peak RSS 141–150 MiB (the window holds ~4 MiB unwritten
      // more of the time) — not kept (bench/RESULTS.md, "The fill's store waits").
      const from = performance.now();
      await this.#draining;
      this.#waits++;
      this.#waitedMs += performance.now() - from;
    }
    if (this.#error !== undefined) throw this.#error;
  }

  /** Resolves when everything pushed has been written; rejects with a write's error. */
  async flush(): Promise<void> {
    while (this.#draining) await this.#draining;
    if (this.#error !== undefined) throw this.#error;
  }

  async #drain(): Promise<void> {
    try {
      while (this.#pending.length > 0 && this.#error === undefined) {
        const chunks = this.#pending;
        const bytes = this.#pendingBytes;
        this.#pending = [];
        this.#pendingBytes = 0;
        await this.#write(chunks, bytes);
      }
    } catch (err) {
      this.#error = err ?? new Error('write failed');
      this.#pending = [];
      this.#pendingBytes = 0;
    } finally {
      this.#draining = undefined;
    }
  }
}
