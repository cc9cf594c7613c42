import type { Request } from 'express';
import type { Action } from '../../auth/policy.js';
import type { AuthFailure, Gatekeeper, Identity } from '../../auth/gatekeeper.js';
import { formatScope } from '../../auth/scope.js';
import { refusal, type RegistryError } from '../../domain/errors.js';
import type { AuthScheme, AuthResult, Metrics } from '../../observability/metrics.js';

/**
 * The HTTP face of authentication (issue #14): every registry request passes `authorize` with the
 * repository name as sent and its action before anything else happens (no upstream request, no
 * store access), and is refused as the distribution spec says:
 *
 * - not authenticated (no credentials where they are needed, a wrong password, an expired or
 *   foreign token, a token lacking a scope its holder would get) → `401 UNAUTHORIZED` with a
 *   `WWW-Authenticate` challenge: `Bearer realm,service,scope` (token mode, the default) or
 *   `Basic realm` (`auth.challenge: basic`);
 * - authenticated but not allowed → `403 DENIED`;
 * - too many failed logins → `429 TOOMANYREQUESTS` with `Retry-After`.
 *
 * No credential ever reaches an error body or a log line: refusals carry the repository and the
 * action, never the user's input.
 */
export interface AuthGuardOptions {
  readonly gatekeeper: Gatekeeper;
  readonly metrics: Metrics;
  readonly challenge: 'bearer' | 'basic';
  /** The token endpoint's URL for challenges; from the request's Host when unset. */
  readonly realm?: string;
}

/** Which action a registry request needs: reads are pull, writes push, DELETE delete. */
export function actionFor(method: string): Action {
  if (method === 'GET' || method === 'HEAD') return 'pull';
  if (method === 'DELETE') return 'delete';
  return 'push';
}

export class AuthGuard {
  readonly #o: AuthGuardOptions;

  constructor(opts: AuthGuardOptions) {
    this.#o = opts;
    opts.metrics.authConfigured();
  }

  get gatekeeper(): Gatekeeper {
    return this.#o.gatekeeper;
  }

  /**
   * The client's address for CIDR rules and failed-login limits: the socket's, or, from a trusted
   * proxy (`server.trustedProxies`, express's `trust proxy`), the nearest untrusted address of
   * `X-Forwarded-For`.
   */
  static address(req: Request): string {
    // Trusting no proxy (the default), `req.ip` is the socket's address, found after parsing
    // X-Forwarded-For only to ignore it (~10 µs a request): taken directly.
    if (req.app.get('trust proxy') === false) return req.socket.remoteAddress ?? '';
    return req.ip ?? req.socket.remoteAddress ?? '';
  }

  /**
   * The token endpoint's URL in challenges: `auth.realm`, else from the request as the client sees
   * hubcache: `https` on a TLS listener, and from a trusted proxy its `X-Forwarded-Proto` and
   * `X-Forwarded-Host` (a TLS-terminating proxy in front of a plain listener).
   */
  realm(req: Request): string {
    if (this.#o.realm) return this.#o.realm;
    const scheme = req.protocol === 'https' || req.protocol === 'http' ? req.protocol : (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
    return `${scheme}://${req.host ?? 'localhost'}/auth/token`;
  }

  /** Throws the refusal when the request may not do `action` on `repository`. */
  async authorize(req: Request, repository: string, action: Action): Promise<Identity> {
    const address = AuthGuard.address(req);
    const identity = await this.#identify(req, address, repository, action);
    const check = this.#o.gatekeeper.check(identity, address, repository, action);
    if (check.decision === 'allow') {
      this.#count(identity.scheme, 'allowed');
      return identity;
    }
    if (check.decision === 'deny') {
      this.#count(identity.scheme, 'denied');
      throw refusal('DENIED', { repository, action }, { message: `requested access to the resource is denied: ${action} on ${repository}` });
    }
    this.#count(identity.scheme, 'unauthorized');
    throw this.#unauthorized(req, { repository, action, error: check.insufficientScope ? 'insufficient_scope' : undefined });
  }

  /**
   * `/v2/`, the API version check that clients (docker login) use to learn how to authenticate.
   * Credentials sent are checked (a wrong password is 401 here: that is how `docker login` learns
   * it). Without credentials: in token mode always 401 with the challenge, as distribution and
   * Docker Hub answer, so that every client learns the realm (anonymous clients then fetch an
   * anonymous token, which is how dockerd pulls from a mirror needing a token); in Basic mode 200
   * when anonymous clients may pull (dockerd's mirror requests carry no credentials and must keep
   * working), else 401.
   */
  async authorizeBase(req: Request): Promise<void> {
    const address = AuthGuard.address(req);
    const identity = await this.#identify(req, address);
    const anonymousOk = identity.scheme === 'anonymous' && this.#o.challenge === 'basic' && this.#o.gatekeeper.anonymousMayPull(address);
    if (identity.scheme !== 'anonymous' || anonymousOk) {
      this.#count(identity.scheme, 'allowed');
      return;
    }
    this.#count(identity.scheme, 'unauthorized');
    throw this.#unauthorized(req, {});
  }

  async #identify(req: Request, address: string, repository?: string, action?: Action): Promise<Identity> {
    const identity = await this.#o.gatekeeper.identify(req.headers.authorization, address);
    if (!('failure' in identity)) return identity;
    throw this.failure(req, identity, { repository, action });
  }

  /** The refusal for a failed authentication (counted). */
  failure(req: Request, f: AuthFailure, at: { repository?: string; action?: Action }, scheme: AuthScheme = f.scheme): RegistryError {
    if (f.failure === 'rate-limited') {
      this.#count(scheme, 'rate_limited');
      req.ctx?.log.warn('login refused: too many failed logins', { retryAfterSeconds: f.retryAfterSeconds });
      return refusal('TOOMANYREQUESTS', null, { message: 'too many failed logins: try again later', headers: { 'Retry-After': String(f.retryAfterSeconds) } });
    }
    this.#count(scheme, 'unauthorized');
    req.ctx?.log.info('authentication failed', { scheme, reason: f.failure === 'invalid-token' ? `token ${f.problem}` : 'invalid credentials' });
    return this.#unauthorized(req, { ...at, error: f.failure === 'invalid-token' ? 'invalid_token' : undefined });
  }

  /** 401 with the challenge; the token endpoint's own 401 challenges Basic (it takes a user and password). */
  #unauthorized(req: Request, at: { repository?: string; action?: Action; error?: string }, scheme = this.#o.challenge): RegistryError {
    const headers = { 'WWW-Authenticate': this.challenge(req, at, scheme) };
    const detail = at.repository ? { repository: at.repository, action: at.action } : null;
    return refusal('UNAUTHORIZED', detail, { headers, message: 'authentication required' });
  }

  challenge(req: Request, at: { repository?: string; action?: Action; error?: string }, scheme = this.#o.challenge): string {
    if (scheme === 'basic') return `Basic realm=${quote(this.#o.gatekeeper.service)}`;
    const parts = [`realm=${quote(this.realm(req))}`, `service=${quote(this.#o.gatekeeper.service)}`];
    if (at.repository && at.action) parts.push(`scope=${quote(formatScope(at.repository, at.action === 'push' ? ['pull', 'push'] : [at.action]))}`);
    if (at.error) parts.push(`error=${quote(at.error)}`);
    return `Bearer ${parts.join(',')}`;
  }

  /** The token endpoint's refusal of a user and password: 401 with a Basic challenge. */
  basicUnauthorized(req: Request): RegistryError {
    return this.#unauthorized(req, {}, 'basic');
  }

  count(scheme: AuthScheme, result: AuthResult): void {
    this.#count(scheme, result);
  }

  #count(scheme: AuthScheme, result: AuthResult): void {
    this.#o.metrics.authRequest(scheme, result);
  }
}

function quote(s: string): string {
  return `"${s.replace(/["\\]/g, '\\$&')}"`;
}
