import type { StorageFaultErrno } from './storage-fault.js';
import { storageFaultCause } from './storage-fault.js';

export interface StoreHealthOptions {
  /** Tries a small write in the store: resolves when it worked, rejects with the error when not. */
  readonly probe: () => Promise<void>;
  /** Whether the store is writable changed (metrics: hubcache_store_writable). */
  readonly onChange?: (writable: boolean) => void;
  /**
   * A write failed with a storage fault (first one of a degraded spell, with its errno and path).
   * The hook for emergency eviction (server.ts runs an `emergency` pass of cache/evictor.ts on ENOSPC/EDQUOT).
   */
  readonly onStorageFull?: (fault: { errno: StorageFaultErrno; path?: string }) => void;
  /** How long a failed probe's answer is reused, so a flood of misses doesn't probe per request (ms). */
  readonly recheckMs?: number;
  readonly clock?: () => number;
}

/**
 * Whether the store can take writes. Starts writable; a storage fault seen on any write (`fault`)
 * or a failed probe marks it degraded, and the next probe that writes again (at most every
 * `recheckMs`, or on every /readyz) clears it: recovery needs no restart. Reads never depend on it.
 */
export class StoreHealth {
  readonly #o: StoreHealthOptions;
  readonly #clock: () => number;
  #writable = true;
  #checkedAt = -Infinity;
  #checking: Promise<boolean> | undefined;

  constructor(opts: StoreHealthOptions) {
    this.#o = opts;
    this.#clock = opts.clock ?? Date.now;
  }

  get writable(): boolean {
    return this.#writable;
  }

  /** A write failed: when it is a storage fault, the store is degraded until a probe writes again. Returns whether it was one. */
  fault(err: unknown): boolean {
    const raw = storageFaultCause(err) ?? storageFaultCause((err as Error | undefined)?.cause);
    const errno = raw?.code as StorageFaultErrno | undefined;
    if (raw === undefined || errno === undefined) return false;
    this.#checkedAt = this.#clock();
    if (this.#writable) {
      this.#set(false);
      this.#o.onStorageFull?.({ errno, ...(raw.path ? { path: raw.path } : {}) });
    }
    return true;
  }

  /** Probes now (one probe at a time) and returns whether the store is writable. */
  check(): Promise<boolean> {
    return (this.#checking ??= this.#o
      .probe()
      .then(
        () => true,
        (err: unknown) => {
          if (!this.fault(err)) this.#set(false);
          return false;
        },
      )
      .then((ok) => {
        this.#checkedAt = this.#clock();
        if (ok) this.#set(true);
        return ok;
      })
      .finally(() => (this.#checking = undefined)));
  }

  /** Writable, or probed again when the last failure is older than `recheckMs`. */
  async writableNow(): Promise<boolean> {
    if (this.#writable) return true;
    if (this.#clock() - this.#checkedAt < (this.#o.recheckMs ?? 1_000)) return false;
    return this.check();
  }

  #set(writable: boolean): void {
    if (this.#writable === writable) return;
    this.#writable = writable;
    this.#o.onChange?.(writable);
  }
}
