/**
 * Bearer tokens from a registry's token service (distribution docs/spec/auth/token.md): `GET
 * realm?service=…&scope=…`, Basic credentials when configured, JSON `{token | access_token,
 * expires_in, issued_at}`. Tokens are cached per (realm, service, scopes) until shortly before
 * they expire, and concurrent callers for one key share one request (docs/architecture.md#single-flight-and-followers).
 */
import { LRUCache } from 'lru-cache';
import { request, type Dispatcher } from 'undici';
import { raceSignal } from '../../lib/race-signal.js';
import { SingleFlight } from '../../lib/single-flight.js';
import { classifyRequestError, errorFromResponse, readCapped } from '../errors.js';
import { UpstreamError } from '../upstream.js';
import type { Challenge } from './challenge.js';

export interface Credentials {
  readonly username: string;
  readonly password: string;
}

/** What a token is asked for. `scopes` are sent as repeated `scope` parameters (token spec). */
export interface TokenRequest {
  readonly realm: string;
  readonly service?: string;
  readonly scopes: readonly string[];
}

export interface TokenGrant {
  readonly token: string;
  /** Cache key, for `invalidate` when the registry rejects the token anyway. */
  readonly key: string;
  /** True when served from the cache rather than fetched for this call (or its flight). */
  readonly fromCache: boolean;
  readonly expiresAt: number;
}

export interface TokenObserver {
  /** One token request finished (`status: 'error'` when no response arrived). */
  tokenRequest?(e: { status: number | 'error'; seconds: number; ok: boolean }): void;
}

export interface TokenProviderOptions {
  readonly dispatcher: Dispatcher;
  readonly credentials?: Credentials;
  /**
   * Realm origins (`https://auth.docker.io`, see realm-allowlist.ts) we may contact at all: a
   * registry's challenge must not be able to point us, credentials included, at another host, port
   * or scheme (SSRF guard, and no credentials over plain HTTP unless an origin says `http://`).
   */
  readonly allowedRealms: ReadonlySet<string>;
  /** Sent with every token request (User-Agent, Via). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Milliseconds since the epoch; injected by tests. */
  readonly clock?: () => number;
  readonly observer?: TokenObserver;
  /** Distinct (realm, service, scopes) kept; one per repository pulled. Default 1000. */
  readonly maxCachedTokens?: number;
  /**
   * The longest one token request may take, to the last byte of its answer (default 60 s): it is
   * shared by every caller of its key, so a token service trickling its answer must not hold them.
   */
  readonly timeoutMs?: number;
}

// Token spec: "When omitted, [expires_in] defaults to 60 seconds."
const DEFAULT_LIFETIME_S = 60;
const DEFAULT_TIMEOUT_MS = 60_000;
const MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024;

/** Bearer challenge → token request; `defaultScopes` when the challenge names none (e.g. `/v2/`). */
export function tokenRequestFromChallenge(ch: Challenge, defaultScopes: readonly string[]): TokenRequest {
  const realm = ch.params.realm;
  if (!realm) throw new UpstreamError('protocol', 'Bearer challenge without a realm');
  // The scope parameter holds space-delimited scopes (token spec, "Requesting a Token").
  const scopes = (ch.params.scope ?? '').split(/\s+/).filter((s) => s.length > 0);
  return { realm, ...(ch.params.service ? { service: ch.params.service } : {}), scopes: scopes.length > 0 ? scopes : defaultScopes };
}

export function tokenKey(req: TokenRequest): string {
  return `${req.realm}|${req.service ?? ''}|${[...req.scopes].sort().join(' ')}`;
}

interface CachedToken {
  readonly token: string;
  readonly expiresAt: number;
  readonly refreshAt: number;
}

export class TokenProvider {
  readonly #o: TokenProviderOptions;
  readonly #clock: () => number;
  readonly #cache: LRUCache<string, CachedToken>;
  readonly #flight = new SingleFlight<string, CachedToken>();

  constructor(opts: TokenProviderOptions) {
    this.#o = opts;
    this.#clock = opts.clock ?? Date.now;
    this.#cache = new LRUCache({ max: opts.maxCachedTokens ?? 1000 });
  }

  /**
   * A token for `req`, cached or fetched. Throws UpstreamError: `unauthorized` when the realm's
   * origin is not allowed or the token service refuses (401/403), `protocol` for a non-http(s) realm,
   * `rate-limited` on 429, `unavailable` otherwise. The fetch is shared by concurrent callers and
   * is not cancelled by one caller's `signal`; each caller stops waiting when its own aborts.
   */
  async getToken(req: TokenRequest, signal?: AbortSignal): Promise<TokenGrant> {
    signal?.throwIfAborted();
    const key = tokenKey(req);
    const hit = this.#cache.get(key);
    if (hit && this.#clock() < hit.refreshAt) return { token: hit.token, key, fromCache: true, expiresAt: hit.expiresAt };
    const fetched = await raceSignal(this.#flight.do(key, () => this.#fetch(req, key)), signal);
    return { token: fetched.token, key, fromCache: false, expiresAt: fetched.expiresAt };
  }

  /** Forget a token the registry rejected, so the next `getToken` fetches a fresh one. */
  invalidate(key: string): void {
    this.#cache.delete(key);
  }

  async #fetch(req: TokenRequest, key: string): Promise<CachedToken> {
    const ms = this.#o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(new UpstreamError('unavailable', `token request: no complete answer within ${ms} ms`)), ms);
    try {
      return await this.#exchange(req, key, deadline.signal);
    } finally {
      clearTimeout(timer);
    }
  }

  async #exchange(req: TokenRequest, key: string, signal: AbortSignal): Promise<CachedToken> {
    const url = this.#realmUrl(req);
    const headers: Record<string, string> = { ...this.#o.headers, accept: 'application/json' };
    const creds = this.#o.credentials;
    if (creds) headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    const started = performance.now();
    const done = (status: number | 'error', ok: boolean) => this.#o.observer?.tokenRequest?.({ status, ok, seconds: (performance.now() - started) / 1000 });
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, { dispatcher: this.#o.dispatcher, method: 'GET', headers, signal });
    } catch (err) {
      done('error', false);
      throw classifyRequestError(err, 'token request', signal);
    }
    if (res.statusCode !== 200) {
      done(res.statusCode, false);
      throw remapTokenError(await errorFromResponse(res, 'token request'));
    }
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      const body = await readCapped(res, MAX_TOKEN_RESPONSE_BYTES, () => new Error('token response too large'));
      doc = JSON.parse(body.toString('utf8'));
    } catch (err) {
      done(res.statusCode, false);
      if (signal.aborted) throw signal.reason;
      // A proxy's HTML page or a broken service: treat like an outage so stale copies are served.
      throw new UpstreamError('unavailable', 'token response is not JSON', { status: 200, cause: err });
    }
    // Token spec: `access_token` is the OAuth 2.0 name for the same value.
    const token = typeof doc?.token === 'string' && doc.token ? doc.token : typeof doc?.access_token === 'string' ? doc.access_token : '';
    if (!token) {
      done(res.statusCode, false);
      throw new UpstreamError('unavailable', 'token response has no token', { status: 200 });
    }
    done(res.statusCode, true);
    const entry = this.#expiry(token, doc.expires_in, doc.issued_at);
    if (entry.refreshAt > this.#clock()) this.#cache.set(key, entry);
    return entry;
  }

  #realmUrl(req: TokenRequest): URL {
    let url: URL;
    try {
      url = new URL(req.realm);
    } catch {
      throw new UpstreamError('protocol', 'token realm is not a URL');
    }
    if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.username || url.password) {
      throw new UpstreamError('protocol', 'token realm must be a plain http(s) URL');
    }
    if (!this.#o.allowedRealms.has(url.origin)) {
      // Not a refusal by the upstream (that would be DENIED to the client): it sent us somewhere we
      // won't go, which is a broken or hostile answer (502 UPSTREAM_ERROR; a cached copy is served).
      throw new UpstreamError('protocol', `token realm ${url.origin} is not an allowed realm of this upstream (allowedRealmHosts)`);
    }
    if (req.service) url.searchParams.append('service', req.service);
    for (const scope of req.scopes) url.searchParams.append('scope', scope);
    return url;
  }

  /**
   * Refresh a little before expiry: min(30 s, 10 % of the lifetime) early, so a token never expires
   * between our check and the registry's. `issued_at` counts only when it is plausible (not in the
   * future, not older than the lifetime): the auth server's clock is not ours.
   */
  #expiry(token: string, expiresIn: unknown, issuedAt: unknown): CachedToken {
    const now = this.#clock();
    const lifetimeMs = (typeof expiresIn === 'number' && expiresIn > 0 ? expiresIn : DEFAULT_LIFETIME_S) * 1000;
    const issued = typeof issuedAt === 'string' ? Date.parse(issuedAt) : NaN;
    const start = Number.isFinite(issued) && issued <= now && issued > now - lifetimeMs ? issued : now;
    const expiresAt = start + lifetimeMs;
    return { token, expiresAt, refreshAt: expiresAt - Math.min(30_000, lifetimeMs * 0.1) };
  }
}

function remapTokenError(err: UpstreamError): UpstreamError {
  const opts = { ...(err.status !== undefined ? { status: err.status } : {}), headers: { ...err.headers }, upstreamErrors: err.upstreamErrors, cause: err };
  if (err.status === 401 || err.status === 403) return new UpstreamError('unauthorized', `token request refused (${err.status})`, opts);
  if (err.kind === 'rate-limited') return err;
  return new UpstreamError('unavailable', `token service answered ${err.status}`, opts);
}
