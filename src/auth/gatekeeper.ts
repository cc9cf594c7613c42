import { LRUCache } from 'lru-cache';
import { Authenticator, type Verdict } from './authenticator.js';
import { entryDigest } from './htpasswd.js';
import { ANONYMOUS, type AccessPolicy, type Action, type Principal } from './policy.js';
import { requestedActions, type Access, type Scope } from './scope.js';
import { tokenAllows, type TokenClaims, type TokenSigner } from './token.js';

/**
 * The authentication and authorization of one request, without HTTP: who is asking (from the
 * `Authorization` header: none, Basic or a Bearer token of ours) and whether they may do an action
 * on a repository. The HTTP layer (src/http/auth/) turns the answers into statuses and challenges.
 */
export type Scheme = 'anonymous' | 'basic' | 'bearer';

export interface Identity {
  readonly scheme: Scheme;
  readonly principal: Principal;
  /** The verified token's claims, for Bearer. */
  readonly token?: TokenClaims;
}

export type AuthFailure =
  | { readonly failure: 'invalid-credentials'; readonly scheme: Scheme }
  | { readonly failure: 'invalid-token'; readonly scheme: 'bearer'; readonly problem: string }
  | { readonly failure: 'rate-limited'; readonly scheme: Scheme; readonly retryAfterSeconds: number };

/**
 * `allow`; `challenge` (401): not authenticated, or a token that lacks an access its holder would
 * be granted (`insufficientScope`: the client asks the token endpoint again); `deny` (403).
 */
export type Check = { readonly decision: 'allow' } | { readonly decision: 'challenge'; readonly insufficientScope: boolean } | { readonly decision: 'deny' };

export interface GatekeeperOptions {
  readonly policy: AccessPolicy;
  readonly authenticator: Authenticator;
  readonly signer: TokenSigner;
  /** The users; when they change (`onChange`), tokens issued so far are no longer handed out again. */
  readonly users: { readonly users: ReadonlyMap<string, string>; onChange?(listener: () => void): void };
  readonly tokenTtlSeconds: number;
  readonly refreshTokenTtlSeconds: number;
  /**
   * How long an issued access token is handed out again to the same user for the same granted
   * access (seconds of its age; default min(30, ttl / 10)): one ES256 signature per (user, access)
   * per window instead of one per token request, and the token is already known when it comes
   * back. 0: a new token every time.
   */
  readonly tokenReuseSeconds?: number;
}

export interface IssuedToken {
  readonly token: string;
  readonly expiresIn: number;
  readonly issuedAt: string;
  readonly access: readonly Access[];
  readonly refreshToken?: string;
}

export class Gatekeeper {
  readonly #o: GatekeeperOptions;
  /**
   * Access tokens known to be ours, by the token string, with the identity they carry: those whose
   * signature was verified (a client sends the same one on every request) and those we just signed
   * (a client sends a new token back at once: no ECDSA verification of it). Expiry is still checked
   * each time; a string that isn't exactly a cached one goes through the full verification.
   */
  readonly #verifiedTokens = new LRUCache<string, Identity & { readonly token: TokenClaims }>({ max: 10_000 });
  /** Access tokens issued lately, by (subject, granted access): see `tokenReuseSeconds`. */
  readonly #issued = new LRUCache<string, { readonly token: string; readonly claims: TokenClaims }>({ max: 10_000 });
  readonly #reuseSeconds: number;

  constructor(opts: GatekeeperOptions) {
    this.#o = opts;
    this.#reuseSeconds = opts.tokenReuseSeconds ?? Math.min(30, Math.floor(opts.tokenTtlSeconds / 10));
    opts.users.onChange?.(() => this.#issued.clear());
  }

  get service(): string {
    return this.#o.signer.service;
  }

  /** Who sent the request. A header of another scheme counts as none. */
  async identify(authorization: string | undefined, address: string): Promise<Identity | AuthFailure> {
    // The common case first, before any parsing: a token we know, sent as clients send it.
    if (authorization?.startsWith('Bearer ')) {
      const known = this.#knownToken(authorization.slice(7));
      if (known) return known;
    }
    if (authorization !== undefined && /^Basic /i.test(authorization)) {
      // Basic on every request: a header verified lately is known by its keyed digest, undecoded.
      const known = this.#o.authenticator.known(authorization, address);
      if (known) return this.#fromVerdict(known, 'basic');
    }
    const basic = parseBasic(authorization);
    if (!basic && /^Basic\b/i.test(authorization ?? '')) return { failure: 'invalid-credentials', scheme: 'basic' };
    if (basic) {
      const verdict = await this.#o.authenticator.verify(basic.user, basic.password, address, authorization);
      return this.#fromVerdict(verdict, 'basic');
    }
    const bearer = /^Bearer +([A-Za-z0-9._~+/=-]+) *$/i.exec(authorization ?? '')?.[1];
    if (!bearer && /^Bearer\b/i.test(authorization ?? '')) return { failure: 'invalid-token', scheme: 'bearer', problem: 'malformed' };
    if (bearer) {
      const known = this.#knownToken(bearer);
      if (known) return known;
      const r = this.#o.signer.verifyAccess(bearer);
      if ('problem' in r) return { failure: 'invalid-token', scheme: 'bearer', problem: r.problem };
      return this.#remember(bearer, r.claims);
    }
    return { scheme: 'anonymous', principal: ANONYMOUS };
  }

  /** The identity of a token in the verified-token cache while it hasn't expired. */
  #knownToken(token: string): Identity | undefined {
    const known = this.#verifiedTokens.get(token);
    if (known === undefined) return undefined;
    if (known.token.exp > this.#o.signer.nowSeconds()) return known;
    this.#verifiedTokens.delete(token);
    return undefined;
  }

  #remember(token: string, claims: TokenClaims): Identity {
    const identity = { scheme: 'bearer' as const, principal: claims.sub ? { kind: 'user' as const, name: claims.sub } : ANONYMOUS, token: claims };
    this.#verifiedTokens.set(token, identity);
    return identity;
  }

  /** Users and passwords given to the token endpoint's OAuth2 form (`grant_type=password`). */
  async login(user: string, password: string, address: string): Promise<Identity | AuthFailure> {
    return this.#fromVerdict(await this.#o.authenticator.verify(user, password, address), 'basic');
  }

  /** A refresh token's user, while the token is valid and the user's password unchanged. */
  refresh(token: string): Identity | AuthFailure {
    const r = this.#o.signer.verifyRefresh(token);
    if ('problem' in r) return { failure: 'invalid-token', scheme: 'bearer', problem: r.problem };
    const hash = this.#o.users.users.get(r.claims.sub);
    if (hash === undefined || entryDigest(hash) !== r.claims.pwd) return { failure: 'invalid-token', scheme: 'bearer', problem: 'revoked' };
    return { scheme: 'bearer', principal: { kind: 'user', name: r.claims.sub } };
  }

  #fromVerdict(verdict: Verdict, scheme: Scheme): Identity | AuthFailure {
    if (verdict.ok) return { scheme, principal: { kind: 'user', name: verdict.user } };
    if (verdict.reason === 'rate-limited') return { failure: 'rate-limited', scheme, retryAfterSeconds: verdict.retryAfterSeconds ?? 1 };
    return { failure: 'invalid-credentials', scheme };
  }

  /** Whether `identity` may do `action` on `repository` (the name as the client sent it). */
  check(identity: Identity, address: string, repository: string, action: Action): Check {
    const req = { principal: identity.principal, address, repository, action };
    if (identity.token) {
      if (tokenAllows(identity.token, repository, action)) return { decision: 'allow' };
      if (this.#o.policy.allows(req)) return { decision: 'challenge', insufficientScope: true };
      return identity.principal.kind === 'anonymous' ? { decision: 'challenge', insufficientScope: true } : { decision: 'deny' };
    }
    const decision = this.#o.policy.decide(req);
    return decision === 'challenge' ? { decision, insufficientScope: false } : { decision };
  }

  /** `/v2/` for a client without credentials in Basic mode: answered 200 when anonymous clients may pull (mirrors), else challenged. */
  anonymousMayPull(address: string): boolean {
    return this.#o.policy.anonymousMayPull(address);
  }

  /** A token granting, of each requested scope, the actions the identity may do (possibly none). */
  issue(identity: Identity, address: string, scopes: readonly Scope[], offline: boolean): IssuedToken {
    const access: Access[] = [];
    for (const scope of scopes) {
      if (scope.type !== 'repository') continue;
      const actions = this.#o.policy.granted({ principal: identity.principal, address, repository: scope.name }, requestedActions(scope));
      if (actions.length > 0) access.push({ type: 'repository', name: scope.name, actions });
    }
    const subject = identity.principal.kind === 'user' ? identity.principal.name : '';
    const { token, claims } = this.#accessToken(subject, access);
    const hash = identity.principal.kind === 'user' ? this.#o.users.users.get(identity.principal.name) : undefined;
    const refreshToken = offline && hash !== undefined ? this.#o.signer.issueRefresh(subject, entryDigest(hash), this.#o.refreshTokenTtlSeconds) : undefined;
    const expiresIn = claims.exp - this.#o.signer.nowSeconds();
    return { token, expiresIn, issuedAt: new Date(claims.iat * 1000).toISOString(), access, ...(refreshToken ? { refreshToken } : {}) };
  }

  /**
   * An access token for `subject` granting exactly `access`: the one issued for the same pair at
   * most `tokenReuseSeconds` ago (so it keeps at least ttl − window of its life, and the answer's
   * `expires_in` says what is left), else a new one. Safe to share: whoever gets it authenticated as
   * `subject` just now and was granted exactly `access` now, i.e. could have had the same token
   * signed; a change of the users drops the lot.
   */
  #accessToken(subject: string, access: readonly Access[]): { token: string; claims: TokenClaims } {
    const now = this.#o.signer.nowSeconds();
    const key = this.#reuseSeconds > 0 ? JSON.stringify([subject, access]) : undefined;
    const recent = key === undefined ? undefined : this.#issued.get(key);
    if (recent && recent.claims.iat <= now && now - recent.claims.iat <= this.#reuseSeconds && recent.claims.exp > now) return recent;
    const issued = this.#o.signer.issueAccess(subject, access, this.#o.tokenTtlSeconds);
    if (key !== undefined) this.#issued.set(key, issued);
    // The client sends it back on its next request: known, no verification of our own signature.
    this.#remember(issued.token, issued.claims);
    return issued;
  }
}

/** `Basic base64(user:password)` → its parts; anything else → undefined. */
export function parseBasic(authorization: string | undefined): { user: string; password: string } | undefined {
  const m = /^Basic +([A-Za-z0-9+/=]+) *$/i.exec(authorization ?? '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
