/**
 * Keyed promise sharing: concurrent callers with the same key get the same work (same value, same
 * rejection); the entry is removed when it settles, so the next call after a failure retries.
 * Keys name what is fetched (`blob:<digest>`, `manifest:<upstream>/<repo>@<ref>`, `token:…`).
 *
 * The work belongs to its callers together. A caller that passes a `signal` stops waiting when it
 * aborts (its promise rejects with the signal's reason) and the work goes on for the others; when
 * the last of them has gone, the work's own signal aborts and the key is free at once, so a later
 * caller starts afresh instead of joining work nobody will finish. A caller without a signal waits
 * for good: the work is never aborted while it is in flight.
 */
export class SingleFlight<K, V> {
  readonly #inflight = new Map<K, Flight<V>>();

  /** Runs `fn` unless a call for `key` is in flight; `joined` tells the caller which case it was. */
  run(key: K, fn: (signal: AbortSignal) => Promise<V>, signal?: AbortSignal): { promise: Promise<V>; joined: boolean } {
    signal?.throwIfAborted();
    let flight = this.#inflight.get(key);
    const joined = flight !== undefined;
    if (!flight) {
      const f = { controller: new AbortController(), waiters: 0, pinned: false } as Flight<V>;
      this.#inflight.set(key, f);
      f.promise = (async () => {
        try {
          return await fn(f.controller.signal);
        } finally {
          if (this.#inflight.get(key) === f) this.#inflight.delete(key);
        }
      })();
      // Every waiter may have gone: the rejection is then nobody's to handle.
      f.promise.catch(() => {});
      flight = f;
    }
    return { promise: this.#wait(key, flight, signal), joined };
  }

  do(key: K, fn: (signal: AbortSignal) => Promise<V>, signal?: AbortSignal): Promise<V> {
    return this.run(key, fn, signal).promise;
  }

  get size(): number {
    return this.#inflight.size;
  }

  #wait(key: K, f: Flight<V>, signal: AbortSignal | undefined): Promise<V> {
    if (!signal) {
      f.pinned = true;
      return f.promise;
    }
    f.waiters++;
    return new Promise<V>((resolve, reject) => {
      const onAbort = () => {
        reject(signal.reason);
        if (--f.waiters > 0 || f.pinned) return;
        if (this.#inflight.get(key) === f) this.#inflight.delete(key);
        f.controller.abort(new FlightAbandonedError());
      };
      signal.addEventListener('abort', onAbort, { once: true });
      f.promise.then(
        (v) => (signal.removeEventListener('abort', onAbort), resolve(v)),
        (e: unknown) => (signal.removeEventListener('abort', onAbort), reject(e)),
      );
    });
  }
}

interface Flight<V> {
  promise: Promise<V>;
  readonly controller: AbortController;
  /** Callers with a signal still waiting. */
  waiters: number;
  /** A caller without a signal joined: the work is never abandoned. */
  pinned: boolean;
}

/** The reason a flight's signal aborts with: every caller stopped waiting for it. */
export class FlightAbandonedError extends Error {
  constructor() {
    super('every caller stopped waiting');
    this.name = 'AbortError';
  }
}
