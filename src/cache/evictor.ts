import type { Digest } from '../domain/digest.js';
import { isIndexMediaType } from '../domain/media-types.js';
import type { RepoKey, Tag } from '../domain/reference.js';
import type { Logger } from '../lib/logger.js';
import type { MaintenanceLock } from './fill-coordinator.js';
import type { AccessRecord } from '../storage/access-record.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { ManifestStore, MetadataStore } from '../storage/manifest-store.js';
import { tagWindows } from '../storage/tag-listing.js';

/** Why something was evicted (the `reason` label of hubcache_evictions_total). */
export const EVICTION_REASONS = ['lru', 'retention', 'emergency', 'unreferenced'] as const;
export type EvictionReason = (typeof EVICTION_REASONS)[number];
/** What was evicted (the `kind` label). */
export const EVICTION_KINDS = ['blob', 'manifest', 'tag'] as const;
export type EvictionKind = (typeof EVICTION_KINDS)[number];

/** What the evictor reports (observability/metrics.ts implements it). */
export interface EvictionMetrics {
  evicted(kind: EvictionKind, reason: EvictionReason, bytes: number): void;
  evictionFailed(): void;
  /** A pass ended without errors, at `atMs`. */
  evictionSucceeded(atMs: number): void;
  /** The last access of the least recently used blob or manifest still stored (ms), when known. */
  oldestAccess(atMs: number | undefined): void;
  /** The filesystem's free bytes, when known, and the floor (storage.minFreeSpace) in bytes when one is set. */
  freeSpace(bytes: number | undefined, floorBytes?: number): void;
}

/** Free space to keep: bytes, or a percentage of the filesystem (config `storage.minFreeSpace`). */
export type FreeSpaceFloor = { readonly bytes: number } | { readonly percent: number };

export interface EvictorStorage {
  readonly blobs: BlobStore;
  readonly manifests: ManifestStore;
  readonly metadata: MetadataStore;
  readonly access: AccessRecord;
  freeSpace?(): Promise<{ readonly freeBytes: number; readonly totalBytes: number } | undefined>;
}

/** The configuration the eviction policy reads (`storage.*` and `cache.tagRetention`; config/schema.ts), structurally. */
export interface EvictionSettings {
  readonly storage: {
    readonly maxSize?: number | undefined;
    readonly minFreeSpace?: FreeSpaceFloor | undefined;
    readonly eviction: { readonly highWatermark: number; readonly lowWatermark: number; readonly concurrency: number };
  };
  readonly cache: { readonly tagRetention: number };
}

/** The policy part of `EvictorOptions` from the configuration: one mapping for `serve` and `hubcache gc`. */
export function evictionPolicy(config: EvictionSettings): Pick<EvictorOptions, 'maxBytes' | 'highWatermark' | 'lowWatermark' | 'minFreeSpace' | 'tagRetentionMs' | 'concurrency'> {
  const { storage } = config;
  return {
    ...(storage.maxSize !== undefined ? { maxBytes: storage.maxSize } : {}),
    highWatermark: storage.eviction.highWatermark,
    lowWatermark: storage.eviction.lowWatermark,
    ...(storage.minFreeSpace ? { minFreeSpace: storage.minFreeSpace } : {}),
    tagRetentionMs: config.cache.tagRetention,
    concurrency: storage.eviction.concurrency,
  };
}

export interface EvictorOptions {
  readonly storage: EvictorStorage;
  /** storage.maxSize (bytes of committed blobs); undefined: no cap. */
  readonly maxBytes?: number;
  /** Percent of maxBytes above which eviction starts / down to which it evicts. */
  readonly highWatermark: number;
  readonly lowWatermark: number;
  readonly minFreeSpace?: FreeSpaceFloor;
  /** cache.tagRetention (ms). */
  readonly tagRetentionMs: number;
  /** Deletions at once (storage.eviction.concurrency). */
  readonly concurrency: number;
  /**
   * Content that must never be evicted (pinned images, pushed content), by digest: blobs and
   * manifests, and the tags naming a protected manifest. Called during passes, so keep it cheap.
   */
  readonly isProtected?: (digest: Digest) => boolean;
  /**
   * Claims a blob for deletion: `undefined` while it is being downloaded or served (the cache's
   * fills and readers: PullThroughRegistry.claimForEviction), else a release to call afterwards.
   */
  readonly claimBlob?: (digest: Digest) => (() => void) | undefined;
  /** Ms since epoch; tests inject one (tag retention never depends on today's date). */
  readonly clock?: () => number;
  readonly logger: Logger;
  readonly metrics?: EvictionMetrics;
  /** Passes wait for it first (the pins known: what they protect can't be judged before). */
  readonly ready?: Promise<void>;
  /** Each item as a pass removes it (or, in a dry run, selects it): `hubcache gc`'s progress. */
  readonly onRemoved?: (item: EvictedItem) => void;
  /**
   * Garbage collection of content nothing references any more (hosted content after deletes,
   * hosted/hosted-gc.ts), run first in every `gc` pass and in automatic passes at most hourly.
   * Reports each item removed (reason `unreferenced`) through `record`; resolves with its failures.
   */
  readonly collectGarbage?: (opts: { readonly dryRun: boolean; readonly record: (item: EvictedItem) => void; readonly signal?: AbortSignal }) => Promise<{ readonly errors: number }>;
  /**
   * Several replicas (issue #15): the cluster's maintenance lock. A pass that deletes (not a dry
   * run) runs only while this replica holds it; when another replica holds it the pass is skipped
   * (`skipped: 'busy'`), when Redis can't be asked too (`skipped: 'unavailable'`): two replicas
   * deciding what to delete at once would each judge the store by its own view. Unset: every pass runs.
   */
  readonly lock?: MaintenanceLock;
  /**
   * Run before each pass (under the lock when it deletes; several replicas: the hosted content
   * other replicas pushed since this one counted, HostedContent.refreshFromStore). A failure skips
   * a pass that deletes (counted as an error): better nothing deleted than something protected.
   */
  readonly beforePass?: () => Promise<void>;
}

/** One thing a pass removed (or, in a dry run, would remove). */
export interface EvictedItem {
  readonly kind: EvictionKind;
  readonly reason: EvictionReason;
  readonly digest?: Digest;
  readonly upstream?: string;
  readonly repository?: string;
  readonly tag?: string;
  readonly bytes: number;
  /** Its last access (ms), or when it was stored if it was never served since the record exists. */
  readonly lastAccess?: number;
}

export interface PassOptions {
  /** Report what would be removed; remove nothing. */
  readonly dryRun?: boolean;
  /**
   * `auto`: retention when due, LRU when above the high watermark or below the free-space floor;
   * `gc`: retention, and LRU down to the low watermark whenever above it (hubcache gc);
   * `emergency`: a write failed for want of space: LRU down to the low watermark, or by a fixed
   * fraction of the store when there is no cap.
   */
  readonly mode?: 'auto' | 'gc' | 'emergency';
}

export interface PassReport {
  readonly mode: 'auto' | 'gc' | 'emergency';
  readonly dryRun: boolean;
  readonly removed: readonly EvictedItem[];
  readonly freedBytes: number;
  /** Committed blob bytes before and after (after: estimated in a dry run). */
  readonly storeBytesBefore?: number;
  readonly storeBytesAfter?: number;
  /** Deletions that failed (logged; the next pass tries again). */
  readonly errors: number;
  readonly ms: number;
  /**
   * Several replicas: the pass did not run because another replica holds the maintenance lock
   * (`busy`, `holder` names it) or Redis could not be asked (`unavailable`).
   */
  readonly skipped?: 'busy' | 'unavailable';
  readonly holder?: string;
}

/** Without a cap, an emergency pass frees this fraction of the store. */
export const EMERGENCY_FRACTION = 0.1;
/** Tag retention runs at most this often on its own (it walks every tag and reads every index). */
const RETENTION_EVERY_MS = 60 * 60_000;
/** Tag entries read at once where the store has no tag index (a file read each), and walked between two turns of the event loop. */
const TAG_READS_IN_FLIGHT = 64;
/**
 * A turn of the event loop between two windows of a tag walk: from the tag index a repository's
 * tags arrive at once and their last accesses are in memory, so without it a walk would hold the
 * loop for a whole repository (1000 tags; measured: p99 of a tag GET during the start's pass at 100k 1.74× → 1.27× of 1k).
 */
const betweenWindows = () => new Promise<void>((resolve) => setImmediate(resolve));

interface Candidate {
  readonly kind: 'blob' | 'manifest';
  readonly digest: Digest;
  readonly size: number;
  readonly at: number;
}

/** Tags and links of the whole store, built once per pass when a manifest is to be deleted. */
interface MetadataIndex {
  /** Tags by the manifest they name. */
  readonly tagsOf: Map<Digest, Array<{ key: RepoKey; tag: Tag; at: number }>>;
  /** Repositories linking each manifest. */
  readonly linksOf: Map<Digest, RepoKey[]>;
}

/**
 * The cache's eviction policy (issue #13): keeps the store under its cap and above its free-space
 * floor by removing the least recently accessed blobs and manifests (access-record.ts), expires
 * tags not pulled for `tagRetentionMs`, and heals a full disk. Storage only offers list, delete
 * and the access record; the choice of what goes is made here.
 *
 * Never evicted: a blob being downloaded or served (`claimBlob`), and whatever `isProtected`
 * says. Evicted content asked for again is fetched again like any miss.
 *
 * A manifest is removed in an order that leaves the store consistent if the process dies between
 * any two steps: its tags first (a tag naming a missing manifest would be fetched again anyway),
 * then its repository links (a link without a body is never used), then the body (a body without
 * links is just an orphan the next pass finds again). See docs/storage-layout.md.
 *
 * One pass at a time; passes run in the background with `concurrency` deletions at once.
 */
export class Evictor {
  readonly #o: EvictorOptions;
  readonly #clock: () => number;
  #running: Promise<PassReport> | undefined;
  #again = false;
  #timer: NodeJS.Timeout | undefined;
  #lastRetention = -Infinity;
  #lastGarbage = -Infinity;
  #stopped = false;

  constructor(opts: EvictorOptions) {
    if (!(opts.highWatermark > opts.lowWatermark)) throw new RangeError('highWatermark must be above lowWatermark');
    this.#o = opts;
    this.#clock = opts.clock ?? Date.now;
  }

  /** Whether a pass is running. */
  get running(): boolean {
    return this.#running !== undefined;
  }

  /**
   * Cheap (an in-memory read of the store's usage): starts a pass in the background when the store
   * is above the high watermark. Called after every commit.
   */
  check(): void {
    if (this.#stopped) return;
    if (!this.#aboveHigh()) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    void this.run({ mode: 'auto' }).catch(() => {});
  }

  /**
   * Resolves at once while the store is under its cap (or has none); over it, once an eviction
   * pass has brought it back under (the running one, or one started here). A download about to
   * start waits here (PullThroughRegistry's `admitFill`), so the store exceeds the cap by at most
   * the downloads already running. Never waits forever: when a pass frees nothing (everything
   * left is in use or protected), it lets the download through.
   */
  async waitForRoom(): Promise<void> {
    while (!this.#stopped && this.#overCap()) {
      const report = await this.run({ mode: 'auto' }).catch(() => undefined);
      if (!report || (report.freedBytes === 0 && this.#overCap())) return;
    }
  }

  #overCap(): boolean {
    const bytes = this.#o.storage.blobs.usage?.()?.bytes;
    return this.#o.maxBytes !== undefined && bytes !== undefined && bytes >= this.#o.maxBytes;
  }

  /**
   * Every `intervalMs`: reads the free space (gauge, floor), the oldest access (gauge) and runs an
   * automatic pass when one is due (cap, floor, retention).
   */
  start(intervalMs: number): void {
    if (this.#stopped) return;
    this.#timer ??= setInterval(() => void this.tick().catch(() => {}), intervalMs).unref();
    void this.tick().catch(() => {});
  }

  /** One timer tick (tests call it directly). Resolves when the pass it started, if any, is over. */
  async tick(): Promise<PassReport | undefined> {
    if (this.#stopped) return undefined;
    const free = await this.#freeSpace();
    const floor = this.#o.minFreeSpace;
    this.#o.metrics?.freeSpace(free?.freeBytes, floor && free ? ('bytes' in floor ? floor.bytes : Math.round((free.totalBytes * floor.percent) / 100)) : undefined);
    await this.#refreshOldest();
    // Several replicas: what another replica ran lately is not due here.
    if (this.#o.lock) {
      const cluster = await this.#o.lock.lastPasses();
      this.#lastRetention = Math.max(this.#lastRetention, cluster.retention ?? -Infinity);
      this.#lastGarbage = Math.max(this.#lastGarbage, cluster.garbage ?? -Infinity);
    }
    const retentionDue = this.#clock() - this.#lastRetention >= RETENTION_EVERY_MS;
    const garbageDue = this.#o.collectGarbage !== undefined && this.#clock() - this.#lastGarbage >= RETENTION_EVERY_MS;
    if (this.#running) return undefined;
    if (retentionDue || garbageDue || this.#aboveHigh() || this.#freeNeeded(free) > 0) return this.run({ mode: 'auto' });
    return undefined;
  }

  /** Stops the timer and waits for a running pass. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await this.#running?.catch(() => {});
  }

  /**
   * Runs one pass now (or joins the running one when `mode` is `auto`; others wait for it and then
   * run their own). Never rejects for a failed deletion: those are counted in `errors`.
   */
  async run(opts: PassOptions = {}): Promise<PassReport> {
    const mode = opts.mode ?? 'auto';
    while (this.#running) {
      if (mode === 'auto' && !opts.dryRun) return this.#running;
      await this.#running.catch(() => {});
    }
    const dryRun = opts.dryRun === true;
    const pass = this.#o.lock && !dryRun ? this.#locked(this.#o.lock, mode) : this.#o.beforePass && dryRun ? this.#o.beforePass().then(() => this.#pass(mode, dryRun)) : this.#pass(mode, dryRun);
    this.#running = pass;
    try {
      return await pass;
    } finally {
      this.#running = undefined;
      if (this.#again && !this.#stopped) {
        this.#again = false;
        this.check();
      }
    }
  }

  /** A pass that deletes, under the cluster's maintenance lock (or skipped without it). */
  async #locked(lock: MaintenanceLock, mode: 'auto' | 'gc' | 'emergency'): Promise<PassReport> {
    const claim = await lock.acquire();
    if (claim.kind !== 'held') {
      this.#o.logger.log(mode === 'auto' ? 'debug' : 'info', 'eviction pass skipped', claim.kind === 'busy' ? { mode, reason: 'another replica runs one', holder: claim.holder } : { mode, reason: claim.reason });
      return { mode, dryRun: false, removed: [], freedBytes: 0, errors: 0, ms: 0, skipped: claim.kind, ...(claim.kind === 'busy' ? { holder: claim.holder } : {}) };
    }
    try {
      if (this.#o.beforePass) {
        try {
          await this.#o.beforePass();
        } catch (err) {
          this.#o.metrics?.evictionFailed();
          this.#o.logger.warn('eviction failed', { kind: 'pass preparation', error: (err as Error).message });
          return { mode, dryRun: false, removed: [], freedBytes: 0, errors: 1, ms: 0 };
        }
      }
      return await this.#pass(mode, false, claim.signal);
    } finally {
      await claim.release();
    }
  }

  async #pass(mode: 'auto' | 'gc' | 'emergency', dryRun: boolean, signal?: AbortSignal): Promise<PassReport> {
    await this.#o.ready;
    const started = this.#clock();
    const t0 = performance.now();
    this.#o.logger.debug('eviction pass started', { mode, dryRun, storeBytes: this.#o.storage.blobs.usage?.()?.bytes });
    const removed: EvictedItem[] = [];
    const errors = { n: 0 };
    const before = this.#o.storage.blobs.usage?.()?.bytes;
    let freed = 0;
    let index: MetadataIndex | undefined;
    const getIndex = async () => (index ??= await this.#metadataIndex());
    const record = (item: EvictedItem) => {
      removed.push(item);
      this.#o.onRemoved?.(item);
      freed += item.bytes;
      if (!dryRun) this.#o.metrics?.evicted(item.kind, item.reason, item.bytes);
    };

    if (this.#o.collectGarbage && mode !== 'emergency' && (mode === 'gc' || started - this.#lastGarbage >= RETENTION_EVERY_MS)) {
      try {
        const gc = await this.#o.collectGarbage({ dryRun, record, ...(signal ? { signal } : {}) });
        errors.n += gc.errors;
        for (let i = 0; i < gc.errors; i++) this.#o.metrics?.evictionFailed();
      } catch (err) {
        errors.n++;
        this.#o.metrics?.evictionFailed();
        this.#o.logger.warn('eviction failed', { kind: 'garbage collection', error: (err as Error).message });
      }
      if (!dryRun) {
        this.#lastGarbage = started;
        await this.#o.lock?.recordPass('garbage', started);
      }
    }

    if (mode !== 'emergency' && (mode === 'gc' || started - this.#lastRetention >= RETENTION_EVERY_MS)) {
      if (!signal?.aborted && (await this.#anyTagExpired(started, signal))) await this.#retention(started, dryRun, await getIndex(), record, errors, signal);
      if (!dryRun) {
        this.#lastRetention = started;
        await this.#o.lock?.recordPass('retention', started);
      }
    }

    const free = await this.#freeSpace();
    const target = signal?.aborted ? undefined : await this.#target(mode, free);
    if (target !== undefined) {
      const { candidates, total } = await this.#candidates(started);
      // What to free, from the size when the pass began: commits made meanwhile are the next
      // pass's (check() runs again when this one ends).
      const toFree = (this.#o.storage.blobs.usage?.()?.bytes ?? total) - target;
      const reason: EvictionReason = mode === 'emergency' ? 'emergency' : 'lru';
      // At most `concurrency` deletions at once; the target is checked before each new one,
      // counting the bytes of those in progress as freed (`record` and the `finally` below run
      // in one step, so a blob is never counted twice or not at all).
      const active = new Set<Promise<void>>();
      // Blobs garbage collection removed before: already out of the usage `toFree` starts from.
      const collected = blobBytes(removed);
      let deleting = 0;
      let oldestKept: number | undefined;
      for (const c of candidates) {
        while (active.size >= this.#o.concurrency) await Promise.race(active);
        if (signal?.aborted) break; // the maintenance lock was lost: another replica may run a pass now
        if (blobBytes(removed) - collected + deleting >= toFree) {
          oldestKept = c.at;
          break;
        }
        if (this.#o.isProtected?.(c.digest)) continue;
        if (c.kind === 'blob') deleting += c.size;
        const job = (async () => {
          try {
            const item = c.kind === 'blob' ? await this.#deleteBlob(c, reason, dryRun) : await this.#deleteManifest(c.digest, c.size, c.at, reason, dryRun, await getIndex(), record);
            if (item) record(item);
          } catch (err) {
            errors.n++;
            this.#o.metrics?.evictionFailed();
            this.#o.logger.warn('eviction failed', { kind: c.kind, digest: c.digest, error: (err as Error).message });
          } finally {
            if (c.kind === 'blob') deleting -= c.size;
          }
        })();
        active.add(job);
        void job.finally(() => active.delete(job));
      }
      await Promise.all(active);
      if (!dryRun) this.#o.metrics?.oldestAccess(oldestKept ?? candidates.find((c) => !removed.some((r) => r.digest === c.digest))?.at);
    }
    const report: PassReport = {
      mode,
      dryRun,
      removed,
      freedBytes: freed,
      ...(before !== undefined ? { storeBytesBefore: before } : {}),
      ...(before !== undefined ? { storeBytesAfter: dryRun ? before - blobBytes(removed) : (this.#o.storage.blobs.usage?.()?.bytes ?? before - blobBytes(removed)) } : {}),
      errors: errors.n,
      ms: Math.round(performance.now() - t0),
    };
    if (!dryRun && errors.n === 0) this.#o.metrics?.evictionSucceeded(this.#clock());
    if (removed.length > 0 || errors.n > 0) {
      this.#o.logger.info(dryRun ? 'eviction pass (dry run)' : 'eviction pass', {
        mode,
        removed: removed.length,
        blobs: removed.filter((r) => r.kind === 'blob').length,
        manifests: removed.filter((r) => r.kind === 'manifest').length,
        tags: removed.filter((r) => r.kind === 'tag').length,
        freedBytes: freed,
        storeBytes: report.storeBytesAfter,
        errors: errors.n,
        ms: report.ms,
      });
    }
    return report;
  }

  #aboveHigh(): boolean {
    const { maxBytes, highWatermark } = this.#o;
    const bytes = this.#o.storage.blobs.usage?.()?.bytes;
    return maxBytes !== undefined && bytes !== undefined && bytes > (maxBytes * highWatermark) / 100;
  }

  async #freeSpace() {
    try {
      return await this.#o.storage.freeSpace?.();
    } catch {
      return undefined;
    }
  }

  /** Bytes to free for the free-space floor (0 when above it or not watched). */
  #freeNeeded(free: { freeBytes: number; totalBytes: number } | undefined): number {
    const floor = this.#o.minFreeSpace;
    if (!floor || !free) return 0;
    const floorBytes = 'bytes' in floor ? floor.bytes : (free.totalBytes * floor.percent) / 100;
    if (free.freeBytes >= floorBytes) return 0;
    // Hysteresis like the cap's: free the floor plus the watermarks' gap of it.
    return floorBytes * (1 + (this.#o.highWatermark - this.#o.lowWatermark) / 100) - free.freeBytes;
  }

  /** The store size (committed blob bytes) to evict down to, or undefined when nothing is to be evicted. */
  async #target(mode: 'auto' | 'gc' | 'emergency', free: { freeBytes: number; totalBytes: number } | undefined): Promise<number | undefined> {
    const { maxBytes, lowWatermark } = this.#o;
    const bytes = this.#o.storage.blobs.usage?.()?.bytes ?? (await this.#listedBytes());
    const targets: number[] = [];
    const low = maxBytes !== undefined ? (maxBytes * lowWatermark) / 100 : undefined;
    if (low !== undefined && (mode !== 'auto' || this.#aboveHigh()) && bytes > low) targets.push(low);
    const need = this.#freeNeeded(free);
    if (need > 0) targets.push(Math.max(0, bytes - need));
    if (mode === 'emergency' && low === undefined) targets.push(Math.floor(bytes * (1 - EMERGENCY_FRACTION)));
    return targets.length > 0 ? Math.min(...targets) : undefined;
  }

  async #listedBytes(): Promise<number> {
    let n = 0;
    for await (const b of this.#o.storage.blobs.list()) n += b.size;
    return n;
  }

  /**
   * Every blob and manifest with its last access, least recent first. Content never served since
   * the record exists counts from when it was stored (the file's mtime) where the backend knows
   * it, else from now: it is recorded so, and ages from this first scan on.
   */
  async #candidates(now: number): Promise<{ candidates: Candidate[]; total: number }> {
    const { blobs, manifests, access } = this.#o.storage;
    const out: Candidate[] = [];
    let total = 0;
    const lastOf = async (kind: 'blob' | 'manifest', digest: Digest, modifiedAt: number | undefined) => {
      const at = await access.lastAccess({ kind, digest });
      if (at !== undefined) return at;
      if (modifiedAt !== undefined) return modifiedAt;
      access.touch({ kind, digest }, now);
      return now;
    };
    for await (const b of blobs.list()) {
      total += b.size;
      out.push({ kind: 'blob', digest: b.digest, size: b.size, at: await lastOf('blob', b.digest, b.modifiedAt) });
    }
    for await (const m of manifests.list()) out.push({ kind: 'manifest', digest: m.digest, size: m.size, at: await lastOf('manifest', m.digest, m.modifiedAt) });
    out.sort((a, b) => a.at - b.at || (a.kind === b.kind ? 0 : a.kind === 'manifest' ? -1 : 1));
    return { candidates: out, total };
  }

  async #deleteBlob(c: Candidate, reason: EvictionReason, dryRun: boolean): Promise<EvictedItem | undefined> {
    const item: EvictedItem = { kind: 'blob', reason, digest: c.digest, bytes: c.size, lastAccess: c.at };
    if (dryRun) return item;
    const release = this.#o.claimBlob ? this.#o.claimBlob(c.digest) : () => {};
    if (!release) return undefined; // being downloaded or served: not now
    try {
      // Served since the pass listed it: no longer the least recently used.
      const at = await this.#o.storage.access.lastAccess({ kind: 'blob', digest: c.digest });
      if (at !== undefined && at > c.at) return undefined;
      await this.#o.storage.blobs.delete(c.digest);
      this.#o.storage.access.forget({ kind: 'blob', digest: c.digest });
      return item;
    } finally {
      release();
    }
  }

  /**
   * Removes a manifest and what points at it, in the crash-safe order: tags naming it, then the
   * repositories' links, then the body. The tags go into `record` as they are removed; the
   * manifest is returned.
   */
  async #deleteManifest(
    digest: Digest,
    size: number,
    at: number,
    reason: EvictionReason,
    dryRun: boolean,
    index: MetadataIndex,
    record: (item: EvictedItem) => void,
  ): Promise<EvictedItem | undefined> {
    const { metadata, manifests, access } = this.#o.storage;
    if (!dryRun) {
      const last = await access.lastAccess({ kind: 'manifest', digest });
      if (last !== undefined && last > at) return undefined; // served since the pass began
    }
    for (const t of index.tagsOf.get(digest) ?? []) {
      if (!dryRun) {
        // Only if it still names this manifest (it may have moved since the index was built).
        if ((await metadata.getTag(t.key, t.tag))?.digest !== digest) continue;
        await metadata.deleteTag(t.key, t.tag);
        access.forget({ kind: 'tag', key: t.key, tag: t.tag });
      }
      record({ kind: 'tag', reason, digest, upstream: t.key.upstream, repository: t.key.repo, tag: t.tag, bytes: 0, lastAccess: t.at });
    }
    index.tagsOf.delete(digest);
    if (!dryRun) {
      for (const key of index.linksOf.get(digest) ?? []) await metadata.unlinkManifest(key, digest);
      await manifests.delete(digest);
      access.forget({ kind: 'manifest', digest });
    }
    index.linksOf.delete(digest);
    return { kind: 'manifest', reason, digest, bytes: size, lastAccess: at };
  }

  /** Walks every repository once: its tags (with their last pull) and its manifest links. */
  async #metadataIndex(): Promise<MetadataIndex> {
    const { metadata } = this.#o.storage;
    const tagsOf = new Map<Digest, Array<{ key: RepoKey; tag: Tag; at: number }>>();
    const linksOf = new Map<Digest, RepoKey[]>();
    for await (const key of metadata.listRepositories()) {
      for await (const { tag, digest, at } of this.#tagsOf(key)) {
        let list = tagsOf.get(digest);
        if (!list) tagsOf.set(digest, (list = []));
        list.push({ key, tag, at });
      }
      for (const digest of await metadata.listManifests(key)) {
        let list = linksOf.get(digest);
        if (!list) linksOf.set(digest, (list = []));
        list.push(key);
      }
    }
    return { tagsOf, linksOf };
  }

  /**
   * Whether any tag is past retention: one walk of the tags, holding one repository's entries at a
   * time. Most passes find none and never build the whole store's index (`#metadataIndex`: ~40 MiB
   * of heap at 100k tags, issue #13); a pass that finds one walks the tags again to build it.
   */
  async #anyTagExpired(now: number, signal?: AbortSignal): Promise<boolean> {
    for await (const key of this.#o.storage.metadata.listRepositories()) {
      for await (const { digest, at } of this.#tagsOf(key, signal)) {
        if (now - at > this.#o.tagRetentionMs && !this.#o.isProtected?.(digest)) return true;
      }
    }
    return false;
  }

  /**
   * A repository's cached tags with what they name and their last access (else when upstream last
   * confirmed them): from the store's tag index where it keeps one (a read per repository, not per
   * tag), a turn of the event loop between windows; ends early when `signal` is aborted.
   */
  async *#tagsOf(key: RepoKey, signal?: AbortSignal): AsyncIterable<{ tag: Tag; digest: Digest; at: number }> {
    const { metadata, access } = this.#o.storage;
    for await (const [names, entries] of tagWindows(metadata, key, TAG_READS_IN_FLIGHT)) {
      if (signal?.aborted) return;
      await betweenWindows();
      for (let i = 0; i < names.length; i++) {
        const entry = entries[i];
        if (!entry) continue;
        const tag = names[i] as Tag;
        yield { tag, digest: entry.digest, at: (await access.lastAccess({ kind: 'tag', key, tag })) ?? entry.validatedAt };
      }
    }
  }

  /**
   * Tag retention: a tag not pulled for `tagRetentionMs` (last access, else when upstream last
   * confirmed it) is removed; its manifest goes with it unless another tag or a stored index still
   * references it, and so do an expired index's children that nothing else references.
   */
  async #retention(now: number, dryRun: boolean, index: MetadataIndex, record: (item: EvictedItem) => void, errors: { n: number }, signal?: AbortSignal): Promise<void> {
    const { metadata, manifests, access } = this.#o.storage;
    const expiredDigests = new Set<Digest>();
    for (const [digest, tags] of index.tagsOf) {
      if (this.#o.isProtected?.(digest)) continue;
      const keep: typeof tags = [];
      for (const t of tags) {
        if (now - t.at <= this.#o.tagRetentionMs || signal?.aborted) {
          keep.push(t);
          continue;
        }
        try {
          if (!dryRun) {
            if ((await metadata.getTag(t.key, t.tag))?.digest !== digest) continue;
            await metadata.deleteTag(t.key, t.tag);
            access.forget({ kind: 'tag', key: t.key, tag: t.tag });
          }
          record({ kind: 'tag', reason: 'retention', digest, upstream: t.key.upstream, repository: t.key.repo, tag: t.tag, bytes: 0, lastAccess: t.at });
          expiredDigests.add(digest);
        } catch (err) {
          errors.n++;
          this.#o.metrics?.evictionFailed();
          this.#o.logger.warn('eviction failed', { kind: 'tag', repository: t.key.repo, tag: t.tag, error: (err as Error).message });
        }
      }
      if (keep.length > 0) index.tagsOf.set(digest, keep);
      else index.tagsOf.delete(digest);
    }
    if (expiredDigests.size === 0) return;

    // Which manifests stored indexes reference (an index pulled by another tag keeps its children).
    const childrenOf = new Map<Digest, Digest[]>();
    for await (const m of manifests.list()) {
      const stored = await manifests.get(m.digest);
      if (!stored || !isIndexMediaType(stored.descriptor.mediaType)) continue;
      childrenOf.set(m.digest, indexChildren(stored.body));
    }
    const referenced = (digest: Digest) => index.tagsOf.has(digest) || [...childrenOf.values()].some((c) => c.includes(digest)) || this.#o.isProtected?.(digest) === true;

    const queue = [...expiredDigests];
    while (queue.length > 0 && !signal?.aborted) {
      const digest = queue.shift()!;
      if (referenced(digest)) continue;
      const stored = await manifests.get(digest);
      if (!stored) continue;
      try {
        const item = await this.#deleteManifest(digest, stored.body.length, (await access.lastAccess({ kind: 'manifest', digest })) ?? now, 'retention', dryRun, index, record);
        if (!item) continue;
        record(item);
        const children = childrenOf.get(digest) ?? [];
        childrenOf.delete(digest);
        queue.push(...children);
      } catch (err) {
        errors.n++;
        this.#o.metrics?.evictionFailed();
        this.#o.logger.warn('eviction failed', { kind: 'manifest', digest, error: (err as Error).message });
      }
    }
  }

  /** The least recent access among stored blobs and manifests in the record (the gauge between passes). */
  async #refreshOldest(): Promise<void> {
    if (!this.#o.metrics) return;
    let oldest: number | undefined;
    for await (const e of this.#o.storage.access.entries()) {
      if (e.subject.kind === 'tag') continue;
      if (oldest === undefined || e.at < oldest) oldest = e.at;
    }
    this.#o.metrics.oldestAccess(oldest);
  }
}

function blobBytes(items: readonly EvictedItem[]): number {
  let n = 0;
  for (const i of items) if (i.kind === 'blob') n += i.bytes;
  return n;
}

/** The digests an index (or manifest list) references; `[]` for anything unreadable. */
function indexChildren(body: Buffer): Digest[] {
  try {
    const doc = JSON.parse(body.toString('utf8')) as { manifests?: Array<{ digest?: unknown }> };
    return (doc.manifests ?? []).flatMap((m) => (typeof m.digest === 'string' ? [m.digest as Digest] : []));
  } catch {
    return [];
  }
}
