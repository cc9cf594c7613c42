/**
 * The cache's vocabulary — what it looks up, what became of a lookup, why a fill failed — and what
 * it reports, as an interface of its own: the cache depends on this, not on the metrics facade
 * (observability/metrics.ts implements it and labels its series with these closed sets).
 */

/** What a lookup was for. A closed set: never a repository, tag or digest (Docker Hub's namespace is unbounded). */
export const CACHE_KINDS = ['manifest_tag', 'manifest_digest', 'blob'] as const;
export type CacheKind = (typeof CACHE_KINDS)[number];

/**
 * What became of a lookup: served from the store (`hit`), fetched (`miss`), confirmed upstream
 * before serving (`revalidated`), or served from the store because upstream failed (`stale`).
 */
export const CACHE_OUTCOMES = ['hit', 'miss', 'revalidated', 'stale'] as const;
export type CacheOutcome = (typeof CACHE_OUTCOMES)[number];

/** Why a blob fill ended without a commit (a cancelled one is not a failure). */
export const FILL_FAILURES = ['digest_mismatch', 'upstream_error', 'timeout', 'storage_error'] as const;
export type FillFailure = (typeof FILL_FAILURES)[number];

/**
 * What was served from upstream without being cached, because the store could not take it (a
 * degraded store, a fill whose writes failed, a stored copy that can't be read): a whole blob,
 * verified while it streamed (`blob`), a Range of one, which nothing can verify (`blob_range`), or
 * a manifest, verified before it is served (`manifest`).
 */
export const PASS_THROUGH_KINDS = ['blob', 'blob_range', 'manifest'] as const;
export type PassThroughKind = (typeof PASS_THROUGH_KINDS)[number];

/** What a read of the store that failed with a storage fault (EIO, EACCES, …) was reading. */
export const STORE_READ_KINDS = ['blob', 'manifest', 'metadata'] as const;
export type StoreReadKind = (typeof STORE_READ_KINDS)[number];

/** The events the cache reports. Every method is cheap and must not throw. */
export interface CacheMetrics {
  /** A lookup and its outcome. */
  cache(kind: CacheKind, outcome: CacheOutcome): void;
  /** A request joined a fetch already in flight instead of making its own. */
  joined(kind: CacheKind): void;
  /** Body bytes received from an upstream (blobs and manifests). */
  bytesFromUpstream(upstream: string, n: number): void;
  /** A blob fill waits for a download slot (cache.maxConcurrentFills). */
  fillQueued(): void;
  /** A queued fill left the queue without starting; `abandoned`: because its clients had all gone. */
  fillDropped(abandoned: boolean): void;
  /** A fill got its slot: `queuedSeconds` after it was queued, undefined when a slot was free at once. */
  fillStarted(queuedSeconds?: number): void;
  /** Every client of a running fill had gone and the budget (cache.abandonedFills) let it go on. */
  fillContinuedUnattended(): void;
  /** A running fill ended. */
  fillEnded(result: 'committed' | 'cancelled' | FillFailure): void;
  /** A broken download was resumed with a Range request. */
  fillResumed(): void;
  /**
   * A client that followed a fill got the blob's last byte `seconds` after the upstream sent it
   * (the tail the fill adds: final write, digest check, the client's own backlog).
   */
  fillTail(seconds: number): void;
  /** A request (or a fill's client) is served from upstream without caching (PASS_THROUGH_KINDS). */
  passThrough(kind: PassThroughKind): void;
  /** Bytes sent to clients by pass-through. */
  passThroughBytes(kind: PassThroughKind, n: number): void;
  /** A read of the store failed with a storage fault (the request fell back to upstream, or its body broke). */
  storeReadFault(kind: StoreReadKind): void;
}

/** How a pin (cache.pin) stands: everything it needs is stored (`warm`), not yet (`cold`), or its last refresh failed with something missing (`failed`). */
export const PIN_STATES = ['warm', 'cold', 'failed'] as const;
export type PinState = (typeof PIN_STATES)[number];

/**
 * How a pinned image's refresh went: confirmed unchanged (`fresh`), new content fetched — a moved
 * tag, a first fill (`updated`), served from the store because the upstream failed (`stale`), or
 * something it needs could not be had (`failed`).
 */
export const PIN_REFRESH_RESULTS = ['fresh', 'updated', 'stale', 'failed'] as const;
export type PinRefreshResult = (typeof PIN_REFRESH_RESULTS)[number];

/** What the pin set (pins.ts) reports. Cheap, never throws. */
export interface PinMetrics {
  /** Pins by state, the whole set at once (after each refresh). */
  pinStates(counts: Readonly<Record<PinState, number>>): void;
  /** One pinned image (a tag, a digest, one tag of a pattern) was refreshed. */
  pinRefreshed(result: PinRefreshResult): void;
  /** Blobs and manifests protected from eviction. */
  pinnedDigests(n: number): void;
}
