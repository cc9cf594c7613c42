/**
 * The "Docker Hub" hubcache talks to in tests: a reverse proxy in front of distribution that
 * records every request, adds Docker Hub's rate-limit headers, can redirect blob GETs to a fake
 * CDN (like Docker Hub's 307 to Cloudflare), and injects faults on demand.
 *
 * Timestamps (`startedAt`, `headersAt`, `endedAt`) are `performance.now()` values, so tests can
 * compare them with their own `performance.now()` readings.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createReadStream, statSync } from 'node:fs';
import {
  Agent,
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';

export type RequestKind = 'ping' | 'manifest' | 'blob' | 'tags' | 'upload' | 'other';
/** Which server received the request: the registry front or the fake CDN. */
export type Via = 'front' | 'cdn';
export type FaultType = FaultAction['type'];

/** One request as seen by the front or the CDN. Mutated as the response progresses. */
export interface UpstreamRequest {
  /** Increasing across front and CDN. */
  id: number;
  via: Via;
  method: string;
  /** Path without query, e.g. /v2/library/alpine/blobs/sha256:… or /cdn/sha256:… */
  path: string;
  /** Path with query (e.g. `?ns=docker.io`). */
  url: string;
  kind: RequestKind;
  repo?: string;
  /** Manifest tag/digest as requested. */
  reference?: string;
  /** Blob digest, or the manifest reference when it is a digest. */
  digest?: string;
  /** The `Range` header, if any. */
  rangeHeader?: string;
  hadAuthorization: boolean;
  authorization?: string;
  /** The Bearer token had expired (by its `exp`); it was not forwarded, so the registry answered 401. */
  expiredToken?: boolean;
  headers: IncomingHttpHeaders;
  /** Status sent to the client; undefined if none was (reset, or still waiting). */
  status?: number;
  /** Fault applied to this request, if any. */
  fault?: FaultType;
  /** Body bytes written to the client. */
  bytesSent: number;
  /**
   * How the exchange ended: 'complete' (whole body sent), 'truncated' / 'reset' (by a fault),
   * 'aborted' (client went away or the server was closed/downed mid-way).
   */
  outcome?: 'complete' | 'truncated' | 'reset' | 'aborted';
  startedAt: number;
  headersAt?: number;
  endedAt?: number;
}

/** Selects requests (for counting, waiting and scoping faults). Every given field must match. */
export interface RequestMatch {
  method?: string | string[];
  kind?: RequestKind | RequestKind[];
  via?: Via;
  repo?: string;
  reference?: string;
  digest?: string;
  status?: number | number[];
  hadAuthorization?: boolean;
  hasRange?: boolean;
  /** Only requests that have finished (outcome set). */
  ended?: boolean;
  /** A fault type, or true/false for "any fault"/"no fault". */
  fault?: FaultType | boolean;
  /** Extra condition. */
  test?: (r: UpstreamRequest) => boolean;
}

/**
 * What a fault does. 'status', 'rateLimit', 'reset', 'delay' and `stall` with `beforeHeaders` act
 * on arrival (before anything is forwarded). 'truncate', 'stall', 'wrongBytes', 'slow' and 'rate' act on a
 * response body and are only used up by a GET answered 200/206 with a body (so a 401 or a 307
 * redirect never consumes them: with the CDN on they hit the CDN's response).
 */
export type FaultAction =
  /** Answer this status with an OCI error body (or `body`). */
  | { type: 'status'; status: number; code?: string; message?: string; headers?: Record<string, string>; body?: string }
  /** 429 TOOMANYREQUESTS with ratelimit-remaining 0 and retry-after. */
  | { type: 'rateLimit'; retryAfter?: number }
  /** Destroy the connection with a TCP RST before any response. */
  | { type: 'reset' }
  /** Wait `ms` before handling the request normally. */
  | { type: 'delay'; ms: number }
  /** Send the real headers (Content-Length included), then close the socket after `afterBytes` body bytes. */
  | { type: 'truncate'; afterBytes: number }
  /**
   * Send headers and `afterBytes` (default 0) body bytes, then hang until the fault is cleared
   * (then 'resume' sending, default, or 'destroy' the connection) or the front is closed/downed.
   * With `beforeHeaders`, hang before sending anything.
   */
  | { type: 'stall'; afterBytes?: number; beforeHeaders?: boolean; onClear?: 'resume' | 'destroy' }
  /** Same length, but `count` (default 1) bytes from `offset` (default: the middle) are flipped. */
  | { type: 'wrongBytes'; offset?: number; count?: number }
  /** Throttle: at most `bytesPerInterval` bytes every `intervalMs` (default 10). */
  | { type: 'slow'; bytesPerInterval: number; intervalMs?: number }
  /**
   * A link of this speed: the body is paced so that after t seconds at most bytesPerSecond·t bytes
   * (plus one chunk) have gone out. The bench uses it to stand for a real upstream's bandwidth.
   */
  | { type: 'rate'; bytesPerSecond: number };

/** A fault plus its scope: `when` (default: every request) and `times` (default: unlimited). */
export type FaultSpec = FaultAction & { when?: RequestMatch; times?: number };

/** Returned by inject(): observe and remove a fault. */
export interface FaultHandle {
  readonly spec: FaultSpec;
  /** How many requests it has hit. */
  readonly hits: number;
  /** The requests it hit. */
  readonly requests: UpstreamRequest[];
  /** Resolves with the first request it hits (past or future). */
  hit(timeoutMs?: number): Promise<UpstreamRequest>;
  /** Deactivates the fault; releases responses stalled by it. */
  clear(): void;
}

export interface RateLimitOptions {
  /** Default 100. */
  limit?: number;
  /** Starting remaining count; default = limit. */
  remaining?: number;
  /** Window in seconds; default 21600 (6 h). */
  window?: number;
  /** docker-ratelimit-source value; default 127.0.0.1. */
  source?: string;
  /** Answer 429 to manifest GETs once remaining reaches 0 (like Docker Hub). Default false. */
  enforce?: boolean;
}

/**
 * The network between a client and this upstream, emulated (the bench's "realistic link"): unlike
 * the `delay` and `rate` faults it applies to every exchange of the front and the CDN, whatever
 * faults are injected too.
 * - `latencyMs`: added before each request is answered (a round trip: the request travelling, the
 *   response's first byte coming back), and once more on a connection's first request (the TCP
 *   handshake); a keep-alive connection pays it once per request, a new one twice.
 * - `bytesPerSecond`: the bodies sent on one connection are paced to this rate, like one TCP
 *   stream's share of a link: consecutive responses on a keep-alive connection share the pace,
 *   concurrent connections each get their own.
 */
export interface LinkShape {
  readonly latencyMs?: number;
  readonly bytesPerSecond?: number;
}

export interface UpstreamFrontOptions {
  /** Registry to forward to (http://127.0.0.1:PORT). */
  registryUrl: string;
  /** Add Docker Hub rate-limit headers to manifest responses. */
  rateLimit?: boolean | RateLimitOptions;
  /**
   * Reject expired bearer tokens like Docker Hub does (default true): distribution 2.8 accepts
   * tokens up to 60 s past `exp`, which would hide token-refresh bugs. An expired token is dropped
   * before forwarding, so the registry answers its usual 401 challenge.
   */
  strictTokenExpiry?: boolean;
  /**
   * Redirect successful blob GETs to a fake CDN. The CDN reads bytes from the registry's storage
   * dir via `blobPath`.
   */
  /** Emulated latency and per-connection bandwidth (see LinkShape, setLink()); default none. */
  link?: LinkShape;
  cdn?: {
    blobPath: (digest: string) => string;
    /** Lifetime of signed URLs; default 1200 s. */
    urlTtlSeconds?: number;
    /** Start with redirects on (default true); see setCdnRedirect(). */
    redirect?: boolean;
  };
}

export interface CdnServer {
  readonly url: string;
  readonly port: number;
  /** Requests to the CDN that carried an Authorization header (all answered 400). */
  readonly rejectedAuthorization: UpstreamRequest[];
  /** A signed URL for a blob, as the front puts in its 307 Location. */
  signedUrl(digest: string, ttlSeconds?: number): string;
  /** Stop accepting connections (connection refused) and drop open ones. */
  down(): Promise<void>;
  /** Listen again on the same port. */
  up(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

function stripHopByHop(h: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

/** Classifies a registry path. The repo name is everything between /v2/ and the last /manifests|blobs|tags/. */
export function classifyPath(path: string): { kind: RequestKind; repo?: string; reference?: string; digest?: string } {
  if (path === '/v2/' || path === '/v2') return { kind: 'ping' };
  const m = /^\/v2\/(.+)\/(manifests|blobs|tags)\/(.*)$/.exec(path);
  if (!m) return { kind: 'other' };
  const [, repo, what, rest] = m as unknown as [string, string, string, string];
  if (what === 'manifests') return { kind: 'manifest', repo, reference: rest, digest: rest.includes(':') ? rest : undefined };
  if (what === 'tags') return { kind: rest === 'list' ? 'tags' : 'other', repo };
  if (rest === 'uploads' || rest.startsWith('uploads/')) return { kind: 'upload', repo };
  return { kind: 'blob', repo, digest: rest };
}

const asArray = <T>(x: T | T[]) => (Array.isArray(x) ? x : [x]);

/** Does `r` satisfy every field of `m`? */
export function matches(r: UpstreamRequest, m: RequestMatch = {}): boolean {
  if (m.method && !asArray(m.method).some((x) => x.toUpperCase() === r.method)) return false;
  if (m.kind && !asArray(m.kind).includes(r.kind)) return false;
  if (m.via && m.via !== r.via) return false;
  if (m.repo !== undefined && m.repo !== r.repo) return false;
  if (m.reference !== undefined && m.reference !== r.reference) return false;
  if (m.digest !== undefined && m.digest !== r.digest) return false;
  if (m.status !== undefined && (r.status === undefined || !asArray(m.status).includes(r.status))) return false;
  if (m.hadAuthorization !== undefined && m.hadAuthorization !== r.hadAuthorization) return false;
  if (m.hasRange !== undefined && m.hasRange !== (r.rangeHeader !== undefined)) return false;
  if (m.ended !== undefined && m.ended !== (r.outcome !== undefined)) return false;
  if (m.fault !== undefined) {
    if (typeof m.fault === 'boolean' ? m.fault !== (r.fault !== undefined) : m.fault !== r.fault) return false;
  }
  if (m.test && !m.test(r)) return false;
  return true;
}

const PRE_FAULTS = new Set<FaultType>(['status', 'rateLimit', 'reset', 'delay']);
const isPreFault = (f: FaultSpec) => PRE_FAULTS.has(f.type) || (f.type === 'stall' && f.beforeHeaders === true);

interface ActiveFault {
  spec: FaultSpec;
  hits: number;
  requests: UpstreamRequest[];
  cleared: boolean;
  /** Stalled responses waiting for clear(): resolve('resume'|'destroy'). */
  stalls: Set<(how: 'resume' | 'destroy') => void>;
  hitWaiters: Array<(r: UpstreamRequest) => void>;
}

/** Thrown inside a handler when the front is shutting the exchange down. */
class Aborted extends Error {}

/**
 * The front. Events: 'request' (UpstreamRequest, on arrival), 'response' (headers sent),
 * 'end' (finished, any outcome: `endedAt` is when the last body byte was handed to the socket),
 * 'fault' (UpstreamRequest, FaultSpec).
 */
export class UpstreamFront extends EventEmitter {
  /** Every request to the front and the CDN, in arrival order. */
  readonly requests: UpstreamRequest[] = [];
  /** The fake CDN, when enabled. */
  cdn?: CdnServer;
  private readonly registry: URL;
  private readonly agent = new Agent({ keepAlive: true });
  private readonly server: Server;
  private cdnServer?: Server;
  private port = 0;
  private cdnPort = 0;
  private nextId = 1;
  private faults: ActiveFault[] = [];
  private rl: Required<RateLimitOptions> | undefined;
  private readonly cdnSecret = randomBytes(32);
  private readonly cdnOpts?: UpstreamFrontOptions['cdn'];
  /** Released on close()/down(): every wait (stall, slow, delay) races it. */
  private shutdown = new AbortController();
  private redirect = false;
  private strictExpiry: boolean;
  private cdnShutdown = new AbortController();
  private waiters = new Set<() => void>();
  private closed = false;
  private link: LinkShape = {};
  /** Per connection: when the link is free again (performance.now()), for pacing; whether it has served a request. */
  private readonly conns = new WeakMap<Socket, { busyUntil: number; served: boolean }>();

  constructor(opts: UpstreamFrontOptions) {
    super();
    this.registry = new URL(opts.registryUrl);
    this.cdnOpts = opts.cdn;
    this.setRateLimit(opts.rateLimit ?? false);
    this.redirect = opts.cdn !== undefined && opts.cdn.redirect !== false;
    this.strictExpiry = opts.strictTokenExpiry ?? true;
    this.link = opts.link ?? {};
    this.server = createServer((req, res) => this.dispatch(req, res, 'front'));
    if (opts.cdn) this.cdnServer = createServer((req, res) => this.dispatch(req, res, 'cdn'));
    // Re-check waitFor() conditions whenever a record changes.
    for (const ev of ['request', 'response', 'end']) this.on(ev, () => this.waiters.forEach((w) => w()));
  }

  /** Base URL of the front: what hubcache uses as its upstream. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** host:port of the front, for image references. */
  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Starts listening on free loopback ports (front and CDN). */
  async listen(): Promise<void> {
    this.port = await listenOn(this.server, 0);
    if (this.cdnServer) {
      this.cdnPort = await listenOn(this.cdnServer, 0);
      const self = this;
      const rejected: UpstreamRequest[] = [];
      this.cdn = {
        get url() {
          return `http://127.0.0.1:${self.cdnPort}`;
        },
        get port() {
          return self.cdnPort;
        },
        rejectedAuthorization: rejected,
        signedUrl: (digest, ttl) => this.signedCdnUrl(digest, ttl),
        down: async () => {
          this.cdnShutdown.abort();
          await closeServer(this.cdnServer!);
          this.cdnShutdown = new AbortController();
        },
        up: async () => void (await listenOn(this.cdnServer!, this.cdnPort)),
      };
    }
  }

  // ---- observation -------------------------------------------------------------------------

  /** Number of recorded requests matching `m`. */
  count(m: RequestMatch = {}): number {
    return this.requests.filter((r) => matches(r, m)).length;
  }

  /** Recorded requests matching `m`. */
  filter(m: RequestMatch = {}): UpstreamRequest[] {
    return this.requests.filter((r) => matches(r, m));
  }

  /** Forgets recorded requests (faults and the rate-limit counter stay). */
  reset(): void {
    this.requests.length = 0;
  }

  /**
   * Resolves with the first `n` requests (past or future) matching `m`; re-checked on every
   * 'request'/'response'/'end', so `{status: 200}` or `{ended: true}` wait for those stages.
   */
  waitForRequests(m: RequestMatch, n = 1, timeoutMs = 15_000): Promise<UpstreamRequest[]> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.filter(m);
        if (found.length >= n) {
          this.waiters.delete(check);
          clearTimeout(timer);
          resolve(found.slice(0, n));
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${n} request(s) matching ${describe(m)}; have:\n${this.dump()}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** Resolves with the first finished request matching `m` (e.g. when a blob body was fully sent). */
  async waitForEnd(m: RequestMatch, timeoutMs?: number): Promise<UpstreamRequest> {
    return (await this.waitForRequests({ ...m, ended: true }, 1, timeoutMs))[0]!;
  }

  /** One line per recorded request, for assertion messages. */
  dump(): string {
    return this.requests
      .map((r) => `#${r.id} ${r.via} ${r.method} ${r.url} → ${r.status ?? '-'}${r.fault ? ` [${r.fault}]` : ''} ${r.outcome ?? '(open)'} ${r.bytesSent}B${r.hadAuthorization ? ' auth' : ''}${r.rangeHeader ? ` ${r.rangeHeader}` : ''}`)
      .join('\n');
  }

  // ---- control -----------------------------------------------------------------------------

  /** Adds a fault; the first active matching fault of the right phase applies to a request. */
  inject(spec: FaultSpec): FaultHandle {
    const f: ActiveFault = { spec, hits: 0, requests: [], cleared: false, stalls: new Set(), hitWaiters: [] };
    this.faults.push(f);
    return {
      spec,
      get hits() {
        return f.hits;
      },
      requests: f.requests,
      hit: (timeoutMs = 15_000) =>
        f.requests[0]
          ? Promise.resolve(f.requests[0])
          : new Promise((resolve, reject) => {
              const t = setTimeout(() => reject(new Error(`fault ${spec.type} not hit within ${timeoutMs} ms; requests:\n${this.dump()}`)), timeoutMs);
              f.hitWaiters.push((r) => (clearTimeout(t), resolve(r)));
            }),
      clear: () => this.clearFault(f),
    };
  }

  /** Removes every fault (stalled responses are released per their onClear). */
  clearFaults(): void {
    for (const f of [...this.faults]) this.clearFault(f);
  }

  /** Turns rate-limit headers on (with options) or off. Resets the remaining counter. */
  setRateLimit(opts: boolean | RateLimitOptions): void {
    if (opts === false) {
      this.rl = undefined;
      return;
    }
    const o = opts === true ? {} : opts;
    const limit = o.limit ?? 100;
    this.rl = { limit, remaining: o.remaining ?? limit, window: o.window ?? 21600, source: o.source ?? '127.0.0.1', enforce: o.enforce ?? false };
  }

  /** Turns blob-GET redirects to the CDN on or off at runtime (the CDN keeps serving either way). Needs the `cdn` option. */
  setCdnRedirect(on: boolean): void {
    if (on && !this.cdnServer) throw new Error('setCdnRedirect: front started without the cdn option');
    this.redirect = on;
  }

  /** Sets (or, with undefined, removes) the emulated link for exchanges that start from now on. */
  setLink(link: LinkShape | undefined): void {
    this.link = link ?? {};
  }

  /** Turns strict `exp` checking of bearer tokens on or off (see UpstreamFrontOptions.strictTokenExpiry). */
  setStrictTokenExpiry(on: boolean): void {
    this.strictExpiry = on;
  }

  /** Are blob GETs currently redirected to the CDN? */
  get cdnRedirect(): boolean {
    return this.redirect;
  }

  /** Remaining pulls in the emulated window (undefined when rate limiting is off). */
  get rateLimitRemaining(): number | undefined {
    return this.rl?.remaining;
  }

  /** Closes the front's listening socket and drops its connections: clients get ECONNREFUSED until up(). */
  async down(): Promise<void> {
    this.shutdown.abort();
    await closeServer(this.server);
    this.shutdown = new AbortController();
  }

  /** Listens again on the same port. */
  async up(): Promise<void> {
    await listenOn(this.server, this.port);
  }

  /** Stops front and CDN, releases stalls, drops connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.shutdown.abort();
    this.cdnShutdown.abort();
    for (const f of this.faults) for (const s of f.stalls) s('destroy');
    await Promise.all([closeServer(this.server), this.cdnServer ? closeServer(this.cdnServer) : undefined]);
    this.agent.destroy();
  }

  // ---- internals ---------------------------------------------------------------------------

  private clearFault(f: ActiveFault) {
    f.cleared = true;
    this.faults = this.faults.filter((x) => x !== f);
    const how = f.spec.type === 'stall' ? (f.spec.onClear ?? 'resume') : 'resume';
    for (const s of f.stalls) s(how);
    f.stalls.clear();
  }

  /** Finds, uses up and records the first active fault of the phase matching `rec`. */
  private takeFault(rec: UpstreamRequest, phase: 'pre' | 'body'): ActiveFault | undefined {
    const f = this.faults.find((x) => !x.cleared && isPreFault(x.spec) === (phase === 'pre') && matches(rec, x.spec.when));
    if (!f) return undefined;
    f.hits++;
    f.requests.push(rec);
    if (f.spec.times !== undefined && f.hits >= f.spec.times) {
      // Used up: no longer matches, but keep it clearable (a stall may still be waiting on it).
      this.faults = this.faults.filter((x) => x !== f);
    }
    rec.fault = f.spec.type;
    this.emit('fault', rec, f.spec);
    for (const w of f.hitWaiters.splice(0)) w(rec);
    return f;
  }

  private signedCdnUrl(digest: string, ttlSeconds?: number): string {
    const expires = Math.floor(Date.now() / 1000) + (ttlSeconds ?? this.cdnOpts?.urlTtlSeconds ?? 1200);
    const sig = createHmac('sha256', this.cdnSecret).update(`${digest}\n${expires}`).digest('hex');
    return `http://127.0.0.1:${this.cdnPort}/cdn/${digest}?expires=${expires}&sig=${sig}`;
  }

  private checkCdnSignature(digest: string, q: URLSearchParams): boolean {
    const expires = Number(q.get('expires'));
    const sig = Buffer.from(q.get('sig') ?? '', 'hex');
    const want = createHmac('sha256', this.cdnSecret).update(`${digest}\n${expires}`).digest();
    return sig.length === want.length && timingSafeEqual(sig, want) && expires >= Date.now() / 1000;
  }

  private dispatch(req: IncomingMessage, res: ServerResponse, via: Via) {
    const u = new URL(req.url ?? '/', 'http://x');
    const cls = via === 'cdn' ? classifyCdn(u.pathname) : classifyPath(u.pathname);
    const rec: UpstreamRequest = {
      id: this.nextId++,
      via,
      method: req.method ?? 'GET',
      path: u.pathname,
      url: req.url ?? '/',
      ...cls,
      rangeHeader: req.headers.range,
      hadAuthorization: req.headers.authorization !== undefined,
      authorization: req.headers.authorization,
      headers: req.headers,
      bytesSent: 0,
      startedAt: performance.now(),
    };
    if (via === 'front' && this.strictExpiry && bearerExpired(req.headers.authorization)) rec.expiredToken = true;
    this.requests.push(rec);
    this.emit('request', rec);
    const signal = via === 'cdn' ? this.cdnShutdown.signal : this.shutdown.signal;
    const handler = via === 'cdn' ? this.handleCdn(req, res, rec, u, signal) : this.handleFront(req, res, rec, u, signal);
    handler
      .catch((err: unknown) => {
        if (!(err instanceof Aborted) && !res.headersSent && !res.destroyed) {
          this.sendError(res, rec, 502, 'UNAVAILABLE', `front: ${String(err)}`);
          return;
        }
        res.destroy();
        rec.outcome ??= 'aborted';
      })
      .finally(() => this.finish(rec));
  }

  private finish(rec: UpstreamRequest) {
    rec.outcome ??= 'aborted';
    rec.endedAt ??= performance.now();
    this.emit('end', rec);
  }

  private markHeaders(res: ServerResponse, rec: UpstreamRequest, status: number) {
    rec.status = status;
    rec.headersAt = performance.now();
    res.flushHeaders();
    this.emit('response', rec);
  }

  private sendError(res: ServerResponse, rec: UpstreamRequest, status: number, code: string, message: string, extra: OutgoingHttpHeaders = {}, body?: string) {
    const data = Buffer.from(body ?? JSON.stringify({ errors: [{ code, message, detail: null }] }));
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': data.length, 'docker-distribution-api-version': 'registry/2.0', ...extra });
    this.markHeaders(res, rec, status);
    res.end(data);
    rec.bytesSent = data.length;
    rec.outcome = 'complete';
  }

  private rateLimitHeaders(remaining: number): OutgoingHttpHeaders {
    const rl = this.rl!;
    return {
      'ratelimit-limit': `${rl.limit};w=${rl.window}`,
      'ratelimit-remaining': `${Math.max(0, remaining)};w=${rl.window}`,
      'docker-ratelimit-source': rl.source,
    };
  }

  private sendTooManyRequests(res: ServerResponse, rec: UpstreamRequest, retryAfter: number) {
    const extra = { ...(this.rl ? this.rateLimitHeaders(0) : { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '0;w=21600', 'docker-ratelimit-source': '127.0.0.1' }), 'retry-after': String(retryAfter) };
    this.sendError(res, rec, 429, 'TOOMANYREQUESTS', 'You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limits', extra);
  }

  /** Applies an arrival-phase fault. Returns true when the request was answered (or killed). */
  private async applyPreFault(f: ActiveFault, req: IncomingMessage, res: ServerResponse, rec: UpstreamRequest, signal: AbortSignal): Promise<boolean> {
    const s = f.spec;
    switch (s.type) {
      case 'status':
        this.sendError(res, rec, s.status, s.code ?? (s.status >= 500 ? 'UNAVAILABLE' : 'UNKNOWN'), s.message ?? `injected ${s.status}`, s.headers, s.body);
        return true;
      case 'rateLimit':
        this.sendTooManyRequests(res, rec, s.retryAfter ?? 60);
        return true;
      case 'reset':
        req.socket.resetAndDestroy();
        rec.outcome = 'reset';
        return true;
      case 'delay':
        await sleep(s.ms, signal, res);
        return false;
      case 'stall': {
        const how = await this.stallUntilCleared(f, signal, res);
        if (how === 'destroy') throw new Aborted();
        return false;
      }
      default:
        return false;
    }
  }

  private stallUntilCleared(f: ActiveFault, signal: AbortSignal, res: ServerResponse): Promise<'resume' | 'destroy'> {
    if (f.cleared) return Promise.resolve(f.spec.type === 'stall' && f.spec.onClear === 'destroy' ? 'destroy' : 'resume');
    return new Promise((resolve) => {
      const done = (how: 'resume' | 'destroy') => {
        f.stalls.delete(done);
        signal.removeEventListener('abort', onAbort);
        res.off('close', onAbort);
        resolve(how);
      };
      const onAbort = () => done('destroy');
      f.stalls.add(done);
      signal.addEventListener('abort', onAbort);
      res.once('close', onAbort);
    });
  }

  private async handleFront(req: IncomingMessage, res: ServerResponse, rec: UpstreamRequest, u: URL, signal: AbortSignal): Promise<void> {
    await this.linkLatency(req, res, signal);
    const pre = this.takeFault(rec, 'pre');
    if (pre && (await this.applyPreFault(pre, req, res, rec, signal))) return;

    if (this.rl?.enforce && rec.kind === 'manifest' && rec.method === 'GET' && this.rl.remaining <= 0) {
      return this.sendTooManyRequests(res, rec, 3600);
    }

    if (this.redirect && rec.kind === 'blob' && rec.method === 'GET') {
      // Like Docker Hub: an authorized blob GET is answered with a redirect to a signed CDN URL.
      // Ask the registry with a HEAD first (same Authorization) so auth errors and 404s pass through.
      const head = await this.forward(req, rec, 'HEAD', u, signal);
      head.resume();
      if (head.statusCode === 200) {
        const location = this.signedCdnUrl(rec.digest!);
        res.writeHead(307, { location, 'content-type': 'text/html; charset=utf-8', 'content-length': 0, 'docker-distribution-api-version': 'registry/2.0' });
        this.markHeaders(res, rec, 307);
        res.end();
        rec.outcome = 'complete';
        return;
      }
    }

    const up = await this.forward(req, rec, rec.method, u, signal);
    const status = up.statusCode ?? 502;
    const headers = stripHopByHop(up.headers);
    if (this.rl && rec.kind === 'manifest' && status >= 200 && status < 300) {
      // Only a manifest GET counts as a pull; HEAD shows the headroom without spending it.
      if (rec.method === 'GET') this.rl.remaining = Math.max(0, this.rl.remaining - 1);
      Object.assign(headers, this.rateLimitHeaders(this.rl.remaining));
    }
    res.writeHead(status, headers);
    this.markHeaders(res, rec, status);
    const hasBody = rec.method !== 'HEAD' && status !== 204 && status !== 304;
    const bodyFault = hasBody && rec.method === 'GET' && (status === 200 || status === 206) ? this.takeFault(rec, 'body') : undefined;
    const len = Number(up.headers['content-length']);
    await this.pump(hasBody ? up : undefined, res, rec, bodyFault, Number.isFinite(len) ? len : undefined, signal);
  }

  /** Sends the request to the registry, streaming the request body; keeps the client's Host so upload Locations point at the front. */
  private forward(req: IncomingMessage, rec: UpstreamRequest, method: string, u: URL, signal: AbortSignal): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const headers = stripHopByHop(req.headers);
      if (rec.expiredToken) delete headers.authorization;
      if (method === 'HEAD') delete headers['content-length'];
      const out = httpRequest({ host: this.registry.hostname, port: this.registry.port, method, path: u.pathname + u.search, headers, agent: this.agent, signal }, resolve);
      out.on('error', reject);
      if (method === req.method && method !== 'GET' && method !== 'HEAD') req.pipe(out);
      else out.end();
    });
  }

  private async handleCdn(req: IncomingMessage, res: ServerResponse, rec: UpstreamRequest, u: URL, signal: AbortSignal): Promise<void> {
    if (rec.hadAuthorization) {
      // S3/CloudFront answer this when a signed URL also carries a header token; the token must never reach the CDN.
      this.cdn!.rejectedAuthorization.push(rec);
      const xml = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified</Message></Error>';
      return this.sendRaw(res, rec, 400, 'application/xml', xml);
    }
    await this.linkLatency(req, res, signal);
    const pre = this.takeFault(rec, 'pre');
    if (pre && (await this.applyPreFault(pre, req, res, rec, signal))) return;
    if (rec.kind !== 'blob' || !rec.digest) return this.sendRaw(res, rec, 404, 'text/plain', 'not found');
    if (rec.method !== 'GET' && rec.method !== 'HEAD') return this.sendRaw(res, rec, 405, 'text/plain', 'method not allowed');
    if (!this.checkCdnSignature(rec.digest, u.searchParams)) return this.sendRaw(res, rec, 403, 'application/xml', '<Error><Code>AccessDenied</Code><Message>Request has expired or signature is invalid</Message></Error>');
    let size: number;
    const path = this.cdnOpts!.blobPath(rec.digest);
    try {
      size = statSync(path).size;
    } catch {
      return this.sendRaw(res, rec, 404, 'application/xml', '<Error><Code>NoSuchKey</Code></Error>');
    }
    const range = parseRange(req.headers.range, size);
    if (range === 'unsatisfiable') {
      res.setHeader('content-range', `bytes */${size}`);
      return this.sendRaw(res, rec, 416, 'application/xml', '<Error><Code>InvalidRange</Code></Error>');
    }
    const start = range?.start ?? 0;
    const end = range?.end ?? size - 1;
    const status = range ? 206 : 200;
    const headers: OutgoingHttpHeaders = {
      'content-type': 'application/octet-stream',
      'content-length': end - start + 1,
      'accept-ranges': 'bytes',
      etag: `"${rec.digest}"`,
      'cache-control': 'public, max-age=14400',
    };
    if (range) headers['content-range'] = `bytes ${start}-${end}/${size}`;
    res.writeHead(status, headers);
    this.markHeaders(res, rec, status);
    if (rec.method === 'HEAD' || end < start) return this.pump(undefined, res, rec, undefined, 0, signal);
    const bodyFault = rec.method === 'GET' ? this.takeFault(rec, 'body') : undefined;
    await this.pump(createReadStream(path, { start, end, highWaterMark: 1024 * 1024 }), res, rec, bodyFault, end - start + 1, signal);
  }

  private sendRaw(res: ServerResponse, rec: UpstreamRequest, status: number, type: string, body: string) {
    const data = Buffer.from(body);
    res.writeHead(status, { 'content-type': type, 'content-length': data.length });
    this.markHeaders(res, rec, status);
    res.end(data);
    rec.bytesSent = data.length;
    rec.outcome = 'complete';
  }

  /** The link's latency for this request: one round trip, plus one for a new connection's handshake. */
  private async linkLatency(req: IncomingMessage, res: ServerResponse, signal: AbortSignal): Promise<void> {
    const conn = this.connState(req.socket);
    const first = !conn.served;
    conn.served = true;
    const ms = (this.link.latencyMs ?? 0) * (first ? 2 : 1);
    if (ms > 0) await sleep(ms, signal, res);
  }

  private connState(socket: Socket): { busyUntil: number; served: boolean } {
    let c = this.conns.get(socket);
    if (!c) this.conns.set(socket, (c = { busyUntil: 0, served: false }));
    return c;
  }

  /**
   * Waits until the link of `res`'s connection has carried `bytes` more (at the link's rate, after
   * what it already carries): a chunk leaves once it would have arrived over that link.
   */
  private async linkPace(res: ServerResponse, bytes: number, first: boolean, signal: AbortSignal): Promise<void> {
    const bps = this.link.bytesPerSecond;
    if (!bps || !res.socket) return;
    const conn = this.connState(res.socket);
    const now = performance.now();
    // A response starts when the link is free (an idle link saves up no credit); within it, the
    // schedule is absolute, so a timer that fired late is caught up with, as the `rate` fault does.
    if (first) conn.busyUntil = Math.max(now, conn.busyUntil);
    conn.busyUntil += (bytes / bps) * 1000;
    // Timers are coarse: sleep only when at least a millisecond ahead; the debt carries over.
    if (conn.busyUntil - now >= 1) await sleep(conn.busyUntil - now, signal, res);
  }

  /**
   * Copies `src` to the client with backpressure, applying a body fault. Every wait also ends
   * when the client goes away or the server is closed/downed, so nothing hangs or leaks.
   */
  private async pump(src: Readable | undefined, res: ServerResponse, rec: UpstreamRequest, f: ActiveFault | undefined, total: number | undefined, signal: AbortSignal): Promise<void> {
    const spec = f?.spec;
    /**
     * Writes with backpressure (waits for 'drain' only when the socket buffer is full). With
     * `flush`, also waits until the bytes are handed to the socket: truncate and stall need the
     * exact K bytes out before they close or hang.
     */
    const write = (buf: Buffer, flush = false) =>
      new Promise<void>((resolve, reject) => {
        if (res.destroyed || signal.aborted) return reject(new Aborted());
        let waiting = true;
        const settle = (err?: Error) => {
          if (!waiting) return;
          waiting = false;
          res.off('close', onClose);
          res.off('drain', onDrain);
          if (err) reject(err);
          else resolve();
        };
        const onClose = () => settle(new Aborted());
        const onDrain = () => settle();
        res.once('close', onClose);
        const ok = res.write(buf, (err) => {
          if (!err) rec.bytesSent += buf.length;
          if (flush) settle(err ? new Aborted() : undefined);
        });
        if (!flush) {
          if (ok) settle();
          else res.once('drain', onDrain);
        }
      });
    try {
      if (!src) {
        res.end();
        rec.outcome = 'complete';
        return;
      }
      const paced = this.link.bytesPerSecond !== undefined && this.link.bytesPerSecond > 0;
      if (!spec && !paced) {
        // No fault: plain pipe, the fast path (per-chunk awaits cost ~40% throughput here).
        src.on('data', (c: Buffer) => (rec.bytesSent += c.length));
        await new Promise<void>((resolve, reject) => {
          const onAbort = () => reject(new Aborted());
          signal.addEventListener('abort', onAbort, { once: true });
          src.once('error', onAbort);
          res.once('close', () => {
            signal.removeEventListener('abort', onAbort);
            if (res.writableFinished) resolve();
            else onAbort();
          });
          src.pipe(res);
        });
        rec.outcome = 'complete';
        rec.endedAt = performance.now();
        return;
      }
      let stalled = false;
      const flipFrom = spec?.type === 'wrongBytes' ? (spec.offset ?? Math.floor((total ?? 2) / 2)) : -1;
      const flipTo = spec?.type === 'wrongBytes' ? flipFrom + (spec.count ?? 1) : -1;
      let pos = 0; // body offset of the chunk being handled
      const paceFrom = performance.now();
      for await (const raw of src) {
        let chunk = raw as Buffer;
        if (paced) await this.linkPace(res, chunk.length, pos === 0, signal);
        if (spec?.type === 'wrongBytes' && pos < flipTo && pos + chunk.length > flipFrom) {
          chunk = Buffer.from(chunk);
          for (let i = Math.max(flipFrom, pos); i < Math.min(flipTo, pos + chunk.length); i++) chunk[i - pos] ^= 0xff;
        }
        if (spec?.type === 'truncate' && pos + chunk.length >= spec.afterBytes) {
          if (spec.afterBytes > pos) await write(chunk.subarray(0, spec.afterBytes - pos), true);
          rec.outcome = 'truncated';
          // Headers promised Content-Length bytes; closing now is what a dropped connection looks like.
          res.socket?.destroy();
          return;
        }
        if (spec?.type === 'stall' && !stalled && pos + chunk.length >= (spec.afterBytes ?? 0)) {
          stalled = true;
          const k = Math.max(0, (spec.afterBytes ?? 0) - pos);
          if (k > 0) await write(chunk.subarray(0, k), true);
          if ((await this.stallUntilCleared(f!, signal, res)) === 'destroy') throw new Aborted();
          chunk = chunk.subarray(k);
        }
        if (spec?.type === 'slow') {
          for (let i = 0; i < chunk.length; i += spec.bytesPerInterval) {
            await write(chunk.subarray(i, i + spec.bytesPerInterval));
            await sleep(spec.intervalMs ?? 10, signal, res);
          }
        } else if (chunk.length > 0) {
          await write(chunk);
        }
        pos += raw.length;
        if (spec?.type === 'rate') {
          const aheadMs = (pos / spec.bytesPerSecond) * 1000 - (performance.now() - paceFrom);
          if (aheadMs >= 1) await sleep(aheadMs, signal, res);
        }
      }
      if (spec?.type === 'stall' && !stalled) {
        // Body shorter than afterBytes: stall at its end, before the response completes.
        if ((await this.stallUntilCleared(f!, signal, res)) === 'destroy') throw new Aborted();
      }
      // 'close' always follows, whether the end was flushed (writableFinished) or the client vanished.
      await new Promise<void>((resolve, reject) => {
        res.once('close', () => (res.writableFinished ? resolve() : reject(new Aborted())));
        res.end();
      });
      rec.outcome = 'complete';
      rec.endedAt = performance.now();
    } finally {
      src?.destroy();
    }
  }
}

/** Is this `Bearer <JWT>` past its `exp`? Non-JWT or unparsable tokens are left to the registry. */
function bearerExpired(h: string | undefined): boolean {
  const m = /^bearer\s+[\w-]+\.([\w-]+)\.[\w-]*$/i.exec(h ?? '');
  if (!m) return false;
  try {
    const exp = (JSON.parse(Buffer.from(m[1]!, 'base64url').toString()) as { exp?: unknown }).exp;
    return typeof exp === 'number' && exp * 1000 <= Date.now();
  } catch {
    return false;
  }
}

function classifyCdn(path: string): { kind: RequestKind; digest?: string } {
  const m = /^\/cdn\/([a-z0-9]+:[a-f0-9]+)$/.exec(path);
  return m ? { kind: 'blob', digest: m[1] } : { kind: 'other' };
}

/** Parses one `bytes=a-b`, `bytes=a-` or `bytes=-n` range. undefined = whole body. */
export function parseRange(h: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  if (!h) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined; // malformed or multi-range: ignored, like most servers
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}

function sleep(ms: number, signal: AbortSignal, res: ServerResponse): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted || res.destroyed) return reject(new Aborted());
    const done = (err?: Error) => {
      clearTimeout(t);
      signal.removeEventListener('abort', onAbort);
      res.off('close', onAbort);
      if (err) reject(err);
      else resolve();
    };
    const onAbort = () => done(new Aborted());
    const t = setTimeout(() => done(), ms);
    signal.addEventListener('abort', onAbort);
    res.once('close', onAbort);
  });
}

function listenOn(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => reject(e);
    server.once('error', onError);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Stops listening and drops every connection, idle or busy, so close resolves at once. */
function closeServer(server: Server): Promise<void> {
  if (!server.listening) return Promise.resolve();
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

function describe(m: RequestMatch): string {
  return JSON.stringify({ ...m, test: m.test ? '[fn]' : undefined });
}

/** Creates and starts a front. */
export async function startUpstreamFront(opts: UpstreamFrontOptions): Promise<UpstreamFront> {
  const front = new UpstreamFront(opts);
  await front.listen();
  return front;
}

