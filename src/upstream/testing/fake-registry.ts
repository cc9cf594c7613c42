/**
 * Loopback fakes for upstream tests (docs/protocol.md#test-infrastructure: real sockets, no sleeps): a registry speaking
 * the distribution API with Bearer or Basic auth, a token service issuing opaque tokens, and a
 * "CDN" that, like Docker Hub's, rejects requests carrying Authorization. Every server records the
 * requests it saw so tests can count and inspect them. Knobs are plain mutable fields.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { sha256Digest, type Digest } from '../../domain/digest.js';

export interface RecordedRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
}

export type Handler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

export class LoopbackServer {
  readonly requests: RecordedRequest[] = [];
  /** TCP connections accepted: fewer than requests when keep-alive reuses sockets. */
  connections = 0;
  readonly #server: Server;
  #url = '';

  private constructor(handler: Handler) {
    this.#server = createServer((req, res) => {
      this.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
      this.#server.emit('recorded', req);
      Promise.resolve(handler(req, res)).catch((err: Error) => {
        if (!res.headersSent) res.writeHead(500).end(err.message);
        else res.destroy(err);
      });
    });
    this.#server.on('connection', () => this.connections++);
  }

  /** Listens on port 0 of `host`; 'localhost' gives a second host name for cross-origin tests. */
  static async start(handler: Handler, host: '127.0.0.1' | 'localhost' = '127.0.0.1'): Promise<LoopbackServer> {
    const s = new LoopbackServer(handler);
    s.#server.listen(0, host);
    await once(s.#server, 'listening');
    s.#url = `http://${host}:${(s.#server.address() as AddressInfo).port}`;
    return s;
  }

  get url(): string {
    return this.#url;
  }

  get host(): string {
    return new URL(this.#url).host;
  }

  count(pred: (r: RecordedRequest) => boolean = () => true): number {
    return this.requests.filter(pred).length;
  }

  /** Resolves when the server has received `n` requests in total. */
  async waitForRequests(n: number): Promise<void> {
    while (this.requests.length < n) await once(this.#server, 'recorded');
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** Tokens issued by a token service and accepted by a registry (shared between the two fakes). */
export class TokenBook {
  readonly #tokens = new Map<string, ReadonlySet<string>>();
  #n = 0;
  issue(scopes: readonly string[]): string {
    const token = `tok-${++this.#n}`;
    this.#tokens.set(token, new Set(scopes));
    return token;
  }
  allows(token: string, scope: string): boolean {
    return this.#tokens.get(token)?.has(scope) ?? false;
  }
  has(token: string): boolean {
    return this.#tokens.has(token);
  }
  /** Simulates tokens expiring or being revoked server-side. */
  revokeAll(): void {
    this.#tokens.clear();
  }
  get issued(): number {
    return this.#n;
  }
}

export interface TokenServiceKnobs {
  expiresIn?: number;
  issuedAt?: string;
  /** When set, Basic credentials are checked (wrong ones → 401); absent credentials are anonymous. */
  credentials?: { username: string; password: string };
  /** Answer every token request with this status. */
  status?: number;
  /** Responses wait for this promise (to hold requests in flight). */
  gate?: Promise<void>;
}

/** A token service handler: `GET …?service=&scope=&scope=` → `{token, expires_in}`. */
export function tokenService(book: TokenBook, knobs: TokenServiceKnobs = {}): Handler {
  return async (req, res) => {
    if (knobs.gate) await knobs.gate;
    const url = new URL(req.url ?? '/', 'http://x');
    if (knobs.status) return void res.writeHead(knobs.status, { 'content-type': 'application/json' }).end('{"errors":[{"code":"DENIED"}]}');
    if (knobs.credentials && req.headers.authorization) {
      const want = `Basic ${Buffer.from(`${knobs.credentials.username}:${knobs.credentials.password}`).toString('base64')}`;
      if (req.headers.authorization !== want) return void res.writeHead(401).end('{"details":"incorrect username or password"}');
    }
    const token = book.issue(url.searchParams.getAll('scope'));
    const doc = { token, expires_in: knobs.expiresIn ?? 300, ...(knobs.issuedAt ? { issued_at: knobs.issuedAt } : {}) };
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc));
  };
}

/** Serves `bytes` honouring `Range: bytes=a-` (206) unless `ignoreRange` (then 200, whole body). */
function serveBytes(req: IncomingMessage, res: ServerResponse, bytes: Buffer, ignoreRange: boolean): void {
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  if (m && !ignoreRange) {
    const start = Number(m[1]);
    if (start >= bytes.length) return void res.writeHead(416, { 'content-range': `bytes */${bytes.length}` }).end();
    res.writeHead(206, { 'content-length': bytes.length - start, 'content-range': `bytes ${start}-${bytes.length - 1}/${bytes.length}`, 'content-type': 'application/octet-stream' });
    return void res.end(req.method === 'HEAD' ? undefined : bytes.subarray(start));
  }
  res.writeHead(200, { 'content-length': bytes.length, 'content-type': 'application/octet-stream' });
  res.end(req.method === 'HEAD' ? undefined : bytes);
}

/** A CDN for redirected blobs (`/cdn/<digest>`): like S3/CloudFront, it refuses an Authorization header. */
export function cdnHandler(blobs: ReadonlyMap<string, Buffer>, knobs: { ignoreRange?: boolean } = {}): Handler {
  return (req, res) => {
    if (req.headers.authorization) return void res.writeHead(400, { 'content-type': 'application/xml' }).end('<Error><Code>InvalidArgument</Code></Error>');
    const bytes = blobs.get(new URL(req.url ?? '/', 'http://x').pathname.replace(/^\/cdn\//, ''));
    if (!bytes) return void res.writeHead(404).end();
    serveBytes(req, res, bytes, knobs.ignoreRange ?? false);
  };
}

function ociError(res: ServerResponse, status: number, code: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify({ errors: [{ code, message: code.toLowerCase() }] }));
}

/** A distribution-API registry. `handle` is its request handler; `/token` is its own token service. */
export class FakeRegistry {
  auth: 'none' | 'bearer' | 'basic' = 'none';
  /** Token realm named in challenges; default: this server's `/token`. */
  realm: string | undefined;
  service = 'fake-registry';
  basicCredentials: { username: string; password: string } | undefined;
  /** Base URL of a CDN to redirect blob GETs/HEADs to (307, as Docker Hub does). */
  blobRedirect: string | undefined;
  ignoreRange = false;
  rateLimit: { limit: number; remaining: number; windowSeconds: number; source: string } | undefined;
  /** Runs first; return true when it answered the request itself (fault injection). */
  hook: ((req: IncomingMessage, res: ServerResponse) => boolean) | undefined;
  readonly tokens: TokenBook;
  readonly tokenKnobs: TokenServiceKnobs = {};
  readonly manifests = new Map<string, { body: Buffer; mediaType: string }>();
  readonly blobs = new Map<string, Buffer>();
  readonly tags = new Map<string, string[]>();
  readonly #tokenService: Handler;

  constructor(tokens = new TokenBook()) {
    this.tokens = tokens;
    this.#tokenService = tokenService(tokens, this.tokenKnobs);
  }

  /** Stores a manifest under its tag (if any) and its digest; returns the digest. */
  putManifest(repo: string, tag: string | undefined, body: Buffer | object, mediaType: string): Digest {
    const bytes = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    const digest = sha256Digest(bytes);
    this.manifests.set(`${repo}@${digest}`, { body: bytes, mediaType });
    if (tag) this.manifests.set(`${repo}@${tag}`, { body: bytes, mediaType });
    return digest;
  }

  putBlob(bytes: Buffer): Digest {
    const digest = sha256Digest(bytes);
    this.blobs.set(digest, bytes);
    return digest;
  }

  readonly handle: Handler = async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/token') return this.#tokenService(req, res);
    if (this.hook?.(req, res)) return;
    const m = /^\/v2\/(?:(.+)\/(manifests|blobs|tags)\/(.+))?$/.exec(url.pathname);
    if (!m) return ociError(res, 404, 'NOT_FOUND');
    const [, repo, what, ref] = m;
    if (!this.#authorized(req, res, repo)) return;
    if (!repo) return void res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    if (what === 'manifests') return this.#manifest(req, res, repo, ref!);
    if (what === 'blobs') return this.#blob(req, res, ref!);
    return this.#tags(res, repo, url);
  };

  #authorized(req: IncomingMessage, res: ServerResponse, repo: string | undefined): boolean {
    if (this.auth === 'none') return true;
    const got = req.headers.authorization ?? '';
    if (this.auth === 'basic') {
      const c = this.basicCredentials;
      if (c && got === `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`) return true;
      ociError(res, 401, 'UNAUTHORIZED', { 'www-authenticate': 'Basic realm="fake"' });
      return false;
    }
    const scope = repo ? `repository:${repo}:pull` : undefined;
    const token = got.startsWith('Bearer ') ? got.slice(7) : '';
    if (token && (scope ? this.tokens.allows(token, scope) : this.tokens.has(token))) return true;
    const realm = this.realm ?? `http://${req.headers.host}/token`;
    const challenge = `Bearer realm="${realm}",service="${this.service}"${scope ? `,scope="${scope}"` : ''}${token ? ',error="invalid_token"' : ''}`;
    ociError(res, 401, 'UNAUTHORIZED', { 'www-authenticate': challenge });
    return false;
  }

  #rateLimitHeaders(): Record<string, string> {
    const r = this.rateLimit;
    if (!r) return {};
    return { 'ratelimit-limit': `${r.limit};w=${r.windowSeconds}`, 'ratelimit-remaining': `${r.remaining};w=${r.windowSeconds}`, 'docker-ratelimit-source': r.source };
  }

  #manifest(req: IncomingMessage, res: ServerResponse, repo: string, ref: string): void {
    const m = this.manifests.get(`${repo}@${ref}`);
    if (!m) return ociError(res, 404, 'MANIFEST_UNKNOWN', this.#rateLimitHeaders());
    res.writeHead(200, {
      'content-type': m.mediaType,
      'content-length': m.body.length,
      'docker-content-digest': sha256Digest(m.body),
      ...this.#rateLimitHeaders(),
    });
    res.end(req.method === 'HEAD' ? undefined : m.body);
  }

  #blob(req: IncomingMessage, res: ServerResponse, digest: string): void {
    const bytes = this.blobs.get(digest);
    if (!bytes) return ociError(res, 404, 'BLOB_UNKNOWN');
    if (this.blobRedirect) return void res.writeHead(307, { location: `${this.blobRedirect}/cdn/${digest}?sig=signed` }).end();
    serveBytes(req, res, bytes, this.ignoreRange);
  }

  #tags(res: ServerResponse, repo: string, url: URL): void {
    const all = [...(this.tags.get(repo) ?? [])].sort();
    if (!this.tags.has(repo)) return ociError(res, 404, 'NAME_UNKNOWN');
    const n = Number(url.searchParams.get('n') ?? all.length);
    const last = url.searchParams.get('last');
    const rest = last ? all.filter((t) => t > last) : all;
    const page = rest.slice(0, n);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (rest.length > n) headers.link = `</v2/${repo}/tags/list?last=${encodeURIComponent(page[page.length - 1]!)}&n=${n}>; rel="next"`;
    res.writeHead(200, headers).end(JSON.stringify({ name: repo, tags: page }));
  }
}
