import client from 'prom-client';
import { CACHE_KINDS, CACHE_OUTCOMES, FILL_FAILURES, PASS_THROUGH_KINDS, PIN_REFRESH_RESULTS, PIN_STATES, STORE_READ_KINDS, type CacheKind, type CacheMetrics, type CacheOutcome, type FillFailure, type PassThroughKind, type PinMetrics, type PinRefreshResult, type PinState, type StoreReadKind } from '../cache/cache-metrics.js';
import { EVICTION_KINDS, EVICTION_REASONS, type EvictionKind, type EvictionMetrics, type EvictionReason } from '../cache/evictor.js';
import type { UpstreamKind } from '../upstream/upstream.js';
import type { ClusterMetrics } from '../cluster/redis-coordinator.js';
import type { UploadForwardOutcome } from '../cluster/upload-forwarder.js';

/** Where bytes sent to a client came from: the store, or an upstream (fetched or streamed from a fill in flight). */
export const BYTE_SOURCES = ['cache', 'upstream'] as const;
export type ByteSource = (typeof BYTE_SOURCES)[number];
/** Why a client connection was turned away (server.maxConnectionsPerClient, server.maxConnections). */
export const CONNECTION_REJECTIONS = ['client_limit', 'total_limit'] as const;
export type ConnectionRejection = (typeof CONNECTION_REJECTIONS)[number];
/** Which server timeout closed a client connection (server.headersTimeout, server.sendTimeout). */
export const CLIENT_TIMEOUTS = ['headers', 'send'] as const;
export type ClientTimeout = (typeof CLIENT_TIMEOUTS)[number];
/**
 * What became of a blob download whose clients had all gone: `continued` within the budget
 * (cache.abandonedFills), `cancelled` mid-download (temp data removed), `dropped` while still
 * queued for a download slot (upstream never asked).
 */
/** See cluster/upload-forwarder.ts (listed here: loading the metrics doesn't load the forwarder). */
export const UPLOAD_FORWARD_OUTCOMES: readonly UploadForwardOutcome[] = ['forwarded', 'owner_gone', 'unknown', 'refused'];
export const ABANDONED_DECISIONS = ['continued', 'cancelled', 'dropped'] as const;
export type AbandonedDecision = (typeof ABANDONED_DECISIONS)[number];

// Every series of a closed label set is created at zero (constructor): a counter that appears only
// at its first increment loses that increment in rate()/increase() (Prometheus treats the first
// sample as the starting point), which would undercount a hit ratio right after a restart. The sets
// are the cache's (cache/cache-metrics.ts), the upstream client's (upstream/upstream.ts) and the
// facade's own (above).

function statusClass(status: number | 'error'): string {
  return status === 'error' ? 'error' : `${Math.floor(status / 100)}xx`;
}

export const AUTH_SCHEMES = ['anonymous', 'basic', 'bearer', 'refresh_token'] as const;
export type AuthScheme = (typeof AUTH_SCHEMES)[number];
export const AUTH_RESULTS = ['allowed', 'unauthorized', 'denied', 'rate_limited'] as const;
export type AuthResult = (typeof AUTH_RESULTS)[number];

/**
 * Every metric hubcache exports, on its own Registry (not prom-client's global), behind domain
 * verbs. Names follow `hubcache_<subsystem>_<name>_<unit|total>`.
 */
export class Metrics implements CacheMetrics, PinMetrics, EvictionMetrics, ClusterMetrics {
  readonly registry = new client.Registry();

  readonly #httpRequests = new client.Counter({ name: 'hubcache_http_requests_total', help: 'Requests served, by route name, method and status class.', labelNames: ['route', 'method', 'status'], registers: [this.registry] });
  readonly #httpDuration = new client.Histogram({ name: 'hubcache_http_request_duration_seconds', help: 'Time to the end of the response, by route name.', labelNames: ['route', 'method'], buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300], registers: [this.registry] });
  readonly #cacheRequests = new client.Counter({ name: 'hubcache_cache_requests_total', help: 'Cache lookups by kind (manifest_tag, manifest_digest, blob) and outcome (hit, miss, revalidated, stale).', labelNames: ['kind', 'outcome'], registers: [this.registry] });
  readonly #bytesToClients = new client.Counter({ name: 'hubcache_client_bytes_total', help: 'Blob and manifest body bytes sent to clients, by source (cache: from the store; upstream: fetched or streamed from a download in flight for this request).', labelNames: ['source'], registers: [this.registry] });
  readonly #bytesFromUpstream = new client.Counter({ name: 'hubcache_upstream_bytes_total', help: 'Blob and manifest bytes received from upstreams.', labelNames: ['upstream'], registers: [this.registry] });
  readonly #joiners = new client.Counter({ name: 'hubcache_coalesced_requests_total', help: 'Requests that joined a download already in flight instead of making their own.', labelNames: ['kind'], registers: [this.registry] });
  readonly #upstreamRequests = new client.Counter({ name: 'hubcache_upstream_requests_total', help: 'Requests to upstream registries by upstream, kind and status class.', labelNames: ['upstream', 'kind', 'method', 'status'], registers: [this.registry] });
  readonly #upstreamDuration = new client.Histogram({ name: 'hubcache_upstream_request_duration_seconds', help: 'Upstream response time (to headers), by upstream and kind.', labelNames: ['upstream', 'kind'], buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [this.registry] });
  readonly #tokenFetches = new client.Counter({ name: 'hubcache_upstream_token_fetches_total', help: 'Token requests to upstream auth services, by result.', labelNames: ['upstream', 'result'], registers: [this.registry] });
  readonly #rateLimitLimit = new client.Gauge({ name: 'hubcache_upstream_ratelimit_limit', help: 'The latest ratelimit-limit an upstream reported (pulls per window).', labelNames: ['upstream'], registers: [this.registry] });
  readonly #rateLimitRemaining = new client.Gauge({ name: 'hubcache_upstream_ratelimit_remaining', help: "The latest ratelimit-remaining an upstream reported (with several replicas: the latest any replica read, so every replica's gauge agrees).", labelNames: ['upstream'], registers: [this.registry] });
  readonly #heldOff = new client.Counter({ name: 'hubcache_upstream_held_off_total', help: 'Several replicas: manifest GETs not sent to an upstream because a replica got a 429 and the cluster waits for its Retry-After (answered as the 429 would be: a cached copy served stale, else TOOMANYREQUESTS).', labelNames: ['upstream'], registers: [this.registry] });
  readonly #upstreamRetries = new client.Counter({ name: 'hubcache_upstream_retries_total', help: 'Upstream operations tried again after a retryable failure, by upstream and kind.', labelNames: ['upstream', 'kind'], registers: [this.registry] });
  readonly #rateLimited = new client.Counter({ name: 'hubcache_upstream_rate_limited_total', help: '429 responses received from upstreams.', labelNames: ['upstream'], registers: [this.registry] });
  readonly #fillsInFlight = new client.Gauge({ name: 'hubcache_fills_in_flight', help: 'Blob downloads in progress (each holds one of cache.maxConcurrentFills slots).', registers: [this.registry] });
  readonly #fillsQueued = new client.Gauge({ name: 'hubcache_fills_queued', help: 'Blob downloads waiting for a download slot (cache.maxConcurrentFills), first come, first served.', registers: [this.registry] });
  readonly #fillQueueWait = new client.Histogram({ name: 'hubcache_fills_queue_wait_seconds', help: 'Time blob downloads waited for a download slot before starting (0 when one was free).', buckets: [0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600], registers: [this.registry] });
  readonly #fillsAbandoned = new client.Counter({ name: 'hubcache_fills_abandoned_total', help: 'Blob downloads whose clients had all gone, by decision: continued (within cache.abandonedFills), cancelled (mid-download, temp data removed), dropped (still queued, upstream never asked).', labelNames: ['decision'], registers: [this.registry] });
  readonly #fillsFailed = new client.Counter({ name: 'hubcache_fills_failed_total', help: 'Blob downloads that failed (ended without a commit), by reason; cancelled ones are in hubcache_fills_abandoned_total.', labelNames: ['reason'], registers: [this.registry] });
  readonly #fillsResumed = new client.Counter({ name: 'hubcache_fills_resumed_total', help: 'Broken blob downloads resumed with a Range request.', registers: [this.registry] });
  readonly #fillsCommitted = new client.Counter({ name: 'hubcache_fills_committed_total', help: 'Blob downloads verified and committed to the store.', registers: [this.registry] });
  readonly #fillTail = new client.Histogram({ name: 'hubcache_fill_tail_seconds', help: 'The tail a download adds: time from the upstream\'s last byte of a blob to the last byte handed to a client that followed the download (one observation per whole-blob response served from a download in flight). Includes the final write, the digest check and the client\'s own backlog.', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [this.registry] });
  /** Read from the store at scrape time (`observeStoreUsage`). */
  #storeUsage: () => { readonly bytes: number; readonly objects: number } | undefined = () => undefined;
  readonly #storeBytes = new client.Gauge({ name: 'hubcache_store_bytes', help: 'Bytes of committed blobs in the store (absent until counted after start, in the background; then updated on every commit and delete). S3: the bucket is listed again every 5 minutes; with several replicas each one counts the others\' commits and deletes at its next listing.', registers: [this.registry], collect: readAtScrape(() => this.#storeUsage()?.bytes) });
  readonly #storeObjects = new client.Gauge({ name: 'hubcache_store_objects', help: 'Committed blobs in the store (absent until counted after start, like hubcache_store_bytes).', registers: [this.registry], collect: readAtScrape(() => this.#storeUsage()?.objects) });
  /** Read from the hosted registry at scrape time (`observeHosted`). */
  #hosted: { usage: () => { readonly bytes: number; readonly objects: number } | undefined; uploads: () => number } | undefined;
  readonly #hostedBytes = new client.Gauge({ name: 'hubcache_hosted_bytes', help: 'Bytes of hosted content (blobs and manifests pushed to hosted repositories, each counted once however many repositories link it): never evicted; part of hubcache_store_bytes for the blobs. Absent until counted after start.', registers: [this.registry], collect: readAtScrape(() => this.#hosted?.usage()?.bytes) });
  readonly #hostedObjects = new client.Gauge({ name: 'hubcache_hosted_objects', help: 'Hosted blobs and manifests (distinct digests linked to hosted repositories). Absent until counted after start.', registers: [this.registry], collect: readAtScrape(() => this.#hosted?.usage()?.objects) });
  readonly #uploadSessions = new client.Gauge({ name: 'hubcache_upload_sessions', help: 'Blob upload sessions open (pushes in progress; each holds a temp file until its final PUT, cancel or expiry).', registers: [this.registry], collect: readAtScrape(() => this.#hosted?.uploads()) });
  readonly #storeWritable = new client.Gauge({ name: 'hubcache_store_writable', help: '1 while the store takes writes; 0 while it is degraded (a write failed with ENOSPC, EDQUOT, EROFS, EIO or EACCES and no probe has written since): cached content is still served, content not cached is passed through from upstream, verified and not stored (hubcache_passthrough_requests_total).', registers: [this.registry] });
  readonly #passThrough = new client.Counter({ name: 'hubcache_passthrough_requests_total', help: 'Requests served from upstream without caching because the store could not take or give the content (degraded store, a fill whose writes failed, an unreadable stored copy), by kind: blob (verified while streaming, the last byte held until the digest matched), blob_range (a Range: not verifiable), manifest (verified before serving).', labelNames: ['kind'], registers: [this.registry] });
  readonly #passThroughBytes = new client.Counter({ name: 'hubcache_passthrough_bytes_total', help: 'Body bytes sent to clients by pass-through (see hubcache_passthrough_requests_total), by kind.', labelNames: ['kind'], registers: [this.registry] });
  readonly #storeReadFaults = new client.Counter({ name: 'hubcache_store_read_errors_total', help: 'Reads of the store that failed with a storage fault (EIO, EACCES, …), by what was read: blob, manifest, metadata. Before a response started the request falls back to upstream; after, its connection is aborted.', labelNames: ['kind'], registers: [this.registry] });
  // The bounded store (issue #13): names fixed with the dashboards and alerts (deploy/).
  readonly #storeMaxBytes = new client.Gauge({ name: 'hubcache_store_max_bytes', help: 'The store\'s cap (storage.maxSize), in bytes of committed blobs; absent without a cap.', registers: [this.registry] });
  #freeBytes: number | undefined;
  readonly #storeFreeBytes = new client.Gauge({ name: 'hubcache_store_free_bytes', help: 'Free bytes of the filesystem the store lives on (statfs, read every storage.eviction.interval); absent until read.', registers: [this.registry], collect: readAtScrape(() => this.#freeBytes) });
  #minFreeBytes: number | undefined;
  readonly #storeMinFreeBytes = new client.Gauge({ name: 'hubcache_store_min_free_bytes', help: 'The free-space floor (storage.minFreeSpace) in bytes, a percentage resolved against the filesystem\'s size; absent when not set.', registers: [this.registry], collect: readAtScrape(() => this.#minFreeBytes) });
  readonly #evictions = new client.Counter({ name: 'hubcache_evictions_total', help: 'Objects removed from the store by kind (blob, manifest, tag) and reason: lru (cap or free-space floor), retention (cache.tagRetention), emergency (a write failed for want of space), unreferenced (garbage collection: hosted content nothing references after deletes, unlinked manifests).', labelNames: ['kind', 'reason'], registers: [this.registry] });
  readonly #evictedBytes = new client.Counter({ name: 'hubcache_evicted_bytes_total', help: 'Bytes of blobs and manifests removed from the store, by reason.', labelNames: ['reason'], registers: [this.registry] });
  readonly #evictionErrors = new client.Counter({ name: 'hubcache_eviction_errors_total', help: 'Deletions of an eviction pass that failed (logged as "eviction failed"; the next pass tries again).', registers: [this.registry] });
  #oldestAccessAt: number | undefined;
  #clock: () => number = Date.now;
  readonly #oldestAccess = new client.Gauge({ name: 'hubcache_store_oldest_access_seconds', help: 'Age of the least recently used blob or manifest still stored (since it was last served), at scrape time. Under an hour while evictions happen: the cap is too small (thrashing).', registers: [this.registry], collect: readAtScrape(() => (this.#oldestAccessAt === undefined ? undefined : Math.max(0, (this.#clock() - this.#oldestAccessAt) / 1000))) });
  readonly #evictionLastSuccess = new client.Gauge({ name: 'hubcache_eviction_last_success_timestamp_seconds', help: 'When the last eviction pass ended without errors (unix seconds); absent before the first one.', registers: [this.registry] });
  readonly #connections = new client.Gauge({ name: 'hubcache_http_connections', help: 'Client connections open (not counting those being turned away).', registers: [this.registry] });
  readonly #connectionsRejected = new client.Counter({ name: 'hubcache_http_connections_rejected_total', help: 'Client connections turned away (503, or closed at once when too many are being turned away), by the limit reached: client_limit (per address) or total_limit.', labelNames: ['reason'], registers: [this.registry] });
  readonly #clientTimeouts = new client.Counter({ name: 'hubcache_http_timeouts_total', help: 'Client connections closed by a timeout: headers (the request head did not arrive in time: idle or slowloris) or send (the client stopped reading a response).', labelNames: ['kind'], registers: [this.registry] });
  #blobBufferPool: (() => { inUseBytes: number; idleBytes: number }) | undefined;
  readonly #blobBufferBytes = new client.Gauge({ name: 'hubcache_blob_buffer_pool_bytes', help: 'Memory of the buffer pool that streams stored blobs to clients, by state: in_use or idle (allocated, free for reuse).', labelNames: ['state'], registers: [this.registry], collect: () => this.#collectBufferPool() });
  readonly #authRequests = new client.Counter({ name: 'hubcache_auth_requests_total', help: 'Authentication and authorization of client requests and token requests (with auth on), by the scheme the client used (anonymous, basic, bearer, refresh_token) and result (allowed: served or token issued; unauthorized: 401; denied: 403; rate_limited: 429 after too many failed logins).', labelNames: ['scheme', 'result'], registers: [this.registry] });
  // TLS on the registry listener (issue #14): absent without tls.certificate.
  readonly #tlsExpiry = new client.Gauge({ name: 'hubcache_tls_certificate_expiry_timestamp_seconds', help: 'When the certificate the registry listener serves expires (its notAfter, unix seconds); absent without TLS. Updated on every reload.', registers: [this.registry] });
  readonly #tlsReloads = new client.Counter({ name: 'hubcache_tls_reloads_total', help: 'Reloads of the TLS certificate and key after their files changed, by result: success (new connections get the new pair) or failure (unreadable files, a key not matching the certificate: the previous pair is kept, logged as "TLS certificate not reloaded").', labelNames: ['result'], registers: [this.registry] });
  readonly #tlsHandshakeFailures = new client.Counter({ name: 'hubcache_tls_handshake_failures_total', help: 'Client connections closed before their TLS handshake finished (a client not trusting the certificate, no or a refused client certificate, a handshake not done within server.headersTimeout).', registers: [this.registry] });
  readonly #blobBufferFallbacks = new client.Counter({ name: 'hubcache_blob_buffer_pool_fallbacks_total', help: 'Stored-blob responses that found the buffer pool all in use and streamed through a small buffer of their own.', registers: [this.registry] });

  readonly #pins = new client.Gauge({ name: 'hubcache_pins', help: 'Pinned images (cache.pin; each tag of a pattern counts) by state: warm (all content stored), cold (not all stored yet), failed (the last refresh failed with content missing).', labelNames: ['state'], registers: [this.registry] });
  readonly #pinRefreshes = new client.Counter({ name: 'hubcache_pin_refresh_total', help: 'Refreshes of pinned images, by result: fresh (unchanged upstream), updated (new content fetched), stale (upstream failed, served from the store), failed (content missing and not fetched).', labelNames: ['result'], registers: [this.registry] });
  readonly #pinnedDigests = new client.Gauge({ name: 'hubcache_pinned_digests', help: 'Manifests and blobs that pins protect from eviction.', registers: [this.registry] });

  constructor(opts: { collectDefault?: boolean } = {}) {
    if (opts.collectDefault ?? true) client.collectDefaultMetrics({ register: this.registry, prefix: 'hubcache_process_' });
    for (const kind of CACHE_KINDS) {
      for (const outcome of CACHE_OUTCOMES) this.#cacheRequests.inc({ kind, outcome }, 0);
      this.#joiners.inc({ kind }, 0);
    }
    for (const source of BYTE_SOURCES) this.#bytesToClients.inc({ source }, 0);
    for (const outcome of ['acquired', 'followed', 'expired']) this.#fillLeases.inc({ outcome }, 0);
    for (const outcome of UPLOAD_FORWARD_OUTCOMES) this.#uploadForwards.inc({ outcome }, 0);
    for (const reason of FILL_FAILURES) this.#fillsFailed.inc({ reason }, 0);
    for (const reason of CONNECTION_REJECTIONS) this.#connectionsRejected.inc({ reason }, 0);
    for (const kind of CLIENT_TIMEOUTS) this.#clientTimeouts.inc({ kind }, 0);
    for (const decision of ABANDONED_DECISIONS) this.#fillsAbandoned.inc({ decision }, 0);
    for (const kind of PASS_THROUGH_KINDS) {
      this.#passThrough.inc({ kind }, 0);
      this.#passThroughBytes.inc({ kind }, 0);
    }
    for (const kind of STORE_READ_KINDS) this.#storeReadFaults.inc({ kind }, 0);
    this.#storeWritable.set(1);
    for (const state of PIN_STATES) this.#pins.set({ state }, 0);
    for (const result of PIN_REFRESH_RESULTS) this.#pinRefreshes.inc({ result }, 0);
    this.#pinnedDigests.set(0);
    for (const reason of EVICTION_REASONS) {
      for (const kind of EVICTION_KINDS) this.#evictions.inc({ kind, reason }, 0);
      this.#evictedBytes.inc({ reason }, 0);
    }
    this.#evictionErrors.inc(0);
  }

  /** The cap (storage.maxSize), set once at start; never called without one. */
  storeMaxBytes(bytes: number): void {
    this.#storeMaxBytes.set(bytes);
  }
  evicted(kind: EvictionKind, reason: EvictionReason, bytes: number): void {
    this.#evictions.inc({ kind, reason });
    if (bytes > 0) this.#evictedBytes.inc({ reason }, bytes);
  }
  evictionFailed(): void {
    this.#evictionErrors.inc();
  }
  evictionSucceeded(atMs: number): void {
    this.#evictionLastSuccess.set(atMs / 1000);
  }
  /** `atMs`: the last access of the least recently used object; the gauge is its age at scrape time (`clock`). */
  oldestAccess(atMs: number | undefined, clock?: () => number): void {
    this.#oldestAccessAt = atMs;
    if (clock) this.#clock = clock;
  }
  freeSpace(bytes: number | undefined, floorBytes?: number): void {
    this.#freeBytes = bytes;
    this.#minFreeBytes = floorBytes;
  }

  /** Creates the per-upstream counters at zero (upstream names come from the configuration: a closed set). */
  upstreamConfigured(upstream: string): void {
    this.#bytesFromUpstream.inc({ upstream }, 0);
    this.#rateLimited.inc({ upstream }, 0);
    this.#heldOff.inc({ upstream }, 0);
  }
  /** A manifest GET held off cluster-wide after a 429 (SharedRateLimits). */
  upstreamHeldOff(upstream: string): void {
    this.#heldOff.inc({ upstream });
  }

  /** Creates the auth counters at zero (only when auth is on: the series are absent otherwise). */
  tlsConfigured(notAfter: Date): void {
    this.#tlsExpiry.set(Math.floor(notAfter.getTime() / 1000));
    for (const result of ['success', 'failure']) this.#tlsReloads.inc({ result }, 0);
    this.#tlsHandshakeFailures.inc(0);
  }
  tlsReloaded(result: 'success' | 'failure', notAfter?: Date): void {
    this.#tlsReloads.inc({ result });
    if (notAfter) this.#tlsExpiry.set(Math.floor(notAfter.getTime() / 1000));
  }
  tlsHandshakeFailed(): void {
    this.#tlsHandshakeFailures.inc();
  }
  authConfigured(): void {
    for (const scheme of AUTH_SCHEMES) for (const result of AUTH_RESULTS) this.#authRequests.inc({ scheme, result }, 0);
  }
  authRequest(scheme: AuthScheme, result: AuthResult): void {
    this.#authRequests.inc({ scheme, result });
  }
  httpRequest(route: string, method: string, status: number, seconds: number): void {
    this.#httpRequests.inc({ route, method, status: statusClass(status) });
    this.#httpDuration.observe({ route, method }, seconds);
  }
  cache(kind: CacheKind, outcome: CacheOutcome): void {
    this.#cacheRequests.inc({ kind, outcome });
  }
  bytesToClient(source: ByteSource, n: number): void {
    if (n > 0) this.#bytesToClients.inc({ source }, n);
  }
  bytesFromUpstream(upstream: string, n: number): void {
    if (n > 0) this.#bytesFromUpstream.inc({ upstream }, n);
  }
  joined(kind: CacheKind): void {
    this.#joiners.inc({ kind });
  }
  upstreamRequest(upstream: string, kind: UpstreamKind, method: string, status: number | 'error', seconds: number): void {
    this.#upstreamRequests.inc({ upstream, kind, method, status: statusClass(status) });
    this.#upstreamDuration.observe({ upstream, kind }, seconds);
    if (status === 429) this.#rateLimited.inc({ upstream });
  }
  upstreamRetry(upstream: string, kind: UpstreamKind): void {
    this.#upstreamRetries.inc({ upstream, kind });
  }
  tokenFetched(upstream: string, ok: boolean): void {
    this.#tokenFetches.inc({ upstream, result: ok ? 'ok' : 'error' });
  }
  rateLimit(upstream: string, limit: number | undefined, remaining: number | undefined): void {
    if (limit !== undefined) this.#rateLimitLimit.set({ upstream }, limit);
    if (remaining !== undefined) this.#rateLimitRemaining.set({ upstream }, remaining);
  }
  /** A download waits for a slot. */
  fillQueued(): void {
    this.#fillsQueued.inc();
  }
  /** A queued download left the queue without starting; `abandoned`: because its clients had all gone. */
  fillDropped(abandoned: boolean): void {
    this.#fillsQueued.dec();
    if (abandoned) this.#fillsAbandoned.inc({ decision: 'dropped' });
  }
  /** A download got its slot: `queuedSeconds` after it was queued, undefined when a slot was free at once. */
  fillStarted(queuedSeconds?: number): void {
    if (queuedSeconds !== undefined) this.#fillsQueued.dec();
    this.#fillQueueWait.observe(queuedSeconds ?? 0);
    this.#fillsInFlight.inc();
  }
  /** Every client of a running download had gone and the budget let it go on. */
  fillContinuedUnattended(): void {
    this.#fillsAbandoned.inc({ decision: 'continued' });
  }
  fillEnded(result: 'committed' | 'cancelled' | FillFailure): void {
    this.#fillsInFlight.dec();
    if (result === 'committed') this.#fillsCommitted.inc();
    else if (result === 'cancelled') this.#fillsAbandoned.inc({ decision: 'cancelled' });
    else this.#fillsFailed.inc({ reason: result });
  }
  fillResumed(): void {
    this.#fillsResumed.inc();
  }
  fillTail(seconds: number): void {
    this.#fillTail.observe(Math.max(0, seconds));
  }
  passThrough(kind: PassThroughKind): void {
    this.#passThrough.inc({ kind });
  }
  passThroughBytes(kind: PassThroughKind, n: number): void {
    if (n > 0) this.#passThroughBytes.inc({ kind }, n);
  }
  storeReadFault(kind: StoreReadKind): void {
    this.#storeReadFaults.inc({ kind });
  }
  /**
   * The store gauges report `usage()` at every scrape (an in-memory read: `BlobStore.usage`); while
   * it is `undefined` (not counted yet, or a store that can't tell) they have no sample, rather
   * than a 0 that alerts and graphs would take for an emptied store.
   */
  observeStoreUsage(usage: () => { readonly bytes: number; readonly objects: number } | undefined): void {
    this.#storeUsage = usage;
  }
  /** The hosted registry's share of the store and its open upload sessions, read at scrape time. */
  observeHosted(hosted: { usage: () => { readonly bytes: number; readonly objects: number } | undefined; uploads: () => number }): void {
    this.#hosted = hosted;
  }
  readonly #fillLeases = new client.Counter({ name: 'hubcache_cluster_fill_leases_total', help: 'Several replicas: blob downloads claimed cluster-wide, by outcome (acquired: this replica downloads the blob; followed: another replica does and it was streamed from there; expired: acquired after the previous holder stopped answering and its lease ran out).', labelNames: ['outcome'], registers: [this.registry] });
  readonly #peerBytes = new client.Counter({ name: 'hubcache_cluster_peer_follow_bytes_total', help: "Several replicas: blob bytes streamed from another replica's download in flight (verified here).", registers: [this.registry] });
  /** Unset on a single node (no cluster): the gauge is then absent. */
  #redisUpValue: number | undefined;
  readonly #redisUp = new client.Gauge({ name: 'hubcache_cluster_redis_up', help: 'Several replicas: 1 while the shared Redis is reachable; 0 while it is not (each replica downloads on its own, verified; /readyz says degraded). Absent on a single node (no cluster).', registers: [this.registry], collect: readAtScrape(() => this.#redisUpValue) });
  readonly #maintenanceLocks = new client.Counter({ name: 'hubcache_cluster_maintenance_lock_total', help: "Several replicas: the maintenance lock (one replica at a time runs eviction and hosted garbage collection), by outcome: acquired (this replica ran a pass), busy (another replica was running one: this replica's pass skipped), unavailable (Redis unreachable: no pass that deletes runs), lost (could not be renewed: the pass stopped deleting).", labelNames: ['outcome'], registers: [this.registry] });
  /** Unset on a single node (no cluster): the gauge is then absent. */
  #maintenanceHeldValue: number | undefined;
  readonly #maintenanceHeld = new client.Gauge({ name: 'hubcache_cluster_maintenance_lock_held', help: 'Several replicas: 1 while this replica holds the maintenance lock (runs an eviction or garbage collection pass for the cluster), else 0. Absent on a single node.', registers: [this.registry], collect: readAtScrape(() => this.#maintenanceHeldValue) });
  maintenanceLock(outcome: 'acquired' | 'busy' | 'unavailable' | 'lost'): void {
    this.#maintenanceLocks.inc({ outcome });
  }
  maintenanceHeld(held: boolean): void {
    this.#maintenanceHeldValue = held ? 1 : 0;
  }
  fillLease(outcome: 'acquired' | 'followed' | 'expired'): void {
    this.#fillLeases.inc({ outcome });
  }
  peerFollowBytes(n: number): void {
    this.#peerBytes.inc(n);
  }
  redisUp(up: boolean): void {
    this.#redisUpValue = up ? 1 : 0;
    if (this.#maintenanceHeldValue === undefined) {
      // A cluster: its maintenance series exist from the start (0), so rates and alerts see them.
      this.#maintenanceHeldValue = 0;
      for (const outcome of ['acquired', 'busy', 'unavailable', 'lost'] as const) this.#maintenanceLocks.inc({ outcome }, 0);
    }
  }
  readonly #uploadForwards = new client.Counter({
    name: 'hubcache_cluster_upload_forwards_total',
    help: 'Several replicas: requests for a blob upload session this replica does not hold, by outcome (forwarded: passed through to the replica holding it; owner_gone: that replica did not answer, the session is dropped and the client starts over; unknown: no replica holds it; refused: the holder refused this replica, the peer secrets differ).',
    labelNames: ['outcome'],
    registers: [this.registry],
  });
  uploadForwarded(outcome: UploadForwardOutcome): void {
    this.#uploadForwards.inc({ outcome });
  }
  /** The store became writable again, or degraded (StoreHealth). */
  storeWritable(writable: boolean): void {
    this.#storeWritable.set(writable ? 1 : 0);
  }
  connectionOpened(): void {
    this.#connections.inc();
  }
  connectionClosed(): void {
    this.#connections.dec();
  }
  connectionRejected(reason: ConnectionRejection): void {
    this.#connectionsRejected.inc({ reason });
  }
  clientTimedOut(kind: ClientTimeout): void {
    this.#clientTimeouts.inc({ kind });
  }
  pinStates(counts: Readonly<Record<PinState, number>>): void {
    for (const state of PIN_STATES) this.#pins.set({ state }, counts[state]);
  }
  pinRefreshed(result: PinRefreshResult): void {
    this.#pinRefreshes.inc({ result });
  }
  pinnedDigests(n: number): void {
    this.#pinnedDigests.set(n);
  }
  /** Reports the blob buffer pool's memory at every scrape. */
  watchBlobBufferPool(stats: () => { inUseBytes: number; idleBytes: number }): void {
    this.#blobBufferPool = stats;
  }
  blobBufferFallback(): void {
    this.#blobBufferFallbacks.inc();
  }

  #collectBufferPool(): void {
    const stats = this.#blobBufferPool?.() ?? { inUseBytes: 0, idleBytes: 0 };
    this.#blobBufferBytes.set({ state: 'in_use' }, stats.inUseBytes);
    this.#blobBufferBytes.set({ state: 'idle' }, stats.idleBytes);
  }
}

/** A gauge's `collect`: the value `read` gives at scrape time, or no sample while it gives undefined. */
function readAtScrape(read: () => number | undefined) {
  return function (this: client.Gauge) {
    const v = read();
    if (v === undefined) this.remove();
    else this.set(v);
  };
}
