import { performance } from 'node:perf_hooks';

/**
 * Turns a stream of small chunks into few large sequential writes: chunks that arrive while a write
 * is in flight are queued and written together (one vectored write) when it finishes. Upstream bodies
 * arrive in 16–64 KiB pieces; awaiting a file write for each one made the write path, not the
 * network, the limit of a cold fill. Memory stays bounded: `push` waits once `maxPendingBytes` are
 * queued (backpressure on the source), until the write in flight is done and the queue goes out.
 */
export class WriteBatcher {
  readonly #write: (chunks: readonly Buffer[], bytes: number) => Promise<void>;
  readonly #maxPendingBytes: number;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #draining: Promise<void> | undefined;
  #error: unknown;
  #waits = 0;
  /** Resolved when the queue is handed to a write (or the writes stop): pushes waiting for room go on. */
  #room: Promise<void> | undefined;
  #wakeRoomWaiters: (() => void) | undefined;
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
      // Until the write in flight is done and the queue is handed to the next one — not until
      // that one is done too: the source is read again while it runs (memory: one write in flight
      // and one queue, each at most maxPendingBytes plus a chunk, as before).
      const from = performance.now();
      this.#room ??= new Promise<void>((resolve) => (this.#wakeRoomWaiters = resolve));
      await this.#room;
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

  #wakeRoom(): void {
    const wake = this.#wakeRoomWaiters;
    this.#room = undefined;
    this.#wakeRoomWaiters = undefined;
    wake?.();
  }

  async #drain(): Promise<void> {
    try {
      while (this.#pending.length > 0 && this.#error === undefined) {
        const chunks = this.#pending;
        const bytes = this.#pendingBytes;
        this.#pending = [];
        this.#pendingBytes = 0;
        this.#wakeRoom();
        await this.#write(chunks, bytes);
      }
    } catch (err) {
      this.#error = err ?? new Error('write failed');
      this.#pending = [];
      this.#pendingBytes = 0;
    } finally {
      this.#draining = undefined;
      this.#wakeRoom();
    }
  }
}
