import type { NextFunction, Request, Response } from 'express';

/**
 * `X-Content-Type-Options: nosniff` on every response, errors included: a browser pointed at the
 * registry must take each body for what its Content-Type says (JSON, a manifest, bytes), never
 * guess HTML or script from the bytes an upstream sent (issue #11 point 5).
 */
export function noSniff() {
  return (_req: Request, res: Response, next: NextFunction): void => {
    res.setHeader('X-Content-Type-Options', 'nosniff');
    next();
  };
}
