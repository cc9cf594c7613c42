/**
 * A misbehaving upstream for hardening tests: a FakeRegistry whose behaviour is chosen per
 * repository name. Repositories with a registered behaviour answer the way an attacker (or a broken
 * registry) would — a bad challenge, a wrong content type, a trickling or endless body, a huge tag
 * list — and every other repository behaves like a well-mannered registry, so one server can hold
 * a poisoned repository next to a healthy one (the "one bad repository breaks the others" tests).
 *
 * Behaviours are keyed by a repository name or by a prefix ending in `/` (`evil/` matches
 * `evil/app`). Add a built-in below when more than one test needs it.
 */
import { EventEmitter, once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { sha256Digest } from '../../domain/digest.js';
import { FakeRegistry, LoopbackServer, TokenBook } from './fake-registry.js';

export interface HostileRequest {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** The repository as requested (`evil/app`). */
  readonly repo: string;
  readonly what: 'manifests' | 'blobs' | 'tags';
  /** Tag or digest for manifests and blobs; `list` for tags. */
  readonly ref: string;
  readonly url: URL;
  readonly registry: HostileRegistry;
}

/** Answers the request itself; returns `false` to let the well-mannered registry answer instead. */
export type Behaviour = (r: HostileRequest) => void | boolean | Promise<void | boolean>;

export class HostileRegistry extends FakeRegistry {
  readonly #behaviours = new Map<string, Behaviour>();
  /** Requests per repository (as requested), to show what reached the upstream. */
  readonly hits = new Map<string, number>();
  /** Responses per repository still open: the client (hubcache) neither read them to the end nor left. */
  readonly open = new Map<string, number>();
  readonly #events = new EventEmitter();

  constructor(tokens = new TokenBook()) {
    super(tokens);
    const wellMannered = this.handle;
    (this as { handle: FakeRegistry['handle'] }).handle = async (req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const m = /^\/v2\/(.+)\/(manifests|blobs|tags)\/(.+)$/.exec(url.pathname);
      if (m) {
        const [, repo, what, ref] = m as unknown as [string, string, HostileRequest['what'], string];
        this.hits.set(repo, (this.hits.get(repo) ?? 0) + 1);
        this.open.set(repo, (this.open.get(repo) ?? 0) + 1);
        this.#events.emit('hit', repo);
        res.once('close', () => {
          this.open.set(repo, this.open.get(repo)! - 1);
          this.#events.emit('closed', repo);
        });
        const behaviour = this.behaviourFor(repo);
        if (behaviour && (await behaviour({ req, res, repo, what, ref, url, registry: this })) !== false) return;
      }
      return wellMannered(req, res);
    };
  }

  /** `key` is a repository name, or a prefix ending in `/`. */
  behave(key: string, behaviour: Behaviour): this {
    this.#behaviours.set(key, behaviour);
    return this;
  }

  /** Resolves once no response for `repo` is open: every connection that asked for it closed or was answered. */
  async settled(repo: string): Promise<void> {
    while ((this.open.get(repo) ?? 0) > 0) await once(this.#events, 'closed');
  }

  /** Resolves once `n` requests for `repo` have arrived in total. */
  async hitCount(repo: string, n: number): Promise<void> {
    while ((this.hits.get(repo) ?? 0) < n) await once(this.#events, 'hit');
  }

  behaviourFor(repo: string): Behaviour | undefined {
    const exact = this.#behaviours.get(repo);
    if (exact) return exact;
    for (const [key, b] of this.#behaviours) if (key.endsWith('/') && repo.startsWith(key)) return b;
    return undefined;
  }
}

/** A running HostileRegistry on loopback. */
export interface HostileUpstream {
  readonly registry: HostileRegistry;
  readonly server: LoopbackServer;
  readonly url: string;
  readonly host: string;
  close(): Promise<void>;
}

export async function startHostileUpstream(setup?: (r: HostileRegistry) => void): Promise<HostileUpstream> {
  const registry = new HostileRegistry();
  setup?.(registry);
  const server = await LoopbackServer.start(registry.handle);
  return { registry, server, url: server.url, host: server.host, close: () => server.close() };
}

// ---- built-in behaviours ---------------------------------------------------------------------

/** Every request to the repository gets `401` with this `WWW-Authenticate` value. */
export function challengeWith(header: string | ((r: HostileRequest) => string)): Behaviour {
  return (r) => {
    const value = typeof header === 'string' ? header : header(r);
    r.res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': value }).end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
  };
}

/** Blob requests are redirected (307, as Docker Hub's are to its CDN) to `location`. */
export function redirectBlobsTo(location: string | ((r: HostileRequest) => string)): Behaviour {
  return (r) => {
    if (r.what !== 'blobs') return false;
    r.res.writeHead(307, { location: typeof location === 'string' ? location : location(r) }).end();
  };
}

/** Manifest requests get `body` with this `Content-Type` (and an honest digest and length). */
export function manifestAs(contentType: string, body: Buffer | string): Behaviour {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return (r) => {
    if (r.what !== 'manifests') return false;
    r.res.writeHead(200, { 'content-type': contentType, 'content-length': bytes.length, 'docker-content-digest': sha256Digest(bytes) });
    r.res.end(r.req.method === 'HEAD' ? undefined : bytes);
  };
}

/**
 * The response head at once, then one byte of `body` every `intervalMs`, forever if `body` runs out
 * before the announced length (the connection stays open until the client leaves). When `body`
 * fills the announced length (the default when `announcedLength` is not given but `body` is), the
 * response ends with its last byte: a slow but complete answer.
 */
export function trickle(opts: { what?: HostileRequest['what']; intervalMs: number; contentType?: string; announcedLength?: number; body?: Buffer }): Behaviour {
  return (r) => {
    if (opts.what && r.what !== opts.what) return false;
    const body = opts.body ?? Buffer.from('{"schemaVersion":2,');
    const length = opts.announcedLength ?? (opts.body ? body.length : 1024 * 1024);
    r.res.writeHead(200, { 'content-type': opts.contentType ?? 'application/vnd.oci.image.manifest.v1+json', 'content-length': length });
    if (r.req.method === 'HEAD') return void r.res.end();
    let i = 0;
    const timer = setInterval(() => {
      if (i < body.length) r.res.write(body.subarray(i, i + 1));
      else r.res.write(' ');
      i++;
      if (i >= length) {
        clearInterval(timer);
        r.res.end();
      }
    }, opts.intervalMs);
    r.res.on('close', () => clearInterval(timer));
  };
}

/** A body that never ends: chunked, `chunk` written again whenever the socket drains. */
export function endlessBody(opts: { what?: HostileRequest['what']; contentType?: string; chunk?: Buffer } = {}): Behaviour {
  return (r) => {
    if (opts.what && r.what !== opts.what) return false;
    const chunk = opts.chunk ?? Buffer.alloc(64 * 1024, 0x20);
    r.res.writeHead(200, { 'content-type': opts.contentType ?? 'application/json' });
    if (r.req.method === 'HEAD') return void r.res.end();
    const pump = () => {
      while (!r.res.destroyed && r.res.write(chunk));
    };
    r.res.on('drain', pump);
    pump();
  };
}

/** `tags/list` answers with `count` generated tags in one document, ignoring `n` and `last` (as distribution 2.8 does). */
export function hugeTagList(count: number): Behaviour {
  return (r) => {
    if (r.what !== 'tags') return false;
    r.res.writeHead(200, { 'content-type': 'application/json' });
    r.res.write(`{"name":${JSON.stringify(r.repo)},"tags":[`);
    let i = 0;
    const pump = () => {
      while (i < count && !r.res.destroyed) {
        const parts: string[] = [];
        for (let k = 0; k < 10_000 && i < count; k++, i++) parts.push(`${i > 0 ? ',' : ''}"t${String(count - i).padStart(8, '0')}"`);
        if (!r.res.write(parts.join(''))) return;
      }
      if (!r.res.destroyed) r.res.end(']}');
    };
    r.res.on('drain', pump);
    pump();
  };
}

/** Blob bytes a `BlobTap` serves: `read` returns `n` bytes from `offset`. */
export interface TapSource {
  readonly size: number;
  read(offset: number, n: number): Buffer;
}

/** One blob body a `BlobTap` served, or is serving. */
export interface TappedTransfer {
  readonly repo: string;
  readonly digest: string;
  /** First byte sent (a `Range: bytes=N-` request starts at N). */
  readonly start: number;
  /** Body bytes written so far. */
  sent: number;
  /** How it ended: every byte written, or the client (hubcache) hung up first. Unset while open. */
  outcome?: 'complete' | 'closed';
  readonly ended: Promise<'complete' | 'closed'>;
  /** Lets this body go on past `holdAfter`. */
  release(): void;
}

export interface BlobTapOptions {
  /** Each body is paced to this many bytes a second (in slices every 50 ms); unpaced when unset. */
  bytesPerSecond?: number;
  /** Each body stops after this many bytes until released (`release()`, or the transfer's own). */
  holdAfter?: number;
  /** The bytes of a digest; default: the registry's own blobs. Big generated blobs come from here. */
  source?: (digest: string) => TapSource | undefined;
}

/**
 * Blob GETs answered with a ledger, for tests of what reaches the upstream and benchmarks of slow
 * links: every transfer's progress and end (complete, or closed by the client), with bodies paced
 * and/or held after some bytes. Use as `registry.behave('slow/', tap.behaviour)`. HEADs get the size;
 * `Range: bytes=N-` gets a 206 from N. Other requests go to the well-mannered registry.
 */
export class BlobTap {
  readonly transfers: TappedTransfer[] = [];
  /** Transfers open now, and the most ever open at once. */
  open = 0;
  maxOpen = 0;
  bytesSent = 0;
  #held: boolean;
  readonly #opts: BlobTapOptions;
  readonly #pumps = new Set<() => void>();
  readonly #startWaiters: Array<() => void> = [];

  constructor(opts: BlobTapOptions = {}) {
    this.#opts = opts;
    this.#held = opts.holdAfter !== undefined;
  }

  /** Every held body goes on, and later ones aren't held. */
  release(): void {
    this.#held = false;
    for (const pump of [...this.#pumps]) pump();
  }

  /** Resolves with the transfers once at least `n` have started. */
  async started(n: number): Promise<TappedTransfer[]> {
    while (this.transfers.length < n) await new Promise<void>((r) => this.#startWaiters.push(r));
    return this.transfers;
  }

  get completed(): number {
    return this.transfers.filter((t) => t.outcome === 'complete').length;
  }

  readonly behaviour: Behaviour = (r) => {
    if (r.what !== 'blobs') return false;
    const src = this.#opts.source ? this.#opts.source(r.ref) : bufferSource(r.registry.blobs.get(r.ref));
    if (!src) return false;
    const m = /^bytes=(\d+)-$/.exec(r.req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    if (start >= src.size && src.size > 0) return void r.res.writeHead(416, { 'content-range': `bytes */${src.size}` }).end();
    r.res.writeHead(m ? 206 : 200, {
      'content-type': 'application/octet-stream',
      'content-length': src.size - start,
      ...(m ? { 'content-range': `bytes ${start}-${src.size - 1}/${src.size}` } : {}),
    });
    if (r.req.method === 'HEAD') return void r.res.end();

    const slice = this.#opts.bytesPerSecond ? Math.max(1, Math.round(this.#opts.bytesPerSecond / 20)) : Number.POSITIVE_INFINITY;
    let pos = start;
    let budget = slice;
    let ownRelease = false;
    let draining = false;
    let finished = false;
    let resolveEnded!: (o: 'complete' | 'closed') => void;
    const t: TappedTransfer = {
      repo: r.repo,
      digest: r.ref,
      start,
      sent: 0,
      ended: new Promise((res) => (resolveEnded = res)),
      release: () => {
        ownRelease = true;
        pump();
      },
    };
    const pump = () => {
      if (draining || finished || r.res.destroyed) return;
      while (pos < src.size) {
        if (this.#held && !ownRelease && pos - start >= this.#opts.holdAfter!) return;
        const limit = this.#held && !ownRelease ? start + this.#opts.holdAfter! : src.size;
        const n = Math.min(64 * 1024, limit - pos, budget);
        if (n <= 0) return;
        const chunk = src.read(pos, n);
        pos += n;
        budget -= n;
        t.sent += n;
        this.bytesSent += n;
        if (!r.res.write(chunk)) {
          draining = true;
          r.res.once('drain', () => {
            draining = false;
            pump();
          });
          return;
        }
      }
      finished = true;
      r.res.end();
    };
    const ticker = this.#opts.bytesPerSecond
      ? setInterval(() => {
          budget = slice;
          pump();
        }, 50)
      : undefined;
    this.transfers.push(t);
    this.open++;
    this.maxOpen = Math.max(this.maxOpen, this.open);
    this.#pumps.add(pump);
    r.res.on('close', () => {
      clearInterval(ticker);
      this.#pumps.delete(pump);
      this.open--;
      t.outcome = finished && r.res.writableFinished ? 'complete' : 'closed';
      resolveEnded(t.outcome);
    });
    for (const w of this.#startWaiters.splice(0)) w();
    pump();
  };
}

function bufferSource(bytes: Buffer | undefined): TapSource | undefined {
  return bytes && { size: bytes.length, read: (offset, n) => bytes.subarray(offset, offset + n) };
}
