/**
 * A counting semaphore with a fair line: at most `limit` slots are held at once, and the rest wait
 * first come, first served. A waiter that gives up (its signal aborts) leaves the line without ever
 * holding a slot. Small and generic on purpose (docs/architecture.md#the-life-of-a-fill: resilience primitives know no domain):
 * the cache uses one to bound concurrent blob downloads (issue #11, point 8).
 */
export interface Slot {
  /** Gives the slot back (to the first waiter, if any). Idempotent. */
  release(): void;
}

interface Waiter {
  grant(slot: Slot): void;
  fail(err: unknown): void;
}

export class SlotQueue {
  readonly limit: number;
  #held = 0;
  /** Insertion-ordered: the first entry is the longest waiter; removal is O(1). */
  readonly #line = new Set<Waiter>();
  #closed: Error | undefined;

  constructor(limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`slot limit must be a positive integer, got ${limit}`);
    this.limit = limit;
  }

  /** Slots held now. */
  get held(): number {
    return this.#held;
  }

  /** Callers waiting for a slot now. */
  get waiting(): number {
    return this.#line.size;
  }

  /** A slot at once, or `undefined` when all are held, someone is already waiting, or the queue is closed. */
  tryAcquire(): Slot | undefined {
    if (this.#closed || this.#held >= this.limit || this.#line.size > 0) return undefined;
    this.#held++;
    return this.#slot();
  }

  /**
   * A slot, in order of arrival. Rejects with `signal.reason` when the signal aborts first (the
   * caller leaves the line), or with the close reason when the queue is closed.
   */
  acquire(signal?: AbortSignal): Promise<Slot> {
    const now = this.tryAcquire();
    if (now) return Promise.resolve(now);
    if (this.#closed) return Promise.reject(this.#closed);
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<Slot>((resolve, reject) => {
      const onAbort = () => {
        this.#line.delete(waiter);
        reject(signal!.reason);
      };
      const waiter: Waiter = {
        grant: (slot) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(slot);
        },
        fail: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      this.#line.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Fails every waiter and every later `acquire` with `reason` (shutdown). Slots already held stay
   * valid until released.
   */
  close(reason: Error): void {
    this.#closed ??= reason;
    const waiting = [...this.#line];
    this.#line.clear();
    for (const w of waiting) w.fail(reason);
  }

  #slot(): Slot {
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        const next = this.#line.values().next();
        if (next.done) {
          this.#held--;
          return;
        }
        // Handed over directly: the count of held slots doesn't change.
        this.#line.delete(next.value);
        next.value.grant(this.#slot());
      },
    };
  }
}
