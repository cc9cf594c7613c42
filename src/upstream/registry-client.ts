/**
 * `Upstream` over the distribution API (OCI distribution spec v1.1) with undici: the token dance
 * driven by `WWW-Authenticate`, byte-exact manifests verified by digest, blobs streamed (Range,
 * redirects to CDNs without credentials), typed errors, retries for idempotent requests only.
 * Works for Docker Hub and any other registry; Docker Hub's quirks come from docker-hub.ts.
 */
import pLimit from 'p-limit';
import { Agent, request, type Dispatcher } from 'undici';
import type { Descriptor } from '../domain/descriptor.js';
import { isDigest, sha256Digest, type Digest } from '../domain/digest.js';
import { isManifestMediaType, manifestMediaType } from '../domain/manifest.js';
import { bareMediaType, UPSTREAM_MANIFEST_ACCEPT } from '../domain/media-types.js';
import { referenceString, type Reference, type RepoName } from '../domain/reference.js';
import { raceSignal } from '../lib/race-signal.js';
import { findChallenge, parseWwwAuthenticate } from './auth/challenge.js';
import { realmOrigins } from './auth/realm-allowlist.js';
import { TokenProvider, tokenKey, tokenRequestFromChallenge, type Credentials, type TokenRequest } from './auth/token-provider.js';
import { defaultRealmHosts, parseRateLimitSnapshot, pickRateLimitHeaders, RATE_LIMIT_HEADERS } from './docker-hub.js';
import { classifyRequestError, discardBody, errorFromResponse, headerValue, isRetryable, readCapped } from './errors.js';
import { blobResult, parseLength } from './blob-response.js';
import { parseNextLink } from './link-header.js';
import { RedirectGuard, type Lookup } from './redirect-guard.js';
import { retry } from './retry.js';
import { parseTagLists } from './tag-list-worker.js';
import { UpstreamError, type RateLimitSnapshot, type SharedRateLimits, type Upstream, type UpstreamBlob, type UpstreamKind, type UpstreamManifest, type UpstreamObserver, type UpstreamTagList } from './upstream.js';

export type { Credentials } from './auth/token-provider.js';

export interface RegistryUpstreamOptions {
  /** Registry name as clients know it (`docker.io`), used in metrics and errors. */
  readonly name: string;
  /** Base URL of the registry API (`https://registry-1.docker.io`). */
  readonly url: string;
  readonly credentials?: Credentials;
  /**
   * Token realms we may contact (and send `credentials` to): origins or bare `host[:port]` entries
   * taking this registry's scheme (realm-allowlist.ts). Default: this registry's origin, plus
   * https://auth.docker.io for Docker Hub.
   */
  readonly allowedRealmHosts?: readonly string[];
  /**
   * Redirect targets allowed even on private/loopback/link-local addresses (`host` or
   * `host:port`), besides the registry's own host; public addresses are always allowed (SSRF guard).
   */
  readonly allowedRedirectHosts?: readonly string[];
  /** DNS resolution for the redirect guard; injected by tests. */
  readonly lookup?: Lookup;
  /**
   * Set once on the undici Agent (docs/architecture.md#timeouts-and-aborts); `bodyIdleMs` is the longest silence while reading.
   * `requestMs` (default 60 s) bounds a whole manifest, tag list, token or ping exchange, retries
   * and redirects included; blob bodies are not bounded here.
   */
  readonly timeouts: { readonly connectMs: number; readonly headersMs: number; readonly bodyIdleMs: number; readonly requestMs?: number };
  /** Total attempts for idempotent requests failing as `unavailable`, with exponential backoff. */
  readonly retries: { readonly attempts: number; readonly baseDelayMs: number; readonly maxDelayMs?: number };
  /** Manifests above this are refused (`protocol`). Default 4 MiB, as distribution's limit. */
  readonly maxManifestBytes?: number;
  /** Tag lists above this (all pages together) are refused (`protocol`). Default 32 MiB. */
  readonly maxTagListBytes?: number;
  readonly userAgent: string;
  /**
   * `Via` value added to every upstream request (loop guard, docs/architecture.md#the-upstream-client); a function is asked at each
   * request (the composition root passes one that carries on the client request's Via chain).
   */
  readonly via?: string | (() => string);
  /** Upstream requests waiting for response headers at once; unlimited when unset. */
  readonly maxConcurrency?: number;
  readonly observer?: UpstreamObserver;
  /** Several replicas: the rate-limit state they share (readings, the hold-off after a 429). Unset: this client's own. */
  readonly sharedRateLimits?: SharedRateLimits;
  /** Injected by tests; when absent an Agent is created (and closed by `close()`). */
  readonly dispatcher?: Dispatcher;
  readonly clock?: () => number;
}

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;
const MAX_TAG_LIST_PAGES = 10_000;

interface Call {
  readonly kind: UpstreamKind;
  readonly method: 'GET' | 'HEAD';
  readonly path: string;
  /** The repository whose `pull` scope a token must carry. */
  readonly repo?: RepoName;
  readonly headers?: Record<string, string>;
  readonly signal?: AbortSignal | undefined;
}

interface Grant {
  readonly authorization: string;
  readonly tokenKey?: string;
  readonly fromCache?: boolean;
}

type Scheme = { readonly kind: 'bearer'; readonly realm: string; readonly service?: string } | { readonly kind: 'basic' };

export class RegistryUpstream implements Upstream {
  readonly name: string;
  readonly #o: RegistryUpstreamOptions;
  readonly #base: URL;
  readonly #dispatcher: Dispatcher;
  readonly #ownsDispatcher: boolean;
  readonly #tokens: TokenProvider;
  readonly #limit: <T>(fn: () => Promise<T>) => Promise<T>;
  readonly #clock: () => number;
  readonly #maxManifestBytes: number;
  readonly #requestMs: number;
  readonly #maxTagListBytes: number;
  readonly #redirects: RedirectGuard;
  /**
   * The auth scheme the registry asked for last, once it worked (a token came from its realm):
   * later requests authenticate up front.
   */
  #scheme: Scheme | undefined;
  #rateLimit: RateLimitSnapshot | undefined;

  constructor(opts: RegistryUpstreamOptions) {
    this.#o = opts;
    this.name = opts.name;
    this.#base = new URL(opts.url.replace(/\/+$/, ''));
    if (this.#base.protocol !== 'https:' && this.#base.protocol !== 'http:') throw new TypeError(`upstream ${opts.name}: url must be http(s)`);
    this.#clock = opts.clock ?? Date.now;
    this.#redirects = new RedirectGuard({ base: this.#base, allowedHosts: opts.allowedRedirectHosts ?? [], ...(opts.lookup ? { lookup: opts.lookup } : {}) });
    this.#maxManifestBytes = opts.maxManifestBytes ?? 4 * 1024 * 1024;
    this.#requestMs = opts.timeouts.requestMs ?? 60_000;
    this.#maxTagListBytes = opts.maxTagListBytes ?? 32 * 1024 * 1024;
    this.#ownsDispatcher = !opts.dispatcher;
    this.#dispatcher =
      opts.dispatcher ??
      new Agent({ connect: { timeout: opts.timeouts.connectMs }, headersTimeout: opts.timeouts.headersMs, bodyTimeout: opts.timeouts.bodyIdleMs });
    const limiter = opts.maxConcurrency ? pLimit(opts.maxConcurrency) : undefined;
    this.#limit = limiter ? (fn) => limiter(fn) : (fn) => fn();
    const obs = opts.observer;
    this.#tokens = new TokenProvider({
      dispatcher: this.#dispatcher,
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
      allowedRealms: realmOrigins(opts.allowedRealmHosts ?? defaultRealmHosts(opts.name, this.#base), this.#base),
      headers: this.#commonHeaders(),
      clock: this.#clock,
      timeoutMs: this.#requestMs,
      observer: {
        tokenRequest: (e) => {
          obs?.request?.({ upstream: this.name, kind: 'token', method: 'GET', status: e.status, seconds: e.seconds });
          obs?.tokenFetched?.(this.name, e.ok);
        },
      },
    });
  }

  async headManifest(repo: RepoName, ref: Reference, signal?: AbortSignal): Promise<Descriptor> {
    const desc = await this.#withDeadline('manifest', signal, async (bounded) => {
      const res = await this.#call({ kind: 'manifest', method: 'HEAD', path: `/v2/${repo}/manifests/${referenceString(ref)}`, repo, headers: { accept: UPSTREAM_MANIFEST_ACCEPT }, signal: bounded });
      await res.body.dump();
      const header = headerValue(res.headers, 'docker-content-digest');
      if (ref.kind === 'digest' && header !== undefined && header !== ref.digest) throw new UpstreamError('protocol', 'upstream answered a HEAD by digest with another digest');
      const digest = header !== undefined && isDigest(header) ? header : ref.kind === 'digest' ? ref.digest : undefined;
      const size = parseLength(headerValue(res.headers, 'content-length'));
      const mediaType = bareMediaType(headerValue(res.headers, 'content-type'));
      return digest && size !== undefined && isManifestMediaType(mediaType) ? { digest, size, mediaType } : undefined;
    });
    // Docker Hub always answers HEAD with digest, length and a manifest type; a registry that
    // doesn't leaves a GET as the only way to learn them (and to check them against the bytes).
    return desc ?? (await this.getManifest(repo, ref, signal)).descriptor;
  }

  async getManifest(repo: RepoName, ref: Reference, signal?: AbortSignal): Promise<UpstreamManifest> {
    return this.#withDeadline('manifest', signal, async (bounded) => {
      const res = await this.#call({ kind: 'manifest', method: 'GET', path: `/v2/${repo}/manifests/${referenceString(ref)}`, repo, headers: { accept: UPSTREAM_MANIFEST_ACCEPT }, signal: bounded });
      const max = this.#maxManifestBytes;
      const body = await this.#read(res, max, () => new UpstreamError('protocol', `manifest larger than ${max} bytes`), bounded);
      // The bytes are the truth (docs/protocol.md#byte-exact-manifests): Docker-Content-Digest is only the upstream's claim.
      const digest = sha256Digest(body);
      if (ref.kind === 'digest' && digest !== ref.digest) throw new UpstreamError('protocol', `manifest bytes hash to ${digest}, not the requested digest`);
      // Only a manifest hubcache knows is kept, in the media type its bytes agree with (domain/manifest.ts).
      const verdict = manifestMediaType(body, headerValue(res.headers, 'content-type'));
      if (!verdict.ok) throw new UpstreamError('protocol', `not a manifest hubcache accepts: ${verdict.reason}`);
      const mediaType = verdict.mediaType;
      const headers = pickRateLimitHeaders((n) => headerValue(res.headers, n));
      return { descriptor: { digest, size: body.length, mediaType }, body, headers };
    });
  }

  async headBlob(repo: RepoName, digest: Digest, signal?: AbortSignal): Promise<{ size: number }> {
    return this.#withDeadline('blob', signal, async (bounded) => {
      const res = await this.#call({ kind: 'blob', method: 'HEAD', path: `/v2/${repo}/blobs/${digest}`, repo, signal: bounded });
      await res.body.dump();
      const size = parseLength(headerValue(res.headers, 'content-length'));
      if (size === undefined) throw new UpstreamError('protocol', 'blob HEAD without Content-Length');
      return { size };
    });
  }

  async getBlob(repo: RepoName, digest: Digest, opts: { offset?: number; signal?: AbortSignal } = {}): Promise<UpstreamBlob> {
    const offset = opts.offset ?? 0;
    const signal = opts.signal;
    return this.#retrying('blob', signal, async () => {
      const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
      const res = await this.#call({ kind: 'blob', method: 'GET', path: `/v2/${repo}/blobs/${digest}`, repo, headers, signal });
      try {
        return blobResult(res, offset);
      } catch (err) {
        discardBody(res);
        throw err;
      }
    });
  }

  async listTags(repo: RepoName, signal?: AbortSignal): Promise<UpstreamTagList> {
    const max = this.#maxTagListBytes;
    const tooLarge = () => new UpstreamError('protocol', `tag list larger than ${max} bytes (upstreamClient.maxTagListSize)`);
    return this.#withDeadline('tags', signal, async (bounded) => {
      const pages: Buffer[] = [];
      const cursors = new Set<string>();
      let read = 0;
      let query = '';
      for (;;) {
        const res = await this.#call({ kind: 'tags', method: 'GET', path: `/v2/${repo}/tags/list${query}`, repo, signal: bounded });
        const body = await this.#read(res, max - read, tooLarge, bounded);
        pages.push(body);
        read += body.length;
        const next = parseNextLink(headerValue(res.headers, 'link'));
        if (!next) break;
        // A registry that paginates by itself (without our asking) is followed; one whose cursor
        // comes round again, or that never ends, is not (the size cap and deadline bound the rest).
        if (cursors.has(next.last)) throw new UpstreamError('protocol', 'tag list pagination does not advance');
        if (pages.length >= MAX_TAG_LIST_PAGES) throw new UpstreamError('protocol', `tag list of more than ${MAX_TAG_LIST_PAGES} pages`);
        cursors.add(next.last);
        const q = new URLSearchParams();
        if (next.n !== undefined) q.set('n', String(next.n));
        q.set('last', next.last);
        query = `?${q.toString()}`;
      }
      const parsed = await parseTagLists(pages, { signal: bounded });
      if ('error' in parsed) throw new UpstreamError('protocol', parsed.error);
      if (parsed.dropped > 0) this.#o.observer?.tagsDropped?.(this.name, repo, parsed.dropped);
      return { name: parsed.name ?? repo, tags: parsed.tags };
    });
  }

  /** `GET /v2/` with authentication: whether the upstream is reachable and accepts us. */
  async ping(signal?: AbortSignal): Promise<void> {
    await this.#withDeadline('ping', signal, async (bounded) => (await this.#call({ kind: 'ping', method: 'GET', path: '/v2/', signal: bounded })).body.dump());
  }

  rateLimit(): RateLimitSnapshot | undefined {
    return this.#rateLimit;
  }

  /** Closes the Agent if this client created it: waits for in-flight requests, or aborts them with `force`. */
  async close(opts: { force?: boolean } = {}): Promise<void> {
    if (!this.#ownsDispatcher) return;
    await (opts.force ? this.#dispatcher.destroy() : this.#dispatcher.close());
  }

  /**
   * `#retrying` within the total deadline (`timeouts.requestMs`), for exchanges whose whole answer
   * is read here (everything but a blob's body, which cache.fillTimeout bounds). Past it the request
   * is aborted, its connection closed, and the caller gets `unavailable`, so a stale copy is served
   * when there is one; idle-timeouts alone can't end a body trickling in a byte at a time.
   */
  async #withDeadline<T>(kind: UpstreamKind, signal: AbortSignal | undefined, fn: (bounded: AbortSignal) => Promise<T>): Promise<T> {
    const ms = this.#requestMs;
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(new UpstreamError('unavailable', `${kind} request to ${this.name}: no complete answer within ${ms} ms`)), ms);
    const bounded = signal ? AbortSignal.any([signal, deadline.signal]) : deadline.signal;
    try {
      return await this.#retrying(kind, bounded, () => fn(bounded));
    } finally {
      clearTimeout(timer);
    }
  }

  #retrying<T>(kind: UpstreamKind, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    const { attempts, baseDelayMs, maxDelayMs } = this.#o.retries;
    return retry(fn, {
      attempts,
      baseDelayMs,
      ...(maxDelayMs !== undefined ? { maxDelayMs } : {}),
      ...(signal ? { signal } : {}),
      shouldRetry: isRetryable,
      onRetry: (err) => this.#o.observer?.retry?.(this.name, kind, (err as Error).message),
    });
  }

  /**
   * One authenticated exchange, redirects followed (max 5), resolving to a 2xx response; anything
   * else becomes an UpstreamError with the body consumed. Authorization goes only to the
   * registry's own origin: Docker Hub's blob CDN rejects it, and the token must not leak (docs/protocol.md#blob-redirects-to-a-cdn).
   */
  async #call(c: Call): Promise<Dispatcher.ResponseData> {
    let url = new URL(this.#base.pathname.replace(/\/$/, '') + c.path, this.#base);
    const { res: first, grant } = await this.#authorized(c, url);
    let res = first;
    for (let hops = 0; REDIRECT_STATUSES.has(res.statusCode); hops++) {
      const location = headerValue(res.headers, 'location');
      await res.body.dump();
      if (hops >= MAX_REDIRECTS) throw new UpstreamError('protocol', `more than ${MAX_REDIRECTS} redirects`, { status: res.statusCode });
      let next: URL | undefined;
      try {
        next = location ? new URL(location, url) : undefined;
      } catch {
        next = undefined;
      }
      if (!next || (next.protocol !== 'https:' && next.protocol !== 'http:')) throw new UpstreamError('protocol', 'redirect to a non-http(s) location', { status: res.statusCode });
      await this.#redirects.check(next);
      url = next;
      const sameOrigin = url.origin === this.#base.origin;
      res = await this.#dispatch(c, url, sameOrigin ? grant : undefined);
    }
    if (res.statusCode >= 200 && res.statusCode < 300) return res;
    throw await errorFromResponse(res, `${c.method} ${c.kind} ${this.name}`);
  }

  /**
   * The token dance (distribution docs/spec/auth/token.md): authenticate up front once the scheme
   * is known; on 401 read the challenge, get a token, send again. A cached token the registry
   * rejects is invalidated and refreshed once; a fresh token rejected means no access.
   */
  async #authorized(c: Call, url: URL): Promise<{ res: Dispatcher.ResponseData; grant: Grant | undefined }> {
    const defaultScopes = c.repo ? [`repository:${c.repo}:pull`] : [];
    let grant = await this.#upFront(defaultScopes, c.signal);
    let refreshed = false;
    for (let sends = 1; ; sends++) {
      const res = await this.#dispatch(c, url, grant);
      if (res.statusCode !== 401) return { res, grant };
      const challenges = parseWwwAuthenticate(res.headers['www-authenticate']);
      const refused = await errorFromResponse(res, `${c.method} ${c.kind} ${this.name}`);
      if (sends >= 3) throw refused;
      const bearer = findChallenge(challenges, 'bearer');
      if (bearer) {
        const req = tokenRequestFromChallenge(bearer, defaultScopes);
        if (grant?.tokenKey === tokenKey(req)) {
          if (!grant.fromCache || refreshed) throw refused;
          this.#tokens.invalidate(grant.tokenKey);
          refreshed = true;
        }
        grant = await this.#bearer(req, c.signal);
        // Remembered only now that its realm gave a token: a challenge naming a refused or failing
        // realm fails this request alone, not every later request to the upstream (issue #11).
        this.#scheme = { kind: 'bearer', realm: req.realm, ...(req.service ? { service: req.service } : {}) };
      } else if (findChallenge(challenges, 'basic') && this.#o.credentials && !grant) {
        this.#scheme = { kind: 'basic' };
        grant = this.#basic();
      } else {
        throw refused;
      }
    }
  }

  /**
   * Credentials from the remembered scheme, so that a request needs no 401 first. A remembered
   * realm that stops giving tokens is forgotten and the request goes without: the registry's 401
   * then names the realm it uses now, and a failure is this request's alone.
   */
  async #upFront(scopes: readonly string[], signal: AbortSignal | undefined): Promise<Grant | undefined> {
    const s = this.#scheme;
    if (s?.kind === 'basic') return this.#basic();
    if (s?.kind !== 'bearer') return undefined;
    try {
      return await this.#bearer({ realm: s.realm, ...(s.service ? { service: s.service } : {}), scopes }, signal);
    } catch (err) {
      if (signal?.aborted) throw err;
      if (this.#scheme === s) this.#scheme = undefined;
      return undefined;
    }
  }

  async #bearer(req: TokenRequest, signal: AbortSignal | undefined): Promise<Grant> {
    const g = await this.#tokens.getToken(req, signal);
    return { authorization: `Bearer ${g.token}`, tokenKey: g.key, fromCache: g.fromCache };
  }

  #basic(): Grant | undefined {
    const c = this.#o.credentials;
    return c ? { authorization: `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}` } : undefined;
  }

  #commonHeaders(): Record<string, string> {
    const via = typeof this.#o.via === 'function' ? this.#o.via() : this.#o.via;
    return { 'user-agent': this.#o.userAgent, ...(via ? { via } : {}) };
  }

  /** One HTTP request (no redirects), through the concurrency limit, observed and classified. */
  #dispatch(c: Call, url: URL, grant: Grant | undefined): Promise<Dispatcher.ResponseData> {
    const pull = c.kind === 'manifest' && c.method === 'GET';
    const shared = this.#o.sharedRateLimits;
    // Several replicas: another one (or this one) got a 429 on a manifest GET; the cluster waits
    // for its Retry-After instead of asking again from every replica (a cached copy is served stale).
    const until = pull ? shared?.heldOffUntil(this.name) : undefined;
    if (until !== undefined && until > this.#clock()) {
      this.#o.observer?.heldOff?.(this.name);
      const seconds = Math.max(1, Math.ceil((until - this.#clock()) / 1000));
      return Promise.reject(new UpstreamError('rate-limited', `${c.method} ${c.kind} ${this.name}: held off for ${seconds} s after a 429 (cluster-wide)`, { status: 429, headers: { 'retry-after': String(seconds) } }));
    }
    const headers = { ...this.#commonHeaders(), ...c.headers, ...(grant ? { authorization: grant.authorization } : {}) };
    const work = this.#limit(async () => {
      c.signal?.throwIfAborted();
      const started = performance.now();
      const report = (status: number | 'error') =>
        this.#o.observer?.request?.({ upstream: this.name, kind: c.kind, method: c.method, status, seconds: (performance.now() - started) / 1000 });
      try {
        const res = await request(url, { dispatcher: this.#dispatcher, method: c.method, headers, ...(c.signal ? { signal: c.signal } : {}) });
        report(res.statusCode);
        if (c.kind === 'manifest' || res.statusCode === 429) this.#noteRateLimit(res.headers);
        if (pull && res.statusCode === 429 && shared) shared.throttled(this.name, this.#clock() + retryAfterMs(headerValue(res.headers, RATE_LIMIT_HEADERS.retryAfter), this.#clock()));
        return res;
      } catch (err) {
        report('error');
        throw classifyRequestError(err, `${c.method} ${c.kind} ${this.name}`, c.signal);
      }
    });
    return raceSignal(work, c.signal);
  }

  async #read(res: Dispatcher.ResponseData, max: number, tooLarge: () => Error, signal: AbortSignal | undefined): Promise<Buffer> {
    try {
      return await readCapped(res, max, tooLarge);
    } catch (err) {
      throw classifyRequestError(err, `reading ${this.name} response`, signal);
    }
  }

  #noteRateLimit(headers: Dispatcher.ResponseData['headers']): void {
    const snap = parseRateLimitSnapshot((n) => headerValue(headers, n), this.#clock());
    if (!snap) return;
    this.#rateLimit = snap;
    this.#o.observer?.rateLimit?.(this.name, snap);
    this.#o.sharedRateLimits?.reading(this.name, snap);
  }
}

/** Without a usable Retry-After, a 429 holds manifest GETs off this long; at most this long with one. */
export const DEFAULT_HOLD_OFF_MS = 60_000;
export const MAX_HOLD_OFF_MS = 3_600_000;

/** A 429's `Retry-After` (seconds, or an HTTP date) as a delay in ms: 60 s without one, 1 h at most. */
export function retryAfterMs(raw: string | undefined, now: number): number {
  if (raw === undefined || raw.trim() === '') return DEFAULT_HOLD_OFF_MS;
  const v = raw.trim();
  const ms = /^\d+$/.test(v) ? Number(v) * 1000 : Date.parse(v) - now;
  if (!Number.isFinite(ms)) return DEFAULT_HOLD_OFF_MS;
  return Math.min(MAX_HOLD_OFF_MS, Math.max(1000, ms));
}
