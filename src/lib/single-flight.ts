/**
 * Keyed promise sharing: concurrent callers with the same key get the same Promise (same value,
 * same rejection); the entry is removed when it settles, so the next call after a failure retries.
 * Keys name what is fetched (`blob:<digest>`, `manifest:<upstream>/<repo>@<ref>`, `token:…`).
 */
export class SingleFlight<K, V> {
  readonly #inflight = new Map<K, Promise<V>>();

  /** Runs `fn` unless a call for `key` is in flight; `joined` tells the caller which case it was. */
  run(key: K, fn: () => Promise<V>): { promise: Promise<V>; joined: boolean } {
    const existing = this.#inflight.get(key);
    if (existing) return { promise: existing, joined: true };
    const promise = (async () => {
      try {
        return await fn();
      } finally {
        this.#inflight.delete(key);
      }
    })();
    this.#inflight.set(key, promise);
    return { promise, joined: false };
  }

  do(key: K, fn: () => Promise<V>): Promise<V> {
    return this.run(key, fn).promise;
  }

  get size(): number {
    return this.#inflight.size;
  }
}
