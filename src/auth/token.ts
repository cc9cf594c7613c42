import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, randomUUID, sign, verify, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync, linkSync } from 'node:fs';
import { join } from 'node:path';
import type { Action } from './policy.js';
import type { Access } from './scope.js';

/**
 * Bearer tokens of hubcache's own token endpoint (Docker token authentication): compact JWTs signed
 * ES256 (ECDSA P-256, `ieee-p1363` signatures as JWS wants them) with node:crypto. Clients treat
 * them as opaque; only hubcache verifies them, so the header carries a `kid` of our choosing (a
 * digest of the public key), not distribution's libtrust fingerprint.
 */
export interface TokenClaims {
  readonly iss: string;
  /** The user name; empty for an anonymous token. */
  readonly sub: string;
  readonly aud: string;
  readonly exp: number;
  readonly nbf: number;
  readonly iat: number;
  readonly jti: string;
  readonly access: readonly Access[];
}

/** A refresh token (OAuth2 `refresh_token`, issued for `access_type=offline`): who, and which password it was issued against. */
export interface RefreshClaims {
  readonly iss: string;
  readonly sub: string;
  readonly aud: string;
  readonly exp: number;
  readonly iat: number;
  readonly jti: string;
  readonly typ: 'refresh';
  /** A digest of the user's htpasswd entry when issued: a changed password revokes the token. */
  readonly pwd: string;
}

export type TokenProblem = 'malformed' | 'signature' | 'expired' | 'not-yet-valid' | 'audience' | 'type';

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export interface TokenSignerOptions {
  readonly key: KeyObject;
  /** `iss` and `aud` of every token: the `service` of the challenge. */
  readonly service: string;
  readonly now?: () => number;
}

export class TokenSigner {
  readonly #key: KeyObject;
  readonly #public: KeyObject;
  readonly #kid: string;
  /** The JWS header, the same for every token: encoded once. */
  readonly #head: string;
  readonly service: string;
  readonly #now: () => number;

  constructor(opts: TokenSignerOptions) {
    this.#key = opts.key;
    this.#public = createPublicKey(opts.key);
    this.#kid = b64url(this.#public.export({ format: 'der', type: 'spki' }).subarray(-32));
    this.#head = b64url(JSON.stringify({ typ: 'JWT', alg: 'ES256', kid: this.#kid }));
    this.service = opts.service;
    this.#now = opts.now ?? Date.now;
  }

  /** Seconds since the epoch, the unit of JWT times. */
  nowSeconds(): number {
    return Math.floor(this.#now() / 1000);
  }

  #sign(claims: object): string {
    const body = b64url(JSON.stringify(claims));
    const sig = sign('sha256', Buffer.from(`${this.#head}.${body}`), { key: this.#key, dsaEncoding: 'ieee-p1363' });
    return `${this.#head}.${body}.${b64url(sig)}`;
  }

  issueAccess(subject: string, access: readonly Access[], ttlSeconds: number): { token: string; claims: TokenClaims } {
    const iat = this.nowSeconds();
    const claims: TokenClaims = { iss: this.service, sub: subject, aud: this.service, exp: iat + ttlSeconds, nbf: iat - 1, iat, jti: randomUUID(), access };
    return { token: this.#sign(claims), claims };
  }

  issueRefresh(subject: string, passwordDigest: string, ttlSeconds: number): string {
    const iat = this.nowSeconds();
    const claims: RefreshClaims = { iss: this.service, sub: subject, aud: this.service, exp: iat + ttlSeconds, iat, jti: randomUUID(), typ: 'refresh', pwd: passwordDigest };
    return this.#sign(claims);
  }

  #verify(token: string): { claims: Record<string, unknown> } | { problem: TokenProblem } {
    const parts = token.split('.');
    if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]*$/.test(p))) return { problem: 'malformed' };
    const [head, body, sig] = parts as [string, string, string];
    let header: { alg?: unknown };
    let claims: Record<string, unknown>;
    try {
      header = JSON.parse(Buffer.from(head, 'base64url').toString('utf8'));
      claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
    } catch {
      return { problem: 'malformed' };
    }
    if (header.alg !== 'ES256' || typeof claims !== 'object' || claims === null) return { problem: 'malformed' };
    const signature = Buffer.from(sig, 'base64url');
    if (signature.length !== 64 || !verify('sha256', Buffer.from(`${head}.${body}`), { key: this.#public, dsaEncoding: 'ieee-p1363' }, signature)) return { problem: 'signature' };
    if (claims.aud !== this.service || claims.iss !== this.service) return { problem: 'audience' };
    const now = this.nowSeconds();
    if (typeof claims.exp !== 'number' || claims.exp <= now) return { problem: 'expired' };
    if (typeof claims.nbf === 'number' && claims.nbf > now + 60) return { problem: 'not-yet-valid' };
    return { claims };
  }

  /** An access token's claims, or why it is refused (a refresh token is not an access token). */
  verifyAccess(token: string): { claims: TokenClaims } | { problem: TokenProblem } {
    const r = this.#verify(token);
    if ('problem' in r) return r;
    if (r.claims.typ !== undefined || !Array.isArray(r.claims.access) || typeof r.claims.sub !== 'string') return { problem: 'type' };
    return { claims: r.claims as unknown as TokenClaims };
  }

  verifyRefresh(token: string): { claims: RefreshClaims } | { problem: TokenProblem } {
    const r = this.#verify(token);
    if ('problem' in r) return r;
    if (r.claims.typ !== 'refresh' || typeof r.claims.sub !== 'string' || typeof r.claims.pwd !== 'string') return { problem: 'type' };
    return { claims: r.claims as unknown as RefreshClaims };
  }
}

/** Whether a token's access claim covers `action` on `name`. */
export function tokenAllows(claims: TokenClaims, name: string, action: Action): boolean {
  return claims.access.some((a) => a.type === 'repository' && a.name === name && a.actions.includes(action));
}

/**
 * The signing key, generated on first start and kept in the store (`<dir>/token-signing-key.pem`,
 * mode 0600): tokens stay valid across restarts. Created atomically: written under a temporary
 * name and link(2)ed into place, so that two processes starting at once agree on one key and
 * nobody reads a half-written file.
 */
export function loadOrCreateSigningKey(dir: string): { key: KeyObject; created: boolean } {
  const path = join(dir, 'token-signing-key.pem');
  try {
    return { key: createPrivateKey(readFileSync(path, 'utf8')), created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot read the token signing key ${path}: ${(err as Error).message}`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' });
  const tmp = join(dir, `.token-signing-key.${randomBytes(6).toString('hex')}.tmp`);
  writeFileSync(tmp, pem, { mode: 0o600, flag: 'wx', flush: true });
  try {
    linkSync(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // Another process created it first: use theirs.
    return { key: createPrivateKey(readFileSync(path, 'utf8')), created: false };
  } finally {
    rmSync(tmp, { force: true });
  }
  return { key: privateKey, created: true };
}
