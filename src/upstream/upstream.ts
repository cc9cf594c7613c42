import type { Readable } from 'node:stream';
import type { Descriptor } from '../domain/descriptor.js';
import type { Digest } from '../domain/digest.js';
import type { Reference, RepoName } from '../domain/reference.js';
import type { TagList } from '../domain/tag-list.js';

/**
 * How an upstream request failed, in the terms the cache policy decides on:
 * - not-found: the upstream says the thing does not exist (404) — never served stale.
 * - unauthorized / denied: credentials missing or refused (401 after a token retry, 403).
 * - rate-limited: 429; `headers` holds the upstream's rate-limit headers to pass on.
 * - unavailable: connection refused/reset, timeouts, 5xx (after retries).
 * - protocol: the upstream answered something we can't use (bad digest, oversized manifest…).
 */
export type UpstreamErrorKind = 'not-found' | 'unauthorized' | 'denied' | 'rate-limited' | 'unavailable' | 'protocol';

export class UpstreamError extends Error {
  readonly kind: UpstreamErrorKind;
  readonly status: number | undefined;
  /** Upstream response headers worth passing to the client (rate-limit headers, Retry-After). */
  readonly headers: Readonly<Record<string, string>>;
  /** The upstream's OCI error body, when it sent one. */
  readonly upstreamErrors: unknown;

  constructor(kind: UpstreamErrorKind, message: string, opts: { status?: number; headers?: Record<string, string>; upstreamErrors?: unknown; cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'UpstreamError';
    this.kind = kind;
    this.status = opts.status;
    this.headers = opts.headers ?? {};
    this.upstreamErrors = opts.upstreamErrors;
  }
}

export interface UpstreamManifest {
  readonly descriptor: Descriptor;
  readonly body: Buffer;
  /** Rate-limit headers seen on this response (Docker Hub sends them on manifest responses). */
  readonly headers: Readonly<Record<string, string>>;
}

export interface UpstreamBlob {
  /** Total size of the blob (from Content-Length or Content-Range). */
  readonly size: number;
  /** Offset of the first byte of `body` (the requested `offset`, 0 for a full GET). */
  readonly offset: number;
  /** The caller owns the stream and must consume or destroy it. */
  readonly body: Readable;
}

/** A repository's whole tag list, sorted (domain/tag-list.ts). */
export interface UpstreamTagList {
  /** The name the upstream gave the repository (the requested one when it gave none). */
  readonly name: string;
  readonly tags: TagList;
}

export interface RateLimitSnapshot {
  readonly limit?: number;
  readonly remaining?: number;
  /** Window in seconds (`;w=21600`). */
  readonly windowSeconds?: number;
  readonly source?: string;
  readonly observedAt: number;
}

/** What an upstream request was for: a closed set, the `kind` label of the upstream metrics. */
export const UPSTREAM_KINDS = ['manifest', 'blob', 'tags', 'token', 'ping'] as const;
export type UpstreamKind = (typeof UPSTREAM_KINDS)[number];

/**
 * What an upstream client reports, for metrics and logs (observability/upstream-observer.ts turns
 * it into both). Every method is optional and must not throw.
 */
export interface UpstreamObserver {
  /** One HTTP exchange finished (to response headers); `status: 'error'` when none arrived. */
  request?(e: { upstream: string; kind: UpstreamKind; method: string; status: number | 'error'; seconds: number }): void;
  /** A response carried rate-limit headers (manifest responses and 429s). */
  rateLimit?(upstream: string, snap: RateLimitSnapshot): void;
  tokenFetched?(upstream: string, ok: boolean): void;
  /** An operation failed with a retryable error and will be tried again. */
  retry?(upstream: string, kind: UpstreamKind, reason: string): void;
  /** A tag list carried entries that are not valid tags; they were left out. */
  tagsDropped?(upstream: string, repo: string, count: number): void;
  /** A manifest GET was not sent: the cluster holds them off after a 429 (SharedRateLimits). */
  heldOff?(upstream: string): void;
}

/**
 * An upstream's rate-limit state shared by the replicas of a cluster (issue #15;
 * `cluster/redis-rate-limits.ts`): what one replica reads from the rate-limit headers is every
 * replica's reading (the gauges agree), and after a 429 on a manifest GET — the request Docker Hub
 * counts as a pull — every replica holds its manifest GETs to that upstream off until the
 * `Retry-After` has passed, instead of each getting its own 429. A single node has none: its
 * behaviour is unchanged (each request asks; the gauges are its own readings).
 */
export interface SharedRateLimits {
  /** This replica read rate-limit headers: shared with the others. Never throws, never waits. */
  reading(upstream: string, snap: RateLimitSnapshot): void;
  /** A manifest GET got a 429: manifest GETs to `upstream` are held off until `untilMs`, cluster-wide. Never throws, never waits. */
  throttled(upstream: string, untilMs: number): void;
  /** Until when manifest GETs to `upstream` are held off (ms since epoch), as this replica heard last; `undefined`: not held off. Synchronous. */
  heldOffUntil(upstream: string): number | undefined;
}

/** A remote registry (Docker Hub or another), speaking the distribution API with token auth. */
export interface Upstream {
  /** The registry's name as clients know it: `docker.io`, `ghcr.io`… */
  readonly name: string;
  /** HEAD of a manifest: its descriptor. Free against Docker Hub's rate limit. */
  headManifest(repo: RepoName, ref: Reference, signal?: AbortSignal): Promise<Descriptor>;
  /** GET of a manifest, byte-exact; when `ref` is a digest the body is verified against it. */
  getManifest(repo: RepoName, ref: Reference, signal?: AbortSignal): Promise<UpstreamManifest>;
  /** HEAD of a blob: its size. */
  headBlob(repo: RepoName, digest: Digest, signal?: AbortSignal): Promise<{ size: number }>;
  /** GET of a blob from `offset` (Range), following redirects to CDNs without credentials. */
  getBlob(repo: RepoName, digest: Digest, opts?: { offset?: number; signal?: AbortSignal }): Promise<UpstreamBlob>;
  /**
   * Every tag of the repository: the upstream's pages (`Link: rel="next"`) followed and merged, so
   * that pagination can be served from one copy whatever the upstream does with `n` and `last`
   * (distribution 2.8 ignores them). Bounded in size; entries that aren't tags are dropped.
   */
  listTags(repo: RepoName, signal?: AbortSignal): Promise<UpstreamTagList>;
  /** The latest rate-limit headers seen, for metrics. */
  rateLimit(): RateLimitSnapshot | undefined;
  /**
   * Releases connections: waits for requests in flight, or with `force` aborts them (their callers
   * see an error), for a shutdown past its deadline that must not wait on a stalled download.
   */
  close(opts?: { force?: boolean }): Promise<void>;
}
