import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import type { AuthFailure, Identity } from '../../auth/gatekeeper.js';
import { parseScopes } from '../../auth/scope.js';
import { RegistryError } from '../../domain/errors.js';
import type { AuthScheme } from '../../observability/metrics.js';
import { AuthGuard } from './guard.js';

/**
 * hubcache's token endpoint, `/auth/token` (Docker token authentication; docs/protocol.md):
 *
 * - `GET ?service=&scope=…[&offline_token=true]`, with Basic credentials or none (anonymous: a
 *   token for what anonymous clients may do). Answers `{token, access_token, expires_in,
 *   issued_at[, refresh_token]}`.
 * - `POST` with the OAuth2 form containerd and docker use: `grant_type=password` (`username`,
 *   `password`; `access_type=offline` adds a refresh token) or `grant_type=refresh_token`
 *   (`refresh_token`), plus `service`, `scope` (space-separated), `client_id`. Answers
 *   `{access_token, expires_in, issued_at, scope[, refresh_token]}`.
 *
 * A token grants, of each scope asked for, the actions the user may do (possibly none: the
 * registry then refuses the request with 403, or 401 for anonymous). Wrong credentials: 401 with
 * a Basic challenge; too many failed logins: 429.
 */
export function tokenEndpoint(guard: AuthGuard): Router {
  const router = express.Router();
  const form = express.urlencoded({ extended: false, limit: '16kb', parameterLimit: 50 });

  router.get('/auth/token', async (req: Request, res: Response, next: NextFunction) => {
    req.ctx.route = 'token';
    try {
      const address = AuthGuard.address(req);
      const found = await guard.gatekeeper.identify(req.headers.authorization, address);
      const identity = settle(guard, req, found, found.scheme);
      const issued = guard.gatekeeper.issue(identity, address, parseScopes(all(req.query.scope)), first(req.query.offline_token) === 'true');
      guard.count(identity.scheme, 'allowed');
      sendJson(res, {
        token: issued.token,
        access_token: issued.token,
        expires_in: issued.expiresIn,
        issued_at: issued.issuedAt,
        ...(issued.refreshToken ? { refresh_token: issued.refreshToken } : {}),
      });
    } catch (err) {
      next(err);
    }
  });

  router.post('/auth/token', form, async (req: Request, res: Response, next: NextFunction) => {
    req.ctx.route = 'token';
    try {
      const body = (req.body ?? {}) as Record<string, unknown>;
      const address = AuthGuard.address(req);
      const grant = first(body.grant_type);
      let identity: Identity;
      let scheme: AuthScheme;
      if (grant === 'password') {
        const username = first(body.username);
        const password = first(body.password);
        if (!username || password === undefined) throw new RegistryError('UNAUTHORIZED', null, { message: 'grant_type=password needs username and password', headers: { 'WWW-Authenticate': guard.challenge(req, {}, 'basic') } });
        scheme = 'basic';
        identity = settle(guard, req, await guard.gatekeeper.login(username, password, address), scheme);
      } else if (grant === 'refresh_token') {
        scheme = 'refresh_token';
        identity = settle(guard, req, guard.gatekeeper.refresh(first(body.refresh_token) ?? ''), scheme);
      } else {
        throw new RegistryError('UNSUPPORTED', { grant_type: grant ?? null }, { message: 'grant_type must be password or refresh_token' });
      }
      const scopes = all(body.scope);
      const offline = grant === 'password' && first(body.access_type) === 'offline';
      const issued = guard.gatekeeper.issue(identity, address, parseScopes(scopes), offline);
      guard.count(scheme, 'allowed');
      sendJson(res, {
        access_token: issued.token,
        expires_in: issued.expiresIn,
        issued_at: issued.issuedAt,
        scope: issued.access.map((a) => `repository:${a.name}:${a.actions.join(',')}`).join(' '),
        ...(issued.refreshToken ? { refresh_token: issued.refreshToken } : {}),
      });
    } catch (err) {
      next(err);
    }
  });
  return router;
}

/** The identity, or the refusal: wrong credentials and bad refresh tokens are 401 with a Basic challenge. */
function settle(guard: AuthGuard, req: Request, found: Identity | AuthFailure, scheme: AuthScheme): Identity {
  if (!('failure' in found)) return found;
  if (found.failure === 'rate-limited') throw guard.failure(req, found, {}, scheme);
  guard.count(scheme, 'unauthorized');
  req.ctx.log.info('token refused', { scheme, reason: found.failure === 'invalid-token' ? `token ${found.problem}` : 'invalid credentials' });
  throw guard.basicUnauthorized(req);
}

/**
 * 200 with `body` as JSON, never stored by a cache: the headers express's `res.json` writes
 * (`Content-Type: application/json; charset=utf-8`, `Content-Length`) without its content-type
 * and freshness machinery, one request in every pull of a token client.
 */
function sendJson(res: Response, body: unknown): void {
  const text = JSON.stringify(body);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Pragma', 'no-cache');
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
}

function all(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string');
  return [];
}

function first(v: unknown): string | undefined {
  return all(v)[0];
}
