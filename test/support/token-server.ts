/**
 * A stand-in for auth.docker.io: issues the JWT bearer tokens that distribution's `auth: token`
 * accepts. Tokens are signed with a key generated at start; its self-signed certificate is what
 * distribution gets as `rootcertbundle`.
 */
import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync, randomUUID, sign, timingSafeEqual, type KeyObject } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** One account the token server knows. */
export interface TokenUser {
  username: string;
  password: string;
  /** May this account receive `push` (and `delete`)? Default true. */
  canPush?: boolean;
}

export interface TokenServerOptions {
  /** `service` claimed in the `aud` of every token; distribution must be configured with the same. Default 'hubcache-test-registry'. */
  service?: string;
  /** `iss` claim; distribution's `issuer`. Default 'hubcache-test-token-issuer'. */
  issuer?: string;
  /** Accounts accepted with Basic auth. Default: one pusher ('pusher'/'secret', can push). */
  users?: TokenUser[];
  /** Anonymous requests get `pull` (Docker Hub public repos). When false they get a token with no access, like Docker Hub for a private repo. Default true. */
  anonymousPull?: boolean;
  /** `expires_in` in seconds (and the JWT's `exp - iat`). Default 300, like Docker Hub. */
  expiresIn?: number;
  /** Signature algorithm. Default 'RS256'. */
  algorithm?: 'RS256' | 'ES256';
}

/** A parsed `scope` value, e.g. `repository:library/alpine:pull,push`. */
export interface TokenScope {
  type: string;
  name: string;
  actions: string[];
}

/** What the token server saw for one request. */
export interface TokenRequestRecord {
  method: string;
  url: string;
  service: string | null;
  scopes: TokenScope[];
  /** Raw `Authorization` header, if any. */
  authorization?: string;
  hadBasic: boolean;
  /** Account name the credentials resolved to (undefined for anonymous or rejected). */
  account?: string;
  status: number;
  /** Access granted in the token (empty on rejection). */
  granted: TokenScope[];
}

/** A configured failure: the next matching token requests answer `status`. */
export interface TokenFault {
  status: number;
  /** How many requests it hits; unlimited when omitted. */
  times?: number;
}

export interface TokenServer {
  /** Base URL, e.g. http://127.0.0.1:PORT. */
  readonly url: string;
  /** The realm distribution advertises: url + '/token'. */
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  /** PEM certificate of the signing key (distribution's rootcertbundle). */
  readonly certPath: string;
  /** libtrust key id put in every JWT's `kid` header. */
  readonly keyId: string;
  /** Every request so far, in order. */
  readonly requests: TokenRequestRecord[];
  /** Every Authorization header received, in order. */
  readonly authorizationHeaders: string[];
  /** Counters: all token requests, those with Basic credentials, those answered 401. */
  readonly stats: { requests: number; withBasic: number; anonymous: number; rejected: number; issued: number };
  /** Change `expires_in` for tokens issued from now on. */
  setExpiresIn(seconds: number): void;
  /** Make the next token requests fail (null clears). */
  setFault(fault: TokenFault | null): void;
  /** Sign a token directly (no HTTP), e.g. for a helper that must talk to the registry itself. */
  issueToken(access: TokenScope[], subject?: string): string;
  /** Forget recorded requests and zero the counters. */
  reset(): void;
  /** Emits 'request' (TokenRequestRecord) after each answer. */
  readonly events: EventEmitter;
  close(): Promise<void>;
}

/** libtrust key id of a public key: base32(sha256(DER SPKI)[0:30]) in 12 groups of 4 joined by ':'. Distribution matches JWT `kid` against this. */
export function libtrustKeyId(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  const b32 = base32(createHash('sha256').update(der).digest().subarray(0, 30));
  return b32.match(/.{4}/g)!.join(':');
}

/** RFC 4648 base32, no padding (30 bytes → exactly 48 chars). */
function base32(buf: Buffer): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

/** Parses `repository:NAME:pull,push`. The name may contain ':' (host:port), so split at the first and last colon. */
export function parseScope(s: string): TokenScope | undefined {
  const first = s.indexOf(':');
  const last = s.lastIndexOf(':');
  if (first < 0 || last === first) return undefined;
  return { type: s.slice(0, first), name: s.slice(first + 1, last), actions: s.slice(last + 1).split(',').filter(Boolean) };
}

function parseBasic(h: string | undefined): { user: string; pass: string } | undefined {
  if (!h || !/^basic /i.test(h)) return undefined;
  const decoded = Buffer.from(h.slice(6).trim(), 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return undefined;
  return { user: decoded.slice(0, i), pass: decoded.slice(i + 1) };
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Starts the token server on 127.0.0.1 with a free port. */
export async function startTokenServer(opts: TokenServerOptions = {}): Promise<TokenServer> {
  const service = opts.service ?? 'hubcache-test-registry';
  const issuer = opts.issuer ?? 'hubcache-test-token-issuer';
  const users = opts.users ?? [{ username: 'pusher', password: 'secret', canPush: true }];
  const anonymousPull = opts.anonymousPull ?? true;
  const alg = opts.algorithm ?? 'RS256';
  let expiresIn = opts.expiresIn ?? 300;
  let fault: (TokenFault & { left: number }) | null = null;

  const { privateKey, publicKey } =
    alg === 'RS256' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const keyId = libtrustKeyId(publicKey);

  // Distribution wants a certificate, not a bare key, in rootcertbundle; the openssl CLI makes one.
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-token-'));
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  writeFileSync(keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  await execFileP('openssl', ['req', '-x509', '-new', '-key', keyPath, '-subj', '/CN=hubcache-test-token', '-days', '2', '-out', certPath]);
  readFileSync(certPath); // fail early if openssl wrote nothing

  const requests: TokenRequestRecord[] = [];
  const authorizationHeaders: string[] = [];
  const stats = { requests: 0, withBasic: 0, anonymous: 0, rejected: 0, issued: 0 };
  const events = new EventEmitter();

  const issueToken = (access: TokenScope[], subject = ''): string => {
    const now = Math.floor(Date.now() / 1000);
    const header = { alg, typ: 'JWT', kid: keyId };
    const claims = {
      iss: issuer,
      sub: subject,
      aud: service,
      // A little slack backwards so clock rounding never makes a fresh token "not yet valid".
      nbf: now - 5,
      iat: now,
      exp: now + expiresIn,
      jti: randomUUID(),
      access: access.map((a) => ({ type: a.type, name: a.name, actions: a.actions })),
    };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    // JWS ES256 wants raw r||s, not DER: hence ieee-p1363.
    const sig =
      alg === 'RS256'
        ? sign('sha256', Buffer.from(input), privateKey)
        : sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
    return `${input}.${b64url(sig)}`;
  };

  /** Grants the intersection of what was asked and what the account may do, like Docker Hub: never an error for "not allowed". */
  const grant = (scopes: TokenScope[], account: TokenUser | undefined): TokenScope[] =>
    scopes
      .filter((s) => s.type === 'repository')
      .map((s) => {
        const allowed = account ? (account.canPush === false ? ['pull'] : ['pull', 'push', 'delete', '*']) : anonymousPull ? ['pull'] : [];
        return { ...s, actions: s.actions.filter((a) => allowed.includes(a)) };
      })
      .filter((s) => s.actions.length > 0);

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname !== '/token') return send(res, 404, { errors: [{ code: 'NOT_FOUND', message: 'not found' }] });
    let params = u.searchParams;
    if (req.method === 'POST') {
      // OAuth2 form (containerd tries it first when it has credentials): grant_type=password, scope space-separated.
      let body = '';
      for await (const c of req) body += c;
      params = new URLSearchParams(body);
    } else if (req.method !== 'GET') {
      return send(res, 405, { errors: [{ code: 'UNSUPPORTED', message: 'method not allowed' }] });
    }
    const authorization = req.headers.authorization;
    if (authorization) authorizationHeaders.push(authorization);
    const scopeValues = params.getAll('scope').flatMap((s) => (req.method === 'POST' ? s.split(' ') : [s]));
    const scopes = scopeValues.map(parseScope).filter((s): s is TokenScope => s !== undefined);
    let creds = parseBasic(authorization);
    if (req.method === 'POST' && params.get('grant_type') === 'password') creds = { user: params.get('username') ?? '', pass: params.get('password') ?? '' };
    const rec: TokenRequestRecord = {
      method: req.method ?? 'GET',
      url: req.url ?? '',
      service: params.get('service'),
      scopes,
      authorization,
      hadBasic: creds !== undefined,
      status: 0,
      granted: [],
    };
    stats.requests++;
    if (creds) stats.withBasic++;
    else stats.anonymous++;
    const finish = (status: number, body: unknown) => {
      rec.status = status;
      requests.push(rec);
      send(res, status, body, status === 401 ? { 'www-authenticate': 'Basic realm="hubcache-test-token"' } : {});
      events.emit('request', rec);
    };
    if (fault && fault.left !== 0) {
      fault.left--;
      return finish(fault.status, { errors: [{ code: 'UNAVAILABLE', message: 'injected token server fault' }] });
    }
    let account: TokenUser | undefined;
    if (creds) {
      account = users.find((x) => safeEqual(x.username, creds.user) && safeEqual(x.password, creds.pass));
      if (!account) {
        stats.rejected++;
        return finish(401, { details: 'incorrect username or password' });
      }
      rec.account = account.username;
    }
    if (params.get('service') && params.get('service') !== service) {
      // Docker Hub answers 400 for a wrong service; it means the client did not parse the challenge.
      return finish(400, { details: `unknown service ${params.get('service')}` });
    }
    rec.granted = grant(scopes, account);
    const token = issueToken(rec.granted, account?.username ?? '');
    stats.issued++;
    finish(200, { token, access_token: token, expires_in: expiresIn, issued_at: new Date().toISOString() });
  };

  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err) => {
      if (!res.headersSent) send(res, 500, { details: String(err) });
      else res.destroy();
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    realm: `${url}/token`,
    service,
    issuer,
    certPath,
    keyId,
    requests,
    authorizationHeaders,
    stats,
    events,
    setExpiresIn: (s) => void (expiresIn = s),
    setFault: (f) => void (fault = f ? { ...f, left: f.times ?? -1 } : null),
    issueToken,
    reset: () => {
      requests.length = 0;
      authorizationHeaders.length = 0;
      for (const k of Object.keys(stats) as Array<keyof typeof stats>) stats[k] = 0;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function send(res: ServerResponse, status: number, body: unknown, headers: IncomingHttpHeaders = {}) {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': data.length });
  res.end(data);
}
