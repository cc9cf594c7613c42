import type { NextFunction, Request, Response } from 'express';
import { ERROR_CODES, isRegistryError, RegistryError } from '../../domain/errors.js';

/**
 * The only place that turns errors into HTTP: RegistryError code → status from the code table →
 * OCI error body `{"errors":[{code,message,detail}]}`. Anything else is a bug: 500 UNKNOWN + log.
 */
export function errorHandler() {
  return (err: unknown, req: Request, res: Response, _next: NextFunction): void => {
    if (req.ctx?.signal.aborted && err === req.ctx.signal.reason) {
      // The client left and stopped waiting (single-flight.ts): nobody to answer, no error of
      // ours; the access log records the request as aborted.
      if (!res.destroyed) res.destroy();
      return;
    }
    let regErr: RegistryError;
    if (isRegistryError(err)) {
      regErr = err;
    } else {
      req.ctx?.log.error('unhandled error', { error: (err as Error)?.message, stack: (err as Error)?.stack });
      regErr = new RegistryError('UNKNOWN');
    }
    if (res.headersSent) {
      // Part of a body is already out: the only honest signal left is a broken connection.
      res.destroy(regErr);
      return;
    }
    const { status } = ERROR_CODES[regErr.code];
    // A client that went away is already in the access log (499); nobody reads this answer.
    if (status >= 500 && regErr.code !== 'UNKNOWN' && !req.ctx?.signal.aborted) req.ctx?.log.warn('request failed', { code: regErr.code, error: regErr.message, cause: (regErr.cause as Error)?.message });
    for (const [k, v] of Object.entries(regErr.headers)) res.setHeader(k, v);
    const body = JSON.stringify({ errors: [{ code: regErr.code, message: regErr.message, detail: regErr.detail ?? null }] });
    // What express's res.type('application/json') sets, without its mime lookups.
    res.status(status).setHeader('Content-Type', 'application/json; charset=utf-8');
    res.setHeader('Content-Length', Buffer.byteLength(body));
    if (req.method === 'HEAD') res.end();
    else res.end(body);
  };
}
