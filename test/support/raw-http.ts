/**
 * A bare HTTP client for asserting on broken responses: it never follows redirects, never
 * retries, and reports how many body bytes arrived and how the exchange ended (a truncated body
 * or a reset is a result here, not an exception).
 */
import { request } from 'node:http';
import { performance } from 'node:perf_hooks';

export interface RawResponse {
  /** Undefined when no response head arrived (reset, refused). */
  status?: number;
  headers: Record<string, string | string[] | undefined>;
  /** Body bytes received (possibly partial). */
  body: Buffer;
  /** 'complete': the body ended cleanly; 'error': the socket failed (see `error`). */
  outcome: 'complete' | 'error';
  /** e.g. ECONNRESET, ECONNREFUSED, or 'aborted' for a close mid-body. */
  errorCode?: string;
  error?: Error;
  /** performance.now() when the first body byte arrived, and when the exchange ended. */
  firstByteAt?: number;
  endedAt: number;
}

export interface RawRequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: Buffer;
  /** Give up (destroy the request) after this many ms; outcome 'error', errorCode 'TIMEOUT'. Default 15000. */
  timeoutMs?: number;
  /** Called with every body chunk as it arrives. */
  onData?: (chunk: Buffer) => void;
  /** Resolve as soon as the head and `n` body bytes have arrived (and destroy the request). */
  stopAfterBytes?: number;
  /** Send this request target byte for byte instead of the URL's path (for `..`, `\\` and encodings URL parsers would normalise). */
  rawPath?: string;
  /** Walk away when it aborts (destroy the request): outcome 'error', errorCode 'aborted-by-client'. */
  signal?: AbortSignal;
}

/** One request on a fresh connection (agent: false), so earlier faults can't leak into it. */
export function rawRequest(url: string, opts: RawRequestOptions = {}): Promise<RawResponse> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let res: import('node:http').IncomingMessage | undefined;
    let firstByteAt: number | undefined;
    let settled = false;
    const finish = (outcome: RawResponse['outcome'], error?: Error & { code?: string }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({
        status: res?.statusCode,
        headers: res?.headers ?? {},
        body: Buffer.concat(chunks),
        outcome,
        error,
        errorCode: error ? (error.code ?? error.message) : undefined,
        firstByteAt,
        endedAt: performance.now(),
      });
    };
    const target = new URL(url);
    const reqOpts = { method: opts.method ?? 'GET', headers: opts.headers, agent: false as const, hostname: target.hostname, port: target.port, path: opts.rawPath ?? `${target.pathname}${target.search}` };
    const req = request(reqOpts, (r) => {
      res = r;
      r.on('data', (c: Buffer) => {
        firstByteAt ??= performance.now();
        chunks.push(c);
        received += c.length;
        opts.onData?.(c);
        if (opts.stopAfterBytes !== undefined && received >= opts.stopAfterBytes) {
          finish('complete');
          req.destroy();
        }
      });
      r.on('end', () => finish('complete'));
      // 'aborted' fires when the connection closes before the body's end.
      r.on('aborted', () => finish('error', Object.assign(new Error('aborted'), { code: 'aborted' })));
      r.on('error', (e) => finish('error', e));
      r.on('close', () => {
        if (!r.complete) finish('error', Object.assign(new Error('aborted'), { code: 'aborted' }));
      });
    });
    const timer = setTimeout(() => {
      finish('error', Object.assign(new Error('timeout'), { code: 'TIMEOUT' }));
      req.destroy();
    }, opts.timeoutMs ?? 15_000);
    req.on('error', (e) => finish('error', e));
    const walkAway = () => {
      finish('error', Object.assign(new Error('aborted by the client'), { code: 'aborted-by-client' }));
      req.destroy();
    };
    if (opts.signal?.aborted) walkAway();
    else opts.signal?.addEventListener('abort', walkAway, { once: true });
    req.end(opts.body);
  });
}
