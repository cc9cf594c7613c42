/**
 * Misbehaving clients, on raw node:net sockets (issue #11): sockets that connect and never send a
 * request, requests whose head is never finished (slowloris), GETs that read the response head and
 * then stop reading, and clients that walk away after a few body bytes. Each resolves once it is in
 * its misbehaving state and offers a promise of the server closing it, so that tests wait for
 * events, not for time.
 */
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';

export interface HostileSocket {
  readonly socket: Socket;
  /** Resolves when the connection is closed (by the server, or by `destroy`). */
  readonly closed: Promise<void>;
  /** Everything the server sent so far. */
  received(): Buffer;
  /** The status of the response the server sent, if any (`408` for a request head that timed out). */
  status(): number | undefined;
  isClosed(): boolean;
  destroy(): void;
}

export interface ConnectOptions {
  /** Local address to connect from (`127.0.0.2`: another client on Linux's loopback). */
  readonly localAddress?: string;
}

function target(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port) };
}

async function open(url: string, opts: ConnectOptions = {}): Promise<HostileSocket> {
  const { host, port } = target(url);
  const socket = connect({ host, port, localAddress: opts.localAddress });
  const chunks: Buffer[] = [];
  let isClosed = false;
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => {}); // a reset is one way for the server to close: `closed` reports it
  const closed = once(socket, 'close').then(() => {
    isClosed = true;
  });
  await Promise.race([once(socket, 'connect'), closed]);
  return {
    socket,
    closed,
    received: () => Buffer.concat(chunks),
    status: () => {
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(Buffer.concat(chunks).subarray(0, 16).toString('latin1'));
      return m ? Number(m[1]) : undefined;
    },
    isClosed: () => isClosed,
    destroy: () => socket.destroy(),
  };
}

/** `n` connections that never send a byte. */
export async function idleSockets(url: string, n: number, opts: ConnectOptions = {}): Promise<HostileSocket[]> {
  const out: HostileSocket[] = [];
  // In batches: thousands of simultaneous connects overflow the listen backlog (SYNs retried after 1 s).
  for (let i = 0; i < n; i += 100) out.push(...(await Promise.all(Array.from({ length: Math.min(100, n - i) }, () => open(url, opts)))));
  return out;
}

/** A GET whose head stops before its final empty line, as slowloris sends it; nothing more follows. */
export async function halfSentHead(url: string, path = '/v2/', opts: ConnectOptions = {}): Promise<HostileSocket> {
  const s = await open(url, opts);
  s.socket.write(`GET ${path} HTTP/1.1\r\nHost: ${new URL(url).host}\r\nUser-Agent: slowloris\r\n`);
  return s;
}

export interface ResponseHead {
  readonly status: number;
  readonly headers: Record<string, string>;
}

/** A GET on a fresh connection; resolves with the socket once the response head arrived. */
async function getHead(url: string, path: string, opts: ConnectOptions & { headers?: Record<string, string> }): Promise<{ s: HostileSocket; head: ResponseHead; bodyBytes: () => number }> {
  const s = await open(url, opts);
  const extra = Object.entries(opts.headers ?? {})
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  s.socket.write(`GET ${path} HTTP/1.1\r\nHost: ${new URL(url).host}\r\n${extra}\r\n`);
  let headEnd = -1;
  for (;;) {
    headEnd = s.received().indexOf('\r\n\r\n');
    if (headEnd >= 0) break;
    if (s.isClosed()) throw new Error(`connection closed before the response head: ${JSON.stringify(s.received().toString('latin1').slice(0, 200))}`);
    await Promise.race([once(s.socket, 'data'), s.closed]);
  }
  const lines = s.received().subarray(0, headEnd).toString('latin1').split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  const head = { status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!)?.[1]), headers };
  return { s, head, bodyBytes: () => s.received().length - headEnd - 4 };
}

export interface StalledReader extends HostileSocket {
  readonly head: ResponseHead;
  /**
   * Starts reading again and resolves when the connection ends: with the body bytes received in
   * all, and whether they were the whole announced `Content-Length`.
   */
  resume(): Promise<{ bodyBytes: number; complete: boolean }>;
}

/**
 * A GET that reads the response head and then stops reading (the socket is paused: the kernel's
 * buffers fill, then the server's writes stop making progress). The server closing the connection
 * can't be seen while paused — a closed connection's end comes after the unread bytes — so
 * `resume` reads on to the end.
 */
export async function stalledReader(url: string, path: string, opts: ConnectOptions & { headers?: Record<string, string> } = {}): Promise<StalledReader> {
  const { s, head, bodyBytes } = await getHead(url, path, opts);
  s.socket.pause();
  return {
    ...s,
    head,
    resume: async () => {
      s.socket.resume();
      await s.closed;
      const n = bodyBytes();
      return { bodyBytes: n, complete: n === Number(head.headers['content-length']) };
    },
  };
}

/** A GET that reads the head and at least `afterBytes` body bytes, then closes its connection. */
export async function walkAway(url: string, path: string, afterBytes: number, opts: ConnectOptions & { headers?: Record<string, string> } = {}): Promise<{ head: ResponseHead; bodyBytes: number }> {
  const { s, head, bodyBytes } = await getHead(url, path, opts);
  while (bodyBytes() < afterBytes && !s.isClosed()) await Promise.race([once(s.socket, 'data'), s.closed]);
  const n = bodyBytes();
  s.destroy();
  await s.closed;
  return { head, bodyBytes: n };
}

/**
 * A GET answered in full on a connection the client then keeps open and idle, as the connection
 * pools of docker and containerd do; `closed` resolves when the server ends it.
 */
export async function keptAlive(url: string, path: string, opts: ConnectOptions = {}): Promise<HostileSocket & { head: ResponseHead }> {
  const { s, head, bodyBytes } = await getHead(url, path, opts);
  const length = Number(head.headers['content-length'] ?? 0);
  while (bodyBytes() < length && !s.isClosed()) await Promise.race([once(s.socket, 'data'), s.closed]);
  return { ...s, head };
}
