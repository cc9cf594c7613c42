import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { LRUCache } from 'lru-cache';
import type { ByteRange } from '../domain/descriptor.js';
import { sha256Digest, type Digest } from '../domain/digest.js';
import { isRegistryError, RegistryError } from '../domain/errors.js';
import { referenceString, type Reference, type RepoKey, type Tag } from '../domain/reference.js';
import { TagList, type TagPageRequest } from '../domain/tag-list.js';
import type { Logger } from '../lib/logger.js';
import { SingleFlight } from '../lib/single-flight.js';
import type { AccessRecord } from '../storage/access-record.js';
import { isDirectBody, type BlobStore, type DirectBody } from '../storage/blob-store.js';
import { checkManifest } from '../storage/manifest-entry.js';
import { isStorageFault, storageFaultCause, toStorageError } from '../storage/storage-fault.js';
import type { StoreHealth } from '../storage/store-health.js';
import type { ManifestStore, MetadataStore, StoredManifest } from '../storage/manifest-store.js';
import type { TagEntry } from '../storage/tag-store.js';
import { UpstreamError, type Upstream, type UpstreamTagList } from '../upstream/upstream.js';
import { BlobFill, type AbandonedFillPolicy, type Schedule } from './blob-fill.js';
import { BlobLeases } from './blob-leases.js';
import { PeerUnavailableError, type FillClaim, type FillCoordinator, type FillLease, type FillSource, type FollowedFill, type TagCoordinator } from './fill-coordinator.js';
import type { CacheKind, CacheMetrics, StoreReadKind } from './cache-metrics.js';
import { verifiedBody } from './pass-through.js';
import { discardingStore, peerUpstream, RelayMetrics } from './peer-relay.js';
import { canServeStale, decideTag } from './cache-policy.js';
import { resolveRange, type BlobResult, type ManifestResult, type RangeSpec, type ReadOptions, type RegistryReader, type TagListResult } from './registry-reader.js';
import { SlotQueue } from './slot-queue.js';

/** A replica waiting for another one's GET of a cold tag polls the cluster's record this often, this many times at most. */
const TAG_PEER_POLL_MS = 50;
const TAG_PEER_POLLS = 200;

/** A Range this far beyond the bytes a fill has is fetched from upstream on its own. */
const DIRECT_RANGE_LEAD = 4 * 1024 * 1024;

/** The config schema's defaults (cache.maxConcurrentFills, cache.abandonedFills), for callers that set none. */
const DEFAULT_MAX_CONCURRENT_FILLS = 32;
const DEFAULT_ABANDONED_FILLS: AbandonedFillPolicy = { graceMs: 5_000, minProgressToFinish: 0.5, maxRemainingToFinish: 16 * 1024 * 1024 };
interface CachedTagList extends UpstreamTagList {
  readonly fetchedAt: number;
}

export interface PullThroughOptions {
  readonly blobs: BlobStore;
  readonly manifests: ManifestStore;
  readonly metadata: MetadataStore;
  /** Configured upstreams by registry name; requests were already routed to one of them. */
  readonly upstreams: ReadonlyMap<string, { readonly upstream: Upstream; readonly tagTtlMs: number }>;
  readonly fillTimeoutMs: number;
  readonly resumeAttempts: number;
  /** Blob downloads running at once, at most (cache.maxConcurrentFills); later ones queue, first come, first served. */
  readonly maxConcurrentFills?: number;
  /** What a download does once every client has gone (cache.abandonedFills). */
  readonly abandonedFills?: AbandonedFillPolicy;
  /**
   * A local directory for the spool files of fills whose store writer offers no local file
   * (cache/spool.ts; an object store): the storage's own scratch directory, else the OS's temp dir.
   */
  readonly spoolDir?: string;
  /** Timers of the abandoned-fill grace (tests drive them by hand). */
  readonly schedule?: Schedule;
  /** Memory for tag lists kept for their upstream's tag TTL (0: none). Default 64 MiB. */
  readonly tagListCacheBytes?: number;
  readonly logger: Logger;
  readonly metrics: CacheMetrics;
  readonly clock?: () => number;
  /**
   * Told of every storage fault (ENOSPC, EROFS, …) on a write; while it says the store is not
   * writable, a blob not cached is passed through from upstream (verified, not cached) instead of
   * starting a fill.
   */
  readonly storeHealth?: StoreHealth;
  /**
   * Told of every blob, manifest and tag served (hits, misses, stale answers): LRU eviction and tag
   * retention read it (evictor.ts). `touch` is synchronous and in memory: nothing is awaited.
   */
  readonly access?: AccessRecord;
  /**
   * Awaited by a blob download once it holds its download slot, before it asks upstream: resolves
   * at once unless the store is over its cap, then once eviction has made room
   * (Evictor.waitForRoom), so the store exceeds the cap by at most the downloads running.
   */
  readonly admitFill?: () => Promise<void>;
  /** A blob download was committed to the store (the evictor checks the cap: evictor.ts). */
  readonly onCommitted?: (digest: Digest, size: number) => void;
  /**
   * Whether the store holds `digest` for another reason than this cache: pushed to a hosted
   * repository (hosted/hosted-content.ts). Such a blob is served under a mirrored name only once
   * that name's upstream confirmed it has it (one HEAD, remembered), like a manifest known by
   * digest in another repository: otherwise anyone who learnt a private layer's digest could read
   * it through any mirrored name.
   */
  readonly heldForOthers?: (digest: Digest) => boolean;
  /**
   * Several replicas (issue #15): who downloads a blob for the whole cluster (fill-coordinator.ts).
   * Unset: this process decides alone (single-flight within the process only).
   */
  readonly coordinator?: FillCoordinator;
  /** Several replicas: one tag revalidation per TTL for the whole cluster (fill-coordinator.ts). */
  readonly tags?: TagCoordinator;
}

/** Rounds of claim → follow a peer that turns out gone → wait for its lease, before filling alone. */
const MAX_CLAIM_ROUNDS = 3;

/**
 * The pull-through cache: the same read interface as local storage, backed by the local stores and
 * the upstreams (docs/architecture.md#layers). Digests are served from the store with no upstream request; tags
 * follow the TTL policy; upstream outages are answered from the cache when a copy exists.
 */
export class PullThroughRegistry implements RegistryReader, FillSource {
  readonly #o: PullThroughOptions;
  readonly #clock: () => number;
  readonly #manifestFlights = new SingleFlight<string, ManifestResult>();
  readonly #fills = new Map<Digest, BlobFill>();
  /** Download slots: one per blob download running, shared by all upstreams (they share the disk, memory and link). */
  readonly #slots: SlotQueue;
  readonly #tagFlights = new SingleFlight<string, CachedTagList>();
  /** Whole tag lists by `<upstream>/<repo>`, bounded by their size; kept past their TTL for stale answers. */
  readonly #tagLists: LRUCache<string, CachedTagList> | undefined;
  /** Stored blobs being served: eviction leaves them alone (blob-leases.ts). */
  readonly #leases = new BlobLeases();
  /** `<upstream>/<repo>@<digest>` of held-for-others blobs their upstream confirmed (see `heldForOthers`). */
  // Bounded by `maxSize` (each entry counts 1), not `max`: lru-cache preallocates `max` slots at
  // construction, ~70 ms of the start for 100k (issue #13, start-to-ready); this way it grows as used.
  readonly #confirmedBlobs = new LRUCache<string, true>({ maxSize: 100_000, sizeCalculation: () => 1 });
  /** Cluster claims in flight: concurrent requests of this replica for one digest share one. */
  readonly #claims = new SingleFlight<Digest, FillClaim>();
  /**
   * Leases this replica took whose fill isn't registered yet (it looks at the store once more
   * first): the follow endpoint waits for them instead of answering 404 to a follower that came
   * quickly — which would then wait for the lease to go (up to its TTL) while the fill runs here.
   */
  readonly #starting = new Map<Digest, Promise<void>>();
  /** Relays of fills running on other replicas (peer-relay.ts): one peer stream per blob for this replica's requests. */
  readonly #relays = new Map<Digest, BlobFill>();
  readonly #relaySlots = new SlotQueue(1_000_000);

  constructor(opts: PullThroughOptions) {
    this.#o = opts;
    this.#clock = opts.clock ?? Date.now;
    this.#slots = new SlotQueue(opts.maxConcurrentFills ?? DEFAULT_MAX_CONCURRENT_FILLS);
    const tagListBytes = opts.tagListCacheBytes ?? 64 * 1024 * 1024;
    this.#tagLists = tagListBytes > 0 ? new LRUCache({ maxSize: tagListBytes, sizeCalculation: (l) => l.tags.byteLength + l.name.length + 64 }) : undefined;
  }

  /**
   * For eviction (evictor.ts): `undefined` while the blob is being downloaded or served, else a
   * release to call once it is deleted; requests for it wait for that, then fetch it again.
   */
  claimForEviction(digest: Digest): (() => void) | undefined {
    if (this.#fills.has(digest)) return undefined;
    return this.#leases.tryClaim(digest);
  }

  /** Blob downloads in progress or queued (graceful shutdown waits for them). */
  inFlightFills(): Promise<unknown>[] {
    return [...this.#fills.values()].map((f) => f.done.catch(() => {}));
  }

  /**
   * Shutdown: downloads still waiting for a slot are dropped (their clients get 503 UNAVAILABLE)
   * and no new download starts; the running ones go on (`inFlightFills`).
   */
  closeFillQueue(): void {
    this.#slots.close(new RegistryError('UNAVAILABLE', undefined, { message: 'hubcache is shutting down' }));
  }

  async getManifest(key: RepoKey, ref: Reference, opts: ReadOptions & { head?: boolean }): Promise<ManifestResult> {
    const flightKey = `${key.upstream}/${key.repo}@${referenceString(ref)}`;
    // A shared flight logs with the logger of the request that started it. It is the waiting
    // clients': when the last one has gone, its upstream requests are aborted (single-flight.ts).
    const log = opts.log ?? this.#o.logger;
    const { promise, joined } = this.#manifestFlights.run(
      flightKey,
      (signal) => (ref.kind === 'digest' ? this.#manifestByDigest(key, ref.digest, log, signal) : this.#manifestByTag(key, ref.tag, log, signal)),
      opts.signal,
    );
    if (joined) this.#o.metrics.joined(ref.kind === 'digest' ? 'manifest_digest' : 'manifest_tag');
    const result = await promise;
    const access = this.#o.access;
    if (access) {
      const now = this.#clock();
      access.touch({ kind: 'manifest', digest: result.descriptor.digest }, now);
      if (ref.kind === 'tag') access.touch({ kind: 'tag', key, tag: ref.tag }, now);
    }
    return result;
  }

  async #manifestByDigest(key: RepoKey, digest: Digest, log: Logger, signal: AbortSignal): Promise<ManifestResult> {
    const kind: CacheKind = 'manifest_digest';
    const stored = await this.#readOrMiss('manifest', { digest }, log, () => this.#o.manifests.get(digest));
    // Content is shared by digest, but a manifest is served for a repository only once that
    // repository's upstream confirmed it has it (credentials may differ per repository).
    if (stored && (await this.#readOrMiss('metadata', { digest, repository: key.repo }, log, () => this.#o.metadata.hasManifest(key, digest)))) {
      this.#o.metrics.cache(kind, 'hit');
      return { ...stored, outcome: 'hit' };
    }
    const upstream = this.#upstream(key);
    try {
      if (stored) {
        await upstream.headManifest(key.repo, { kind: 'digest', digest }, signal);
        await this.#unlessStoreFull(this.#o.metadata.linkManifest(key, digest));
        this.#o.metrics.cache(kind, 'revalidated');
        return { ...stored, outcome: 'revalidated' };
      }
      const fetched = await this.#fetchManifest(key, { kind: 'digest', digest }, signal);
      this.#o.metrics.cache(kind, 'miss');
      return { ...fetched, outcome: 'miss' };
    } catch (err) {
      throw this.#toRegistryError(err, 'MANIFEST_UNKNOWN');
    }
  }

  async #manifestByTag(key: RepoKey, tag: Tag, log: Logger, signal: AbortSignal): Promise<ManifestResult> {
    const kind: CacheKind = 'manifest_tag';
    const { upstream, tagTtlMs } = this.#upstreamEntry(key);
    const stored = await this.#readOrMiss('metadata', { repository: key.repo, tag }, log, () => this.#o.metadata.getTag(key, tag));
    // Several replicas: another one may have validated the tag since the store's record was read.
    const shared = stored && this.#o.tags ? await this.#o.tags.validated(key, tag) : undefined;
    const entry = shared && stored && shared.validatedAt > stored.validatedAt ? shared : stored;
    const local = entry ? await this.#readOrMiss('manifest', { digest: entry.digest }, log, () => this.#o.manifests.get(entry.digest)) : undefined;
    const decision = local ? decideTag(entry, this.#clock(), tagTtlMs) : 'fetch';
    if (decision === 'serve-local' && local) {
      this.#o.metrics.cache(kind, 'hit');
      return { ...local, outcome: 'hit' };
    }
    // Another replica is revalidating this tag right now: serve the copy at hand (one HEAD per TTL
    // for the cluster). Nothing at hand: another replica GETting it right now stores it for all, so
    // wait for its validation (one manifest GET for the cluster), or ask upstream once it gave up.
    const mine = this.#o.tags ? await this.#o.tags.claimRevalidation(key, tag) : 'alone';
    if (mine === false && local) {
      this.#o.metrics.cache(kind, 'hit');
      return { ...local, outcome: 'hit' };
    }
    if (mine === false) {
      const byPeer = await this.#tagFetchedByPeer(key, tag, log, signal);
      if (byPeer) {
        this.#o.metrics.cache(kind, 'hit');
        return { ...byPeer, outcome: 'hit' };
      }
    }
    const publish = (e: TagEntry) => (mine === true ? this.#o.tags!.publish(key, tag, e) : Promise.resolve());
    try {
      if (decision === 'revalidate' && local) {
        // A HEAD is free against Docker Hub's pull limit; GET only when the tag moved.
        const head = await upstream.headManifest(key.repo, { kind: 'tag', tag }, signal);
        if (head.digest === local.descriptor.digest) {
          const validated = { ...local.descriptor, validatedAt: this.#clock() };
          await publish(validated);
          await this.#unlessStoreFull(this.#o.metadata.setTag(key, tag, validated));
          this.#o.metrics.cache(kind, 'revalidated');
          return { ...local, outcome: 'revalidated' };
        }
        const moved = (await this.#readOrMiss('manifest', { digest: head.digest }, log, () => this.#o.manifests.get(head.digest))) ?? (await this.#fetchManifest(key, { kind: 'digest', digest: head.digest }, signal));
        await this.#unlessStoreFull(this.#o.metadata.linkManifest(key, moved.descriptor.digest));
        const validated = { ...moved.descriptor, validatedAt: this.#clock() };
        await publish(validated);
        await this.#unlessStoreFull(this.#o.metadata.setTag(key, tag, validated));
        this.#o.metrics.cache(kind, 'miss');
        return { ...moved, outcome: 'miss' };
      }
      const fetched = await this.#fetchManifest(key, { kind: 'tag', tag }, signal);
      const validated = { ...fetched.descriptor, validatedAt: this.#clock() };
      await this.#unlessStoreFull(this.#o.metadata.setTag(key, tag, validated));
      await publish(validated);
      this.#o.metrics.cache(kind, 'miss');
      return { ...fetched, outcome: 'miss' };
    } catch (err) {
      // Lets the lock go; the validation time stays.
      if (mine === true) void (entry ? this.#o.tags!.publish(key, tag, entry) : this.#o.tags!.releaseRevalidation(key, tag));
      if (local && err instanceof UpstreamError && canServeStale(err)) {
        this.#o.metrics.cache(kind, 'stale');
        log.warn('stale served', { upstream: key.upstream, repository: key.repo, tag, digest: local.descriptor.digest, reason: err.kind, error: err.message });
        return { ...local, outcome: 'stale', stale: { reason: err.kind } };
      }
      throw this.#toRegistryError(err, 'MANIFEST_UNKNOWN');
    }
  }

  /**
   * Another replica holds the tag's lock and there is no copy here: polls the cluster's record of
   * the tag while the lock lives, and answers the manifest it names once it is in the shared store
   * (linked to this repository). `undefined`: the lock went without a record (its upstream request
   * failed), the record's manifest is not in this store, or the wait ran out: ask upstream.
   */
  async #tagFetchedByPeer(key: RepoKey, tag: Tag, log: Logger, signal: AbortSignal): Promise<StoredManifest | undefined> {
    const tags = this.#o.tags!;
    for (let polls = 0; polls < TAG_PEER_POLLS && !signal.aborted; polls++) {
      const record = await tags.validated(key, tag);
      if (record) {
        const stored = await this.#readOrMiss('manifest', { digest: record.digest }, log, () => this.#o.manifests.get(record.digest));
        const linked = stored && (await this.#readOrMiss('metadata', { digest: record.digest, repository: key.repo }, log, () => this.#o.metadata.hasManifest(key, record.digest)));
        return linked ? stored : undefined;
      }
      // The holder let the lock go without a record: its GET failed; ours may not.
      const again = await tags.claimRevalidation(key, tag);
      if (again !== false) {
        if (again === true) await tags.releaseRevalidation(key, tag);
        return undefined;
      }
      await sleep(TAG_PEER_POLL_MS, undefined, { signal }).catch(() => {});
    }
    return undefined;
  }

  /**
   * GET from upstream, store byte-exact (verified by digest), link to the repository. When the
   * store can't take it (disk full, read-only: a storage fault), the manifest is verified here and
   * passed through, not cached.
   */
  async #fetchManifest(key: RepoKey, ref: Reference, signal: AbortSignal): Promise<StoredManifest> {
    const res = await this.#upstream(key).getManifest(key.repo, ref, signal);
    const expected = ref.kind === 'digest' ? ref.digest : res.descriptor.digest;
    this.#o.metrics.bytesFromUpstream(key.upstream, res.body.length);
    try {
      const descriptor = await this.#o.manifests.put(res.body, res.descriptor.mediaType, expected);
      await this.#o.metadata.linkManifest(key, descriptor.digest);
      return { descriptor, body: res.body };
    } catch (err) {
      if (!isStorageFault(err)) throw err;
      this.#o.storeHealth?.fault(err);
      const digest = sha256Digest(res.body);
      if (digest !== expected) throw new RegistryError('DIGEST_INVALID', { expected, actual: digest });
      checkManifest(res.body, res.descriptor.mediaType);
      this.#o.metrics.passThrough('manifest');
      this.#o.metrics.passThroughBytes('manifest', res.body.length);
      return { descriptor: { digest, size: res.body.length, mediaType: res.descriptor.mediaType }, body: res.body };
    }
  }

  /**
   * A read of the store that may fail with a storage fault (EIO, EACCES, …): logged with the errno
   * and path, counted, and answered `undefined` — a miss, so the request is served from upstream
   * (docs/errors.md#STORAGE_UNAVAILABLE). Any other error is thrown.
   */
  async #readOrMiss<T>(kind: StoreReadKind, what: Record<string, string>, log: Logger, read: () => Promise<T>): Promise<T | undefined> {
    try {
      return await read();
    } catch (err) {
      if (!isStorageFault(err)) throw err;
      this.#readFault(kind, err, what, log, 'served from upstream');
      return undefined;
    }
  }

  /** A read of the store failed with a storage fault: one log line (errno, path) and the counter. */
  #readFault(kind: StoreReadKind, err: unknown, what: Record<string, string>, log: Logger, then: 'served from upstream' | 'connection aborted'): void {
    const cause = storageFaultCause(err);
    this.#o.metrics.storeReadFault(kind);
    log.error('store read failed', { kind, ...what, errno: cause?.code, ...(cause?.path ? { path: cause.path } : {}), then, error: (err as Error).message });
  }

  /** A metadata write that may be skipped: a storage fault is reported (storeHealth), not thrown. */
  async #unlessStoreFull(write: Promise<void>): Promise<void> {
    try {
      await write;
    } catch (err) {
      if (!isStorageFault(err)) throw err;
      this.#o.storeHealth?.fault(err);
    }
  }

  async getBlob(key: RepoKey, digest: Digest, opts: ReadOptions & { head?: boolean; range?: RangeSpec }): Promise<BlobResult> {
    // Held from the lookup until the body closes: eviction never deletes a blob being served.
    const lease = this.#leases.acquire(digest);
    const release = typeof lease === 'function' ? lease : await lease;
    try {
      const result = await this.#getBlob(key, digest, opts);
      this.#o.access?.touch({ kind: 'blob', digest }, this.#clock());
      if (result.body && !result.body.destroyed) {
        result.body.once('close', release);
        return result;
      }
      release();
      return result;
    } catch (err) {
      release();
      throw err;
    }
  }

  /** A stored blob that isn't the cache's: served for `key` once its upstream says it has it too (one HEAD per repository, remembered). */
  async #confirmUpstreamHas(key: RepoKey, digest: Digest, signal: AbortSignal): Promise<void> {
    const id = `${key.upstream}/${key.repo}@${digest}`;
    if (this.#confirmedBlobs.has(id)) return;
    try {
      await this.#upstream(key).headBlob(key.repo, digest, signal);
    } catch (err) {
      throw this.#toRegistryError(err, 'BLOB_UNKNOWN');
    }
    this.#confirmedBlobs.set(id, true);
  }

  async #getBlob(key: RepoKey, digest: Digest, opts: ReadOptions & { head?: boolean; range?: RangeSpec }): Promise<BlobResult> {
    const kind: CacheKind = 'blob';
    const log = opts.log ?? this.#o.logger;
    try {
      const local = await this.#o.blobs.stat(digest);
      if (local && this.#o.heldForOthers?.(digest)) await this.#confirmUpstreamHas(key, digest, opts.signal);
      if (local) {
        try {
          return await this.#serveStored(digest, local.size, opts);
        } catch (err) {
          // Gone between stat and open (evicted, or removed by hand): a miss like any other.
          if (!(isRegistryError(err) && err.code === 'BLOB_UNKNOWN')) throw err;
        }
      }
    } catch (err) {
      if (!isStorageFault(err)) throw err;
      // The stored copy can't be read (a failing disk, permissions): the client gets the blob from
      // upstream, verified. Not refilled: the store would keep its unreadable copy (content addressing).
      this.#readFault('blob', err, { digest }, log, 'served from upstream');
      try {
        return await this.#passThroughBlob(key, digest, opts, 'unreadable');
      } catch (upstreamErr) {
        if (opts.signal.aborted) throw upstreamErr;
        // Neither copy can be had: the cause is the store (the documented 503), the upstream's answer in the detail.
        throw new RegistryError('STORAGE_UNAVAILABLE', { errno: storageFaultCause(err)?.code, upstream: (upstreamErr as Error).message }, { cause: err, message: 'the stored copy of this blob cannot be read, and the upstream could not serve it' });
      }
    }
    let inFlight = this.#fills.get(digest);
    if (inFlight?.verified) {
      // Every byte is here and verified; the store is making it durable and visible (fsync,
      // rename: milliseconds). Wait for that and answer from the store, like any hit.
      const committed = await inFlight.done.then((info) => info, () => undefined);
      if (committed) return this.#serveStored(digest, committed.size, opts);
      inFlight = this.#fills.get(digest); // the commit failed: start over below
    }
    const joinable = inFlight?.followable ? inFlight : undefined;
    if (!joinable && !opts.head && this.#o.storeHealth && !(await this.#o.storeHealth.writableNow())) {
      // Nothing to write a download to: the client gets the blob from upstream, verified, not cached.
      return this.#passThroughBlob(key, digest, opts, 'degraded');
    }
    if (opts.head && (!joinable || joinable.queued)) {
      // A HEAD of a missing blob asks upstream without downloading (nothing to cache yet): it never
      // starts a download, nor waits in the download queue behind one.
      try {
        const { size } = await this.#upstream(key).headBlob(key.repo, digest, opts.signal);
        this.#o.metrics.cache(kind, 'miss');
        return { digest, size, range: this.#range(opts.range, size), source: 'upstream' };
      } catch (err) {
        throw this.#toRegistryError(err, 'BLOB_UNKNOWN');
      }
    }
    let fill = joinable;
    if (fill) {
      this.#o.metrics.joined(kind);
    } else {
      const claimed = await this.#claimFill(key, digest, opts);
      if ('result' in claimed) return claimed.result;
      fill = claimed.fill;
    }
    this.#o.metrics.cache(kind, 'miss');
    // This request counts as a client of the fill until it has its reader (which counts itself) or
    // leaves: a fill whose clients have all gone may be dropped or cancelled (BlobFill).
    const leave = fill.attach();
    try {
      let size: number;
      try {
        size = await whileClientWaits(fill.ready, opts.signal);
      } catch (err) {
        if (isStorageFault(err)) {
          // The fill couldn't create its temp file (a full or read-only store): pass-through instead.
          this.#o.storeHealth?.fault(err);
          return await this.#passThroughBlob(key, digest, opts, 'store failed');
        }
        throw this.#toRegistryError(err, 'BLOB_UNKNOWN');
      }
      const range = this.#range(opts.range, size);
      if (opts.head) return { digest, size, range, source: 'upstream' };
      // The fill lost its store while we waited: its readers go on, new ones pass through on their own.
      if (fill.passing) return await this.#passThroughBlob(key, digest, opts, 'store failed');
      if (!fill.followable) {
        // Committed and released between our checks: the store has it now (or the fill failed).
        const failed = await fill.done.then(() => undefined, (err: unknown) => err);
        if (failed !== undefined) {
          if (isStorageFault(failed)) return await this.#passThroughBlob(key, digest, opts, 'store failed');
          throw this.#toRegistryError(failed, 'BLOB_UNKNOWN');
        }
        return { digest, size, range, body: await this.#o.blobs.open(digest, { range, signal: opts.signal }), source: 'cache' };
      }
      if (range && range.start > fill.received + DIRECT_RANGE_LEAD) {
        // Far ahead of the download: ask upstream for just these bytes rather than wait for the fill
        // to get there. The fill goes on; the bytes of a range can't be verified by anyone.
        return { digest, size, range, body: await this.#upstreamRange(key, digest, range, opts.signal), source: 'upstream' };
      }
      const body = fill.createReader(range);
      const f = fill;
      // A response that ends with the blob's last byte waited for the fill's tail: report it.
      return { digest, size, range, body, source: 'upstream', ...(!range || range.end === size - 1 ? { delivered: () => f.delivered() } : {}) };
    } finally {
      leave();
    }
  }

  /**
   * Fetches a blob ahead of demand (pins, cache/pins.ts): nothing when the store has it, else the
   * blob's fill is joined or started — the same single-flight, download slot, verification and
   * commit as a client's miss — and awaited until the blob is committed. Not a lookup: counted in
   * the fill metrics only. A degraded store refuses (`STORAGE_UNAVAILABLE`) before downloading.
   * `opts.signal` stops waiting; the fill then counts one client fewer (cache.abandonedFills).
   */
  async warmBlob(key: RepoKey, digest: Digest, opts: ReadOptions): Promise<'stored' | 'fetched'> {
    if (await this.#o.blobs.stat(digest)) return 'stored';
    const inFlight = this.#fills.get(digest);
    let fill = inFlight && (inFlight.followable || inFlight.verified) ? inFlight : undefined;
    if (!fill) {
      if (this.#o.storeHealth && !(await this.#o.storeHealth.writableNow())) {
        throw new RegistryError('STORAGE_UNAVAILABLE', undefined, { message: 'the cache store is full or cannot be written: blobs not cached yet cannot be fetched' });
      }
      fill = this.#startFill(key, digest, opts.log ?? this.#o.logger);
    }
    const leave = fill.attach();
    try {
      await whileClientWaits(fill.done, opts.signal);
      return 'fetched';
    } catch (err) {
      throw this.#toRegistryError(err, 'BLOB_UNKNOWN');
    } finally {
      leave();
    }
  }

  async #serveStored(digest: Digest, size: number, opts: { range?: RangeSpec; head?: boolean; signal: AbortSignal; log?: Logger }): Promise<BlobResult> {
    const range = this.#range(opts.range, size);
    const body = opts.head ? undefined : await this.#o.blobs.open(digest, { range, signal: opts.signal });
    this.#o.metrics.cache('blob', 'hit');
    return { digest, size, range, body: body && this.#watchReads(body, digest, opts.log ?? this.#o.logger), source: 'cache' };
  }

  /**
   * A stored blob's body whose read fails with a storage fault once the response started: the
   * HTTP layer aborts the connection (the client retries); here it is logged once, with the errno
   * and the path when the error has one, and counted.
   */
  #watchReads(body: Readable, digest: Digest, log: Logger): Readable {
    let reported = false;
    const report = (err: unknown) => {
      if (reported || !isStorageFault(err)) return;
      reported = true;
      this.#readFault('blob', err, { digest }, log, 'connection aborted');
    };
    body.once('error', report);
    if (isDirectBody(body)) {
      const writeTo = body.writeTo.bind(body);
      (body as Readable & DirectBody).writeTo = (dest, onBytes) =>
        writeTo(dest, onBytes).catch((err: unknown) => {
          report(err);
          throw err;
        });
    }
    return body;
  }

  /**
   * A blob served from upstream without the store (docs/architecture.md#pass-through-when-the-store-cant-write):
   * the store is degraded, the fill couldn't write, or the stored copy can't be read. A whole blob
   * is verified as it streams (the last byte waits for the digest); a Range is fetched as a Range,
   * like a range far ahead of a fill, and can't be verified. Each client gets its own upstream
   * request — there is nowhere to spool a shared one — holding one of the download slots
   * (cache.maxConcurrentFills) until its body ends: that bounds them.
   */
  async #passThroughBlob(key: RepoKey, digest: Digest, opts: ReadOptions & { head?: boolean; range?: RangeSpec }, why: 'degraded' | 'store failed' | 'unreadable'): Promise<BlobResult> {
    const upstream = this.#upstream(key);
    const log = opts.log ?? this.#o.logger;
    if (opts.head) {
      try {
        const { size } = await upstream.headBlob(key.repo, digest, opts.signal);
        return { digest, size, range: this.#range(opts.range, size), source: 'upstream' };
      } catch (err) {
        throw this.#toRegistryError(err, 'BLOB_UNKNOWN');
      }
    }
    const slot = this.#slots.tryAcquire() ?? (await this.#slots.acquire(opts.signal));
    let owned = true;
    try {
      const signal = AbortSignal.any([opts.signal, AbortSignal.timeout(this.#o.fillTimeoutMs)]);
      if (opts.range) {
        let size: number;
        try {
          size = (await upstream.headBlob(key.repo, digest, signal)).size;
        } catch (err) {
          throw this.#toRegistryError(err, 'BLOB_UNKNOWN');
        }
        const range = this.#range(opts.range, size);
        if (range) {
          const body = await this.#upstreamRange(key, digest, range, signal, (n) => {
            this.#o.metrics.bytesFromUpstream(key.upstream, n);
            this.#o.metrics.passThroughBytes('blob_range', n);
          });
          body.once('close', () => slot.release());
          owned = false;
          this.#o.metrics.passThrough('blob_range');
          return { digest, size, range, body, source: 'upstream' };
        }
      }
      let res;
      try {
        res = await upstream.getBlob(key.repo, digest, { signal });
      } catch (err) {
        throw this.#toRegistryError(err, 'BLOB_UNKNOWN');
      }
      const started = Date.now();
      let sent = 0;
      const body = verifiedBody(res.body, {
        digest,
        size: res.size,
        onBytes: (n) => {
          sent += n;
          this.#o.metrics.bytesFromUpstream(key.upstream, n);
          this.#o.metrics.passThroughBytes('blob', n);
        },
        onEnd: (err) => {
          slot.release();
          if (!err) log.info('blob passed through, not cached', { digest, reason: why, bytes: sent, ms: Date.now() - started });
          else if (opts.signal.aborted) log.debug('blob pass-through ended early: the client left', { digest, sent });
          else log.warn('blob pass-through aborted', { digest, reason: why, sent, expected: res.size, error: err.message });
        },
      });
      owned = false;
      this.#o.metrics.passThrough('blob');
      return { digest, size: res.size, body, source: 'upstream' };
    } finally {
      if (owned) slot.release();
    }
  }

  async #upstreamRange(key: RepoKey, digest: Digest, range: ByteRange, signal: AbortSignal, onBytes?: (n: number) => void): Promise<Readable> {
    try {
      const res = await this.#upstream(key).getBlob(key.repo, digest, { offset: range.start, signal });
      return Readable.from(takeBytes(res.body, range.end - range.start + 1, onBytes), { objectMode: false });
    } catch (err) {
      throw this.#toRegistryError(err, 'BLOB_UNKNOWN');
    }
  }

  /**
   * A miss with no fill here: who downloads it for the cluster (docs/architecture.md#several-replicas).
   * This replica (a lease: fill, holding it), another one (stream its fill in flight, verified here;
   * when it can't be reached or its fill ended, read the store, else wait for its lease to go and
   * claim again), or nobody can tell (Redis down: fill alone). Bounded: after MAX_CLAIM_ROUNDS it
   * fills alone. Without a coordinator, a fill starts at once.
   */
  async #claimFill(key: RepoKey, digest: Digest, opts: ReadOptions & { range?: RangeSpec }): Promise<{ fill: BlobFill } | { result: BlobResult }> {
    const coord = this.#o.coordinator;
    const log = opts.log ?? this.#o.logger;
    if (!coord) return { fill: this.#startFill(key, digest, log) };
    for (let round = 1; ; round++) {
      const claim = await whileClientWaits(this.#claims.do(digest, () => coord.claim(digest)), opts.signal);
      // Another request of this replica took the same claim and started the fill meanwhile: join it.
      const here = this.#fills.get(digest);
      if (here?.followable) {
        this.#o.metrics.joined('blob');
        return { fill: here };
      }
      if (claim.kind === 'alone') return { fill: this.#startFill(key, digest, log) };
      if (claim.kind === 'lease') {
        if (!claim.lease.take()) continue; // taken by a request whose fill already ended: claim afresh
        let started!: () => void;
        this.#starting.set(digest, new Promise<void>((resolve) => (started = resolve)));
        try {
          // Committed by another replica between our lookup and the claim: serve it, download nothing.
          const stored = await this.#o.blobs.stat(digest).catch(() => undefined);
          if (stored) {
            await claim.lease.release();
            return { result: await this.#serveStored(digest, stored.size, opts) };
          }
          return { fill: this.#startFill(key, digest, log, claim.lease) };
        } finally {
          this.#starting.delete(digest);
          started();
        }
      }
      try {
        return { result: await this.#relayed(key, digest, claim, opts) };
      } catch (err) {
        if (!(err instanceof PeerUnavailableError)) throw err;
        // Its fill ended (committed: the store has it) or the replica is gone (its lease expires).
        const stored = await this.#o.blobs.stat(digest).catch(() => undefined);
        if (stored) return { result: await this.#serveStored(digest, stored.size, opts) };
        if (round >= MAX_CLAIM_ROUNDS) {
          log.warn('cluster fill not followable: downloading alone', { digest, holder: claim.holder, error: err.message });
          return { fill: this.#startFill(key, digest, log) };
        }
        log.info('peer unavailable: waiting for its lease', { digest, holder: claim.holder, peer: claim.url, error: err.message, ttlMs: claim.ttlMs });
        await coord.waitForRelease(digest, claim.ttlMs, opts.signal);
        opts.signal.throwIfAborted();
      }
    }
  }

  /**
   * A blob another replica is downloading, streamed from it through this replica's relay of that
   * fill (peer-relay.ts: one peer stream per blob, verified once, shared by this replica's
   * requests like a local fill). Rejects with `PeerUnavailableError` when the peer can't stream it.
   */
  async #relayed(key: RepoKey, digest: Digest, claim: { holder: string; url: string }, opts: ReadOptions & { range?: RangeSpec }): Promise<BlobResult> {
    const coord = this.#o.coordinator!;
    const log = opts.log ?? this.#o.logger;
    let relay = this.#relays.get(digest);
    if (relay?.followable) this.#o.metrics.joined('blob');
    else {
      const fill = new BlobFill({
        key,
        digest,
        upstream: peerUpstream(key.upstream, (signal) => coord.follow(claim.url, digest, signal)),
        store: discardingStore(),
        timeoutMs: this.#o.fillTimeoutMs,
        resumeAttempts: 0,
        slots: this.#relaySlots,
        abandoned: this.#o.abandonedFills ?? DEFAULT_ABANDONED_FILLS,
        spoolDir: this.#o.spoolDir ?? tmpdir(),
        ...(this.#o.schedule ? { schedule: this.#o.schedule } : {}),
        logger: log.child({ relayOf: claim.holder, peer: claim.url }),
        metrics: new RelayMetrics(this.#o.metrics),
      });
      relay = fill;
      this.#relays.set(digest, fill);
      const forget = () => {
        if (this.#relays.get(digest) === fill) this.#relays.delete(digest);
      };
      fill.done.then(forget, forget);
    }
    const leave = relay.attach();
    try {
      const size = await whileClientWaits(relay.ready, opts.signal);
      const range = this.#range(opts.range, size);
      if (!relay.followable) throw new PeerUnavailableError('the relay of the peer fill ended');
      this.#o.metrics.cache('blob', 'miss');
      return { digest, size, range, body: relay.createReader(range), source: 'upstream' };
    } finally {
      leave();
    }
  }

  /**
   * The follow endpoint's read (cluster/peer-server.ts): a reader of the whole blob from the fill
   * running here, once upstream answered; `undefined` when there is none to follow.
   */
  async followFill(digest: Digest, signal: AbortSignal): Promise<FollowedFill | undefined> {
    const starting = this.#starting.get(digest);
    // This replica holds the lease and is about to start the fill (one store lookup away).
    if (!this.#fills.has(digest) && starting) await whileClientWaits(starting, signal).catch(() => {});
    const fill = this.#fills.get(digest);
    if (!fill?.followable) return undefined;
    const leave = fill.attach();
    this.#o.metrics.joined('blob');
    try {
      const size = await whileClientWaits(fill.ready, signal);
      if (!fill.followable) return undefined;
      return { size, body: fill.createReader() };
    } catch {
      return undefined;
    } finally {
      leave();
    }
  }

  /**
   * Holds a cluster lease for the fill's life: renewed every third of its TTL while the download
   * moves (or waits for its slot or upstream's answer), released when it ends. A replica that
   * dies renews nothing: the lease expires and the next request anywhere starts a new fill.
   */
  #holdLease(fill: BlobFill, lease: FillLease, log: Logger): void {
    let seen = -1;
    const timer = setInterval(() => {
      const moving = fill.received !== seen || fill.queued || fill.size < 0;
      seen = fill.received;
      if (!moving) return;
      void lease.renew().then((held) => held || log.warn('fill lease lost: another replica may download this blob too', { digest: fill.digest }));
    }, Math.max(50, Math.floor(lease.ttlMs / 3)));
    timer.unref();
    const end = () => {
      clearInterval(timer);
      void lease.release();
    };
    fill.done.then(end, end);
  }

  /** `log` is the starting request's logger: the fill is the cache's, but its events name who started it. */
  #startFill(key: RepoKey, digest: Digest, log: Logger, lease?: FillLease): BlobFill {
    const fill = new BlobFill({
      key,
      digest,
      upstream: this.#upstream(key),
      store: this.#o.blobs,
      timeoutMs: this.#o.fillTimeoutMs,
      resumeAttempts: this.#o.resumeAttempts,
      slots: this.#slots,
      abandoned: this.#o.abandonedFills ?? DEFAULT_ABANDONED_FILLS,
      spoolDir: this.#o.spoolDir ?? tmpdir(),
      ...(this.#o.admitFill ? { beforeDownload: this.#o.admitFill } : {}),
      ...(this.#o.schedule ? { schedule: this.#o.schedule } : {}),
      logger: log,
      metrics: this.#o.metrics,
      onStorageFault: (err) => this.#o.storeHealth?.fault(err),
    });
    this.#fills.set(digest, fill);
    if (lease) this.#holdLease(fill, lease, log);
    const forget = () => {
      if (this.#fills.get(digest) === fill) this.#fills.delete(digest);
    };
    fill.done.then((info) => {
      forget();
      this.#o.onCommitted?.(digest, info.size);
    }, (err: unknown) => {
      forget();
      // A write that failed for want of space (or a broken volume) degrades the store.
      this.#o.storeHealth?.fault(err);
    });
    return fill;
  }

  #range(spec: RangeSpec | undefined, size: number) {
    return resolveRange(spec, size);
  }

  /**
   * A page of a repository's tags. The whole list is fetched once per tag TTL and every page is
   * served from that copy: concurrent requests share one upstream fetch (abandoned, like a
   * manifest flight, when all of them have gone), and the list is kept within
   * `tagListCacheBytes`. When the upstream can't be asked, the last list fetched is served, or
   * failing that the tags this cache knows.
   */
  async listTags(key: RepoKey, page: TagPageRequest, opts: ReadOptions): Promise<TagListResult> {
    const { upstream, tagTtlMs } = this.#upstreamEntry(key);
    const id = `${key.upstream}/${key.repo}`;
    const cached = this.#tagLists?.get(id);
    if (cached && this.#clock() - cached.fetchedAt < tagTtlMs) return { name: cached.name, ...cached.tags.page(page) };
    try {
      const { promise, joined } = this.#tagFlights.run(
        id,
        async (signal) => {
          const list = { ...(await upstream.listTags(key.repo, signal)), fetchedAt: this.#clock() };
          this.#tagLists?.set(id, list);
          return list;
        },
        opts.signal,
      );
      if (joined) (opts.log ?? this.#o.logger).debug('tag list fetch joined', { upstream: key.upstream, repository: key.repo });
      const fetched = await promise;
      return { name: fetched.name, ...fetched.tags.page(page) };
    } catch (err) {
      if (err instanceof UpstreamError && canServeStale(err)) {
        const tags = cached?.tags ?? TagList.of((await this.#readOrMiss('metadata', { repository: key.repo, what: 'tags' }, opts.log ?? this.#o.logger, () => this.#o.metadata.listTags(key))) ?? []);
        if (tags.size === 0) throw this.#toRegistryError(err, 'NAME_UNKNOWN');
        (opts.log ?? this.#o.logger).warn('stale served', { upstream: key.upstream, repository: key.repo, what: 'tags', reason: err.kind });
        return { name: cached?.name ?? key.repo, ...tags.page(page), stale: { reason: err.kind } };
      }
      throw this.#toRegistryError(err, 'NAME_UNKNOWN');
    }
  }

  #upstreamEntry(key: RepoKey) {
    const entry = this.#o.upstreams.get(key.upstream);
    if (!entry) throw new RegistryError('UPSTREAM_UNKNOWN', { registry: key.upstream });
    return entry;
  }

  #upstream(key: RepoKey): Upstream {
    return this.#upstreamEntry(key).upstream;
  }

  /** Upstream failures → OCI codes (the one place that decides it; the HTTP layer maps codes to statuses). */
  #toRegistryError(err: unknown, notFound: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN' | 'NAME_UNKNOWN'): Error {
    if (isStorageFault(err)) {
      this.#o.storeHealth?.fault(err);
      return toStorageError(err) as Error;
    }
    if (!(err instanceof UpstreamError)) return err as Error;
    const detail = { upstream: err.message, ...(err.upstreamErrors ? { errors: err.upstreamErrors } : {}) };
    switch (err.kind) {
      case 'not-found':
        return new RegistryError(notFound, detail, { cause: err });
      case 'rate-limited':
        return new RegistryError('TOOMANYREQUESTS', detail, { cause: err, headers: { ...err.headers } });
      case 'unauthorized':
      case 'denied':
        // The mirror's own credentials were refused upstream; the client can't fix that with a
        // token of ours, so this is DENIED (403), not a 401 that would send it into a loop.
        return new RegistryError('DENIED', detail, { cause: err, message: 'upstream refused access' });
      case 'unavailable':
        return new RegistryError('UNAVAILABLE', detail, { cause: err });
      case 'protocol':
        return new RegistryError('UPSTREAM_ERROR', detail, { cause: err });
    }
  }
}

/** Lexically ordered page of `tags` after `last`, at most `n` long, with the next page's cursor. */
export function paginateTags(tags: readonly string[], page: { n?: number; last?: string }): { tags: string[]; next?: { n: number; last: string } } {
  const after = [...new Set(tags)].sort().filter((t) => page.last === undefined || t > page.last);
  if (page.n === undefined || after.length <= page.n) return { tags: after };
  const out = after.slice(0, page.n);
  return { tags: out, next: out.length > 0 ? { n: page.n, last: out[out.length - 1]! } : undefined };
}

/**
 * Waits for `p` while the client is there: when it leaves first this rejects, so that the request
 * stops counting as a client of the fill (a queued download nobody waits for is dropped).
 */
function whileClientWaits<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  const gone = () => new RegistryError('UNAVAILABLE', undefined, { message: 'the client went away while its download was pending' });
  if (signal.aborted) return Promise.reject(gone());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(gone());
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => (signal.removeEventListener('abort', onAbort), resolve(v)),
      (e: unknown) => (signal.removeEventListener('abort', onAbort), reject(e)),
    );
  });
}

/** The first `n` bytes of `source`; fails (never ends cleanly) if the source ends before them. */
async function* takeBytes(source: Readable, n: number, onBytes?: (n: number) => void): AsyncGenerator<Buffer> {
  let left = n;
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      if (chunk.length >= left) {
        onBytes?.(left);
        yield chunk.subarray(0, left);
        return;
      }
      left -= chunk.length;
      onBytes?.(chunk.length);
      yield chunk;
    }
    throw new UpstreamError('unavailable', `upstream range ended ${left} bytes short`);
  } finally {
    source.destroy();
  }
}
