import { createServer, IncomingMessage, ServerResponse, type RequestListener, type Server, type ServerOptions } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { SecureContextOptions, TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { Logger } from '../lib/logger.js';
import type { ConnectionRejection, Metrics } from '../observability/metrics.js';

export interface ClientServerOptions {
  /** server.headersTimeout: the request head must arrive within this (ms). */
  readonly headersTimeout: number;
  /** server.keepAliveTimeout: a kept-alive connection idle this long is closed (ms). */
  readonly keepAliveTimeout: number;
  /** server.maxConnections: client connections open at once. */
  readonly maxConnections: number;
  /** server.maxConnectionsPerClient: from one address (IPv6: one /64); 0: no limit. */
  readonly maxConnectionsPerClient: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Config `tls`: the listener speaks HTTPS only (certificate and key, optional client CA). */
  readonly tls?: ClientServerTls;
}

export interface ClientServerTls {
  /** Certificate, key and, to require client certificates, `ca` (lib/tls-files.ts reads them). */
  readonly context: SecureContextOptions;
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3';
}

/** The registry listener: plain HTTP, or HTTPS with `tls` (same bounds, same handlers). */
export type ClientServer = Server | HttpsServer;

/**
 * Connections being turned away at once, at most: each waits (briefly) for its request to answer
 * it `503`; beyond this many, further ones are closed at once. Bounds the file descriptors a
 * flood can take beyond maxConnections.
 */
export const TURN_AWAY_BACKLOG = 128;
/** How long a turned-away connection may take to send its request (at most headersTimeout). */
const TURN_AWAY_GRACE_MS = 5_000;
/** Seconds a turned-away client is asked to wait (`Retry-After`). */
const RETRY_AFTER_S = 5;
/** Requests still answered on a turned-away connection: probes and scrapes must not fail with the load (a failed liveness probe restarts the pod, and every download with it). */
const OPERATIONAL_PATHS = new Set(['/healthz', '/readyz', '/metrics']);
/** At most one "connections turned away" log line per reason this often (a flood must not flood the log). */
const LOG_EVERY_MS = 10_000;

/**
 * The HTTP server clients talk to, with the bounds of issue #11 (point 6): a request head must
 * arrive within `headersTimeout` (connections that never send one, and slowloris clients, get
 * 408 and are closed), a kept-alive connection idle for `keepAliveTimeout` is closed, and there is
 * no request timeout — a download may take as long as it keeps moving (the send timeout,
 * middleware/send-timeout.ts, closes responses that stop moving). Connections beyond
 * `maxConnectionsPerClient` from one address, or beyond `maxConnections` in all, are answered
 * `503` (OCI error body, `Retry-After`, `Connection: close`) instead of being served; Node's
 * defaults would have kept every one of them open forever and let file descriptors run out.
 */
export function createClientServer(app: ExpressListener, opts: ClientServerOptions): ClientServer {
  const limits = new ConnectionLimits(opts);
  const httpOptions: ServerOptions = {
    ...bornAsExpressMessages(app),
    keepAliveTimeout: opts.keepAliveTimeout,
    headersTimeout: opts.headersTimeout,
    requestTimeout: 0,
    // Node checks headersTimeout this often (default 30 s: a 60 s timeout would fire at up to 90 s).
    connectionsCheckingInterval: checkingInterval(opts.headersTimeout),
  };
  const onRequest: RequestListener = (req, res) => {
    const connection = connectionOf(req.socket);
    if (limits.turnedAway(connection) && !OPERATIONAL_PATHS.has(pathOf(req))) return answerTurnedAway(req, res, limits.reasonOf(connection));
    if (limits.turnedAway(connection)) res.setHeader('Connection', 'close');
    // A body not read to its end when the answer goes out (anything but an upload the handler took
    // whole: a refused push, a mirror route) isn't drained afterwards, which a client could trickle
    // forever (slowloris through the body): the connection is closed after the answer instead. An
    // upload read whole keeps its connection, so a push's requests don't each pay a new connection.
    if (hasBody(req)) closeUnlessBodyRead(req, res);
    limits.responding(connection, res);
    return app(req, res);
  };
  const server: ClientServer = opts.tls
    ? createHttpsServer(
        {
          ...httpOptions,
          ...opts.tls.context,
          minVersion: opts.tls.minVersion,
          // With a client CA every client must present a certificate it issued: the handshake fails otherwise.
          requestCert: opts.tls.context.ca !== undefined,
          rejectUnauthorized: opts.tls.context.ca !== undefined,
          // Node's headersTimeout check only sees connections whose handshake is done: a client
          // that connects and never completes a handshake would hold its socket (and a slot of
          // maxConnections) for tls's own default of 120 s, whatever headersTimeout says.
          handshakeTimeout: opts.headersTimeout,
        },
        onRequest,
      )
    : createServer(httpOptions, onRequest);
  // Before Node's own connection listener: a connection is counted, or marked to be turned away,
  // before any of its bytes are parsed (with TLS: the TCP connection, before the handshake).
  server.prependListener('connection', (socket: Socket) => limits.onConnection(socket));
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => limits.onClientError(err, socket as Socket));
  // A failed or timed-out handshake: Node closes the connection; counted, never logged per client
  // (scanners and clients not trusting the certificate would flood the log).
  if (opts.tls) server.on('tlsClientError', (_err: Error, socket: TLSSocket) => {
    opts.metrics.tlsHandshakeFailed();
    socket.destroy();
  });
  // Accept errors (EMFILE when file descriptors run out after all) must not end the process.
  server.once('listening', () => server.on('error', (err) => opts.logger.error('client listener error', { error: err.message, code: (err as NodeJS.ErrnoException).code })));
  return server;
}

/** An express application: a request listener with the prototypes it gives requests and responses. */
export type ExpressListener = RequestListener & { readonly request: object; readonly response: object };

/**
 * Server options under which Node creates each request and response with the prototypes the
 * express `app` gives them (`app.request`, `app.response`), so express's own
 * `Object.setPrototypeOf(req, app.request)` finds nothing to change. Changing an object's
 * prototype after it was made costs more than that call: V8 then keeps every request's objects
 * through the young generation's collections, each request's whole graph is promoted to the old
 * generation (~18 KiB per request measured, every request) and the heap grows by tens of MiB of
 * garbage between two full collections under load (issue #13: RSS after a load; docs/architecture.md, "Memory under load").
 */
export function bornAsExpressMessages(app: ExpressListener): Pick<ServerOptions, 'IncomingMessage' | 'ServerResponse'> {
  return { IncomingMessage: withPrototype(IncomingMessage, app.request) as typeof IncomingMessage, ServerResponse: withPrototype(ServerResponse, app.response) as typeof ServerResponse };
}

/**
 * A constructor making what `base` makes, with `prototype` as the new object's prototype. Node 20
 * defines the messages as plain functions: called on an object made with the right prototype
 * (`Reflect.construct` with another new.target costs the same promotions as changing the
 * prototype: measured). Should a later Node make them classes, which can't be called,
 * `Reflect.construct` it is.
 */
function withPrototype(base: new (...args: never[]) => object, prototype: object): unknown {
  const isClass = /^class\b/.test(Function.prototype.toString.call(base));
  const call = base as unknown as (this: object, ...args: unknown[]) => void;
  function Born(this: object, ...args: unknown[]): object | void {
    if (isClass) return Reflect.construct(base, args, Born) as object;
    call.apply(this, args);
  }
  Born.prototype = prototype;
  return Born;
}

/**
 * The TCP connection under a request's socket: with TLS, requests arrive on a TLSSocket wrapping
 * the socket the 'connection' listener counted (Node keeps it as `_parent`); without, it is the
 * socket itself. The connection bounds are kept per TCP connection.
 */
export function connectionOf(socket: Socket): Socket {
  return (socket as Socket & { _parent?: Socket | null })._parent ?? socket;
}

/** How often Node looks for connections past headersTimeout: a fraction of it, between 50 ms and 5 s. */
export function checkingInterval(headersTimeoutMs: number): number {
  return Math.min(5_000, Math.max(50, Math.floor(headersTimeoutMs / 4)));
}

/**
 * The key a client's connections are counted under: its address, or for IPv6 its /64 (a host
 * gets a whole /64 and may use any address in it). IPv4-mapped IPv6 addresses count as IPv4.
 */
export function clientKey(address: string | undefined): string {
  if (!address) return '';
  const bare = address.replace(/%.*$/, '').toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(bare);
  if (mapped) return mapped[1]!;
  if (!bare.includes(':')) return bare;
  const groups = (part: string) => (part === '' ? [] : part.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g])));
  const [head = '', tail] = bare.split('::');
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const full = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${full
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}

/** Adds `Connection: close` to the response head when it goes out before the request's body was read to its end. */
export function closeUnlessBodyRead(req: IncomingMessage, res: ServerResponse): void {
  const writeHead = res.writeHead;
  // Every head goes through writeHead (Node's implicit header for write/end included).
  res.writeHead = function (this: ServerResponse, ...args: Parameters<ServerResponse['writeHead']>) {
    if (!req.complete && !this.headersSent) this.setHeader('Connection', 'close');
    return writeHead.apply(this, args);
  } as ServerResponse['writeHead'];
}

function hasBody(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
}

function pathOf(req: IncomingMessage): string {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

function answerTurnedAway(req: IncomingMessage, res: ServerResponse, reason: ConnectionRejection): void {
  const message = reason === 'client_limit' ? 'too many connections from this client: close idle ones or retry later' : 'too many connections to this mirror: retry later';
  const body = JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message, detail: null }] });
  res.writeHead(503, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    'Retry-After': String(RETRY_AFTER_S),
    'Docker-Distribution-Api-Version': 'registry/2.0',
    Connection: 'close',
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** Counts open connections, per client and in all, and decides who is turned away. */
class ConnectionLimits {
  readonly #opts: ClientServerOptions;
  #open = 0;
  readonly #perClient = new Map<string, number>();
  #turningAway = 0;
  readonly #turnedAway = new WeakMap<Socket, ConnectionRejection>();
  /** Responses not closed yet, per connection (a head error then closes without a reply). */
  readonly #responses = new WeakMap<Socket, number>();
  readonly #unlogged = new Map<ConnectionRejection, number>();
  readonly #loggedAt = new Map<ConnectionRejection, number>();

  constructor(opts: ClientServerOptions) {
    this.#opts = opts;
  }

  onConnection(socket: Socket): void {
    const key = clientKey(socket.remoteAddress);
    const fromClient = this.#perClient.get(key) ?? 0;
    const { maxConnections, maxConnectionsPerClient } = this.#opts;
    if (maxConnectionsPerClient > 0 && fromClient >= maxConnectionsPerClient) return this.#turnAway(socket, 'client_limit');
    if (this.#open >= maxConnections) return this.#turnAway(socket, 'total_limit');
    this.#open++;
    this.#perClient.set(key, fromClient + 1);
    this.#opts.metrics.connectionOpened();
    socket.once('close', () => {
      this.#open--;
      const n = (this.#perClient.get(key) ?? 1) - 1;
      if (n > 0) this.#perClient.set(key, n);
      else this.#perClient.delete(key);
      this.#opts.metrics.connectionClosed();
    });
  }

  turnedAway(socket: Socket): boolean {
    return this.#turnedAway.has(socket);
  }

  reasonOf(socket: Socket): ConnectionRejection {
    return this.#turnedAway.get(socket) ?? 'total_limit';
  }

  responding(socket: Socket, res: ServerResponse): void {
    this.#responses.set(socket, (this.#responses.get(socket) ?? 0) + 1);
    res.once('close', () => this.#responses.set(socket, (this.#responses.get(socket) ?? 1) - 1));
  }

  /**
   * Node's default answer to a broken or late request head (408, 431 or 400, then close), which a
   * 'clientError' listener replaces; here to count headers timeouts. No reply while a response is
   * under way on the connection: it would land inside that response.
   */
  onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') this.#opts.metrics.clientTimedOut('headers');
    const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code?.startsWith('HPE_') ? '400 Bad Request' : undefined;
    if (status && socket.writable && !(this.#responses.get(connectionOf(socket)) ?? 0)) socket.write(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    socket.destroy();
  }

  #turnAway(socket: Socket, reason: ConnectionRejection): void {
    this.#opts.metrics.connectionRejected(reason);
    this.#logTurnedAway(reason);
    if (this.#turningAway >= TURN_AWAY_BACKLOG) {
      // After Node's own listener has set the connection up: closing it here would leave that
      // listener a closed socket.
      process.nextTick(() => socket.destroy());
      return;
    }
    this.#turningAway++;
    this.#turnedAway.set(socket, reason);
    socket.once('close', () => this.#turningAway--);
    // No request in time: closed (with TLS the HTTP server watches the TLS socket, not this one).
    socket.setTimeout(Math.min(TURN_AWAY_GRACE_MS, this.#opts.headersTimeout), () => socket.destroy());
  }

  #logTurnedAway(reason: ConnectionRejection): void {
    this.#unlogged.set(reason, (this.#unlogged.get(reason) ?? 0) + 1);
    const now = Date.now();
    if (now - (this.#loggedAt.get(reason) ?? -Infinity) < LOG_EVERY_MS) return;
    const limit = reason === 'client_limit' ? this.#opts.maxConnectionsPerClient : this.#opts.maxConnections;
    // turnedAway: since the previous line for this reason.
    this.#opts.logger.warn('client connections turned away', { reason, limit, turnedAway: this.#unlogged.get(reason), open: this.#open });
    this.#unlogged.set(reason, 0);
    this.#loggedAt.set(reason, now);
  }
}
