/**
 * Failure classification for upstream I/O: undici error codes and HTTP statuses become
 * `UpstreamError` kinds (the terms the cache policy decides on), and response helpers make sure an
 * error response's body is always consumed so undici can reuse the socket.
 */
import type { Dispatcher } from 'undici';
import { pickRateLimitHeaders } from './docker-hub.js';
import { UpstreamError } from './upstream.js';

/**
 * Errors that mean "couldn't talk to the upstream" (undici's `UND_ERR_*` codes, Node's socket and
 * resolver errnos): retryable for idempotent requests, and a reason to serve a stale copy.
 */
export const CONNECTION_ERROR_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH',
  'ENETDOWN', 'EHOSTDOWN', 'ENOTFOUND', 'EAI_AGAIN', 'EPROTO',
  'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_SOCKET',
  'UND_ERR_CLOSED', 'UND_ERR_DESTROYED',
]);

/** A thrown error from undici as an UpstreamError; the caller's abort is passed through untouched. */
export function classifyRequestError(err: unknown, what: string, signal?: AbortSignal): unknown {
  if (signal?.aborted) return signal.reason ?? err;
  if (err instanceof UpstreamError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') {
    // Unlisted codes (TLS certificate failures and the like) are still "can't reach it" from the
    // cache's point of view: a stale copy beats an error.
    const why = CONNECTION_ERROR_CODES.has(code) ? code : `${code}: ${(err as Error).message}`;
    return new UpstreamError('unavailable', `${what}: ${why}`, { cause: err });
  }
  return err; // a bug, not an upstream failure
}

export function headerValue(headers: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Abandons a body without reading it (the connection is closed, not reused). undici's body emits
 * an AbortError when destroyed; with nobody listening that would be an uncaught exception.
 */
export function discardBody(res: Dispatcher.ResponseData): void {
  res.body.on('error', () => {});
  res.body.destroy();
}

/**
 * Reads a body into memory, refusing more than `maxBytes` (checked against Content-Length first,
 * then while reading). Over the cap the stream is destroyed and `onTooLarge` decides the error.
 */
export async function readCapped(res: Dispatcher.ResponseData, maxBytes: number, onTooLarge: () => Error): Promise<Buffer> {
  const declared = Number(headerValue(res.headers, 'content-length'));
  if (Number.isFinite(declared) && declared > maxBytes) {
    discardBody(res);
    throw onTooLarge();
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > maxBytes) {
      discardBody(res);
      throw onTooLarge();
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

// Error bodies worth keeping are small OCI error documents; anything bigger is dropped.
const ERROR_BODY_CAP = 64 * 1024;

/** The upstream's OCI error document (`{"errors":[…]}`), or undefined. Always consumes the body. */
async function readErrorBody(res: Dispatcher.ResponseData): Promise<unknown> {
  let buf: Buffer;
  try {
    buf = await readCapped(res, ERROR_BODY_CAP, () => new Error('error body too large'));
  } catch {
    return undefined;
  }
  try {
    const doc = JSON.parse(buf.toString('utf8')) as { errors?: unknown };
    return doc && typeof doc === 'object' && 'errors' in doc ? doc.errors : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A non-success response as an UpstreamError (the body is consumed): 404 not-found, 401
 * unauthorized, 403 denied, 429 rate-limited (never retried; carries the rate-limit headers and
 * Retry-After for the client), 5xx unavailable, any other status protocol.
 */
export async function errorFromResponse(res: Dispatcher.ResponseData, what: string): Promise<UpstreamError> {
  const status = res.statusCode;
  const upstreamErrors = await readErrorBody(res);
  const opts = { status, ...(upstreamErrors !== undefined ? { upstreamErrors } : {}) };
  const message = `${what}: upstream answered ${status}`;
  if (status === 404) return new UpstreamError('not-found', message, opts);
  if (status === 401) return new UpstreamError('unauthorized', message, opts);
  if (status === 403) return new UpstreamError('denied', message, opts);
  if (status === 429) {
    const headers = pickRateLimitHeaders((n) => headerValue(res.headers, n));
    return new UpstreamError('rate-limited', message, { ...opts, headers });
  }
  if (status >= 500) return new UpstreamError('unavailable', message, opts);
  return new UpstreamError('protocol', message, opts);
}

/** Retry only what a retry can fix: connection failures and 5xx, never 429 (docs/architecture.md#the-upstream-client). */
export function isRetryable(err: unknown): boolean {
  return err instanceof UpstreamError && err.kind === 'unavailable';
}
