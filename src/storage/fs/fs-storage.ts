import { readdir, rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../lib/logger.js';
import type { BufferPool } from '../buffer-pool.js';
import type { StoreUsage } from '../blob-store.js';
import type { Ownership, OwnershipOptions, Storage, StorageDescription, StorageReady } from '../storage.js';
import { FsAccessRecord } from './fs-access-record.js';
import { FsBlobStore } from './fs-blob-store.js';
import { FsManifestStore, FsMetadataStore } from './fs-manifest-store.js';
import { ensureDir } from './fs-util.js';
import type { StorageLayout } from './layout.js';
import { acquireStoreLock } from './store-lock.js';

export interface FsStorageOptions {
  /** The storage root (layout.ts). */
  readonly root: string;
  /** `storage.lockStaleAfter`: when the ownership lock of a silent holder is taken over (store-lock.ts). */
  readonly lockStaleMs: number;
  /** Ownership events (a wait for the lock, a takeover, a lost lock) and a failed usage count are logged here. */
  readonly logger: Logger;
  /** See `FsBlobStoreOptions.readBuffers`. */
  readonly readBuffers?: BufferPool;
  /** How often the owner appends the access record's changes to access.log (storage.accessFlushInterval); default 10 s. */
  readonly accessFlushMs?: number;
  /** See `OpenStorageOptions.blockingReads`. */
  readonly blockingReads?: boolean;
}

/**
 * The `filesystem` storage driver: blobs, manifests and metadata under one root directory
 * (docs/storage-layout.md), owned through `hubcache.lock` (store-lock.ts).
 */
export class FsStorage implements Storage {
  readonly blobs: FsBlobStore;
  readonly manifests: FsManifestStore;
  readonly metadata: FsMetadataStore;
  readonly access: FsAccessRecord;
  readonly layout: StorageLayout;
  readonly #opts: FsStorageOptions;
  readonly #stop = new AbortController();
  #usage: Promise<StoreUsage | undefined> | undefined;
  #indexes: Promise<void> | undefined;
  #manifestRefs: Promise<void> | undefined;
  #flushTimer: NodeJS.Timeout | undefined;
  #closed: Promise<void> | undefined;

  constructor(opts: FsStorageOptions) {
    this.#opts = opts;
    const blockingReads = opts.blockingReads === true;
    this.blobs = new FsBlobStore({ root: opts.root, blockingReads, ...(opts.readBuffers ? { readBuffers: opts.readBuffers } : {}) });
    this.manifests = new FsManifestStore({ root: opts.root, blockingReads });
    this.metadata = new FsMetadataStore({ root: opts.root, blockingReads });
    this.layout = this.blobs.layout;
    this.access = new FsAccessRecord({ path: this.layout.accessLogPath, tempPath: () => this.layout.tempPath('access') });
  }

  /** tmp/: the store's disk, swept at start. (Its writers have a local file, so the cache spools nothing.) */
  get spoolDir(): string {
    return this.layout.tmpDir;
  }

  describe(): StorageDescription {
    return { driver: 'filesystem', location: this.layout.root };
  }

  /**
   * Takes `hubcache.lock` (see store-lock.ts for the protocol): throws `StoreLockedError` (a
   * `StoreOwnedError`) when a live process holds it; a holder on another host or in another PID
   * namespace is watched for up to `lockStaleMs` (logged once) unless `failFast`.
   */
  async acquireOwnership(opts: OwnershipOptions = {}): Promise<Ownership> {
    const { logger } = this.#opts;
    const lock = await acquireStoreLock({
      root: this.layout.root,
      staleMs: this.#opts.lockStaleMs,
      failFast: opts.failFast,
      signal: opts.signal,
      onWait: (w) =>
        logger.warn('storage lock held, waiting', {
          lock: w.lockPath,
          holder: w.holder ? { pid: w.holder.pid, hostname: w.holder.hostname, pidNamespace: w.holder.pidNamespace, startedAt: w.holder.startedAt } : 'unreadable lock file',
          lockAgeMs: Math.round(w.ageMs),
          maxWaitMs: w.maxWaitMs,
          why: 'its holder runs on another host or in another PID namespace, where its pid cannot be checked: waiting to see whether it refreshes the lock',
        }),
      onCompromised: (err) => logger.error('storage lock lost', { lock: err.lockPath, error: err.message, holder: err.holder }),
    });
    if (lock.takenOver) logger.warn('stale storage lock taken over', { lock: lock.path, reason: lock.takenOver.reason, previous: lock.takenOver.holder });
    return lock;
  }

  /**
   * Creates the directories, sweeps tmp/, starts counting the blobs and reading access.log in the
   * background, then checking the tag indexes, and starts flushing the access record every `accessFlushMs`.
   */
  async init(): Promise<StorageReady> {
    const leftovers = await this.blobs.init();
    await this.manifests.init();
    await this.metadata.init();
    void this.access.load().then(() => {
      if (this.access.loadError) this.#opts.logger.warn('access record unreadable, starting a new one', { path: this.layout.accessLogPath, error: this.access.loadError.message });
    });
    this.#flushTimer ??= setInterval(() => void this.#flushAccess(), this.#opts.accessFlushMs ?? 10_000).unref();
    this.#usage ??= this.blobs.countUsage(this.#stop.signal).then(
      (usage) => usage,
      (err: unknown) => {
        if (!this.#stop.signal.aborted) this.#opts.logger.warn('store usage count failed', { error: (err as Error).message });
        return undefined;
      },
    );
    // After the count (not competing with the start): tag indexes that can't be trusted (a store
    // written before them, a crash between a tag write and its index line) are rebuilt (tag-index.ts).
    this.#indexes ??= this.#usage.then(() =>
      this.metadata.maintainTagIndexes(this.#stop.signal).catch((err: unknown) => {
        if (!this.#stop.signal.aborted) this.#opts.logger.warn('tag index check failed', { error: (err as Error).message });
      }),
    );
    // Then the manifests' refs files (manifest-refs.ts): lines added for manifests stored without
    // one (a crash before the append, an older hubcache), lines of deleted manifests dropped.
    this.#manifestRefs ??= this.#indexes.then(() =>
      this.manifests.maintainRefs(this.#stop.signal).catch((err: unknown) => {
        if (!this.#stop.signal.aborted) this.#opts.logger.warn('manifest refs check failed', { error: (err as Error).message });
      }),
    );
    return { leftovers, usage: this.#usage };
  }

  /** Resolves when every repository's tag index was checked after `init` and the rebuilds it asked for are done. */
  async tagIndexesChecked(): Promise<void> {
    await this.#indexes;
    await this.metadata.tagIndexes.idle();
  }

  /** Resolves when every manifest partition's refs file was checked after `init` (and rewritten where needed). */
  async manifestRefsChecked(): Promise<void> {
    await this.#manifestRefs;
    await this.manifests.refsIdle();
  }

  /** Writes and removes a probe file in tmp/; rejects with the write's error. */
  async probeWrite(): Promise<void> {
    const probe = join(this.layout.tmpDir, `.ready-${process.pid}`);
    try {
      await ensureDir(this.layout.tmpDir);
      await writeFile(probe, 'ok');
    } finally {
      await rm(probe, { force: true }).catch(() => {});
    }
  }

  /** The committed blobs' directory can be listed. */
  async readable(): Promise<boolean> {
    try {
      await readdir(this.layout.blobsDir);
      return true;
    } catch {
      return false;
    }
  }

  /** The filesystem's free bytes (for an unprivileged process: `bavail`) and size, from statfs(2). */
  async freeSpace(): Promise<{ freeBytes: number; totalBytes: number } | undefined> {
    try {
      const st = await statfs(this.layout.root);
      return { freeBytes: st.bavail * st.bsize, totalBytes: st.blocks * st.bsize };
    } catch {
      return undefined;
    }
  }

  close(): Promise<void> {
    return (this.#closed ??= (async () => {
      this.#stop.abort(new Error('storage closed'));
      clearInterval(this.#flushTimer);
      await this.#usage;
      await this.#indexes;
      await this.metadata.tagIndexes.idle();
      await this.#manifestRefs;
      await this.manifests.refsIdle();
      if (this.#flushTimer) await this.#flushAccess();
    })());
  }

  /** A failed flush keeps its batch for the next one (a full disk: written once space returns). */
  async #flushAccess(): Promise<void> {
    await this.access.flush().catch((err: unknown) => this.#opts.logger.warn('access record flush failed', { path: this.layout.accessLogPath, error: (err as Error).message }));
  }
}
