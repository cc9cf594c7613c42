import type { AccessRecord } from './access-record.js';
import type { BlobStore, StoreUsage } from './blob-store.js';
import type { ManifestStore, MetadataStore } from './manifest-store.js';

/**
 * One opened store: the three stores of the data plus what its owner does with it as a whole —
 * take ownership, prepare it, check it, close it. `openStorage` (open-storage.ts) builds one from
 * the `storage` config for its `driver`; nothing above storage/ knows which driver it got. A
 * backend (an S3 one later) implements this interface and passes the conformance suites
 * (storage/testing/); http/ and cache/ don't change.
 *
 * The life of a serving process: `acquireOwnership()` → `init()` → serve through the stores →
 * `close()` → `ownership.release()`. A reader (`hubcache ls`) uses the stores without ownership or
 * `init`: reads are safe while another process owns the store.
 */
export interface Storage {
  readonly blobs: BlobStore;
  readonly manifests: ManifestStore;
  readonly metadata: MetadataStore;
  /**
   * When each blob, manifest and tag was last served (access-record.ts): LRU eviction and tag
   * retention read it. The owner's `init` starts persisting it in batches, `close` flushes the last
   * batch; a reader may read it without either.
   */
  readonly access: AccessRecord;
  /**
   * A local directory for the spool files of fills (cache/spool.ts) whose store writer offers no
   * local file, or `undefined` for the OS's temp dir. (The filesystem backend's writers have a
   * local file: nothing is spooled there.)
   */
  readonly spoolDir: string | undefined;
  /** What this store is, for logs and `hubcache ls`: the driver and where its data is. */
  describe(): StorageDescription;
  /**
   * Makes this process the store's only writer until `release()`: `init` clears what a previous
   * owner left half-done, which would break another live owner's writes in progress. A filesystem
   * lock today (fs/store-lock.ts), a lease in a shared service for a shared backend. Throws
   * `StoreOwnedError` when another live process owns the store; may wait first for an owner whose
   * liveness can't be judged at once (see `OwnershipOptions.failFast`).
   */
  acquireOwnership(opts?: OwnershipOptions): Promise<Ownership>;
  /**
   * Prepares the store for serving, as its owner: creates what is missing and removes what a
   * previous owner left unfinished (temp files of a crash). Doesn't walk the stored content: what
   * the store holds (`BlobStore.usage`) is learnt in the background, and `usage` resolves once it
   * is known (with `undefined` for a backend that can't tell, or when the count failed or was
   * stopped by `close`).
   */
  init(): Promise<StorageReady>;
  /**
   * Writes a small probe right now and removes it: resolves when the store takes writes, rejects
   * with the write's error (ENOSPC, EROFS, … — see storage-fault.ts) when it doesn't. Drives the
   * degraded state (store-health.ts) and its recovery without a restart.
   */
  probeWrite(): Promise<void>;
  /**
   * Optional: the free and total bytes of the filesystem (or quota) the store lives on, for
   * `storage.minFreeSpace` and `hubcache_store_free_bytes`; `undefined` when it can't be told.
   */
  freeSpace?(): Promise<{ readonly freeBytes: number; readonly totalBytes: number } | undefined>;
  /**
   * Optional, for a store other processes write too (S3: several replicas): counts the usage again
   * now (`blobs.usage()` then includes their commits and deletes); rejects when it can't. A store
   * only this process writes doesn't need it.
   */
  refreshUsage?(): Promise<void>;
  /** Whether the stored content can be read (the volume is there): readiness. Never throws. */
  readable(): Promise<boolean>;
  /**
   * Stops background work (the usage count, the access record's periodic flush) and flushes the
   * access record; the stores must not be used afterwards. Idempotent.
   */
  close(): Promise<void>;
}

export interface StorageDescription {
  /** The `storage.driver` config value: `filesystem`. */
  readonly driver: string;
  /** Where the data is: an absolute path, a bucket URL. */
  readonly location: string;
}

export interface OwnershipOptions {
  /**
   * When the current owner's liveness can't be checked from here (another host, another PID
   * namespace) and its claim isn't stale yet: fail at once instead of waiting for it to lapse. For
   * callers that must not block (`prefetch`).
   */
  readonly failFast?: boolean;
  /** Ends a wait for ownership early (a signal while starting): rejects with the signal's reason. */
  readonly signal?: AbortSignal;
}

/** Ownership of a store, held until `release()` (idempotent, never throws). */
export interface Ownership {
  release(): Promise<void>;
}

export interface StorageReady {
  /** Unfinished writes of a previous owner that `init` removed. */
  readonly leftovers: number;
  /** Resolves when `blobs.usage()` becomes known; `undefined` when it won't be. Never rejects. */
  readonly usage: Promise<StoreUsage | undefined>;
}

/** The store is owned by another live process: one process writes a store at a time. */
export class StoreOwnedError extends Error {
  readonly code: string = 'STORE_OWNED';
}
