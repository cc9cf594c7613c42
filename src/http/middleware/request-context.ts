import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { logAccessLine, type AccessFields, type Logger } from '../../lib/logger.js';
import type { Metrics } from '../../observability/metrics.js';

/** What handlers record about a request for the access log and metrics. */
export interface RequestContext {
  readonly id: string;
  readonly log: Logger;
  readonly started: number;
  route: string;
  cache?: string;
  upstream?: string;
  stale?: string;
  /**
   * Body bytes written so far by a handler that streams (blobs: it may stop half-way). Responses
   * written in one piece are counted from their Content-Length instead.
   */
  streamedBytes?: number;
  /** Aborted when the client goes away before the response finished; governs client I/O only. */
  readonly signal: AbortSignal;
}

declare module 'express-serve-static-core' {
  interface Request {
    ctx: RequestContext;
  }
}

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * A class, not an object literal with a getter: such a literal gets a hidden class (map) of its own
 * each time it is made, and V8 keeps maps outside the young generation, so every request's whole
 * object graph behind the getter's closure outlived the young generation's collections and was
 * promoted (docs/architecture.md, "Memory under load").
 */
class Context implements RequestContext {
  readonly started = performance.now();
  route = 'unknown';
  cache?: string;
  upstream?: string;
  stale?: string;
  streamedBytes?: number;
  readonly #logger: Logger;
  #log: Logger | undefined;

  constructor(
    readonly id: string,
    logger: Logger,
    readonly signal: AbortSignal,
  ) {
    this.#logger = logger;
  }

  /** Made when a handler first logs: most requests log only their access line. */
  get log(): Logger {
    return (this.#log ??= this.#logger.child({ requestId: this.id }));
  }
}

/** Request id (accepted from `X-Request-Id` or generated), child logger, client signal, access log + metrics. */
export function requestContext(opts: { logger: Logger; metrics: Metrics; quietRoutes: ReadonlySet<string> }) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const incoming = req.get('x-request-id');
    const id = incoming && REQUEST_ID_RE.test(incoming) ? incoming : randomUUID();
    const controller = new AbortController();
    req.ctx = new Context(id, opts.logger, controller.signal);
    res.setHeader('X-Request-Id', id);
    res.on('close', () => {
      const completed = res.writableFinished;
      if (!completed) controller.abort();
      const seconds = (performance.now() - req.ctx.started) / 1000;
      const status = completed ? res.statusCode : 499;
      const bytes = bodyBytes(req, res, completed);
      opts.metrics.httpRequest(req.ctx.route, req.method, status, seconds);
      // Blob bytes are counted by the blob handler as they stream; manifest bodies are counted here,
      // so that client bytes minus upstream bytes is what the cache saved.
      if (req.ctx.route === 'manifest' && completed && status < 300) opts.metrics.bytesToClient(req.ctx.cache === 'miss' ? 'upstream' : 'cache', bytes);
      if (opts.quietRoutes.has(req.ctx.route) && status < 400) return;
      const fields: AccessFields = {
        method: req.method,
        route: req.ctx.route,
        path: req.originalUrl.slice(0, 512),
        status,
        bytes,
        ms: Math.round(seconds * 1000),
        cache: req.ctx.cache,
        upstream: req.ctx.upstream,
        stale: req.ctx.stale,
        aborted: completed ? undefined : true,
        userAgent: req.get('user-agent')?.slice(0, 200),
      };
      logAccessLine(opts.logger, status >= 500 || !completed ? 'warn' : 'info', req.ctx.id, fields);
    });
    next();
  };
}

/**
 * Body bytes sent to the client: what a streaming handler counted as it wrote, else the
 * Content-Length of a response that finished (everything else is written in one piece with its
 * length set); 0 for HEAD and for a one-piece response the client left before it was finished.
 * Not `req.socket.bytesWritten`: that counts headers and chunk framing too, and a keep-alive
 * socket carries many requests.
 */
function bodyBytes(req: Request, res: Response, completed: boolean): number {
  if (req.ctx.streamedBytes !== undefined) return req.ctx.streamedBytes;
  if (!completed || req.method === 'HEAD') return 0;
  const length = Number(res.getHeader('content-length'));
  return Number.isSafeInteger(length) && length > 0 ? length : 0;
}
