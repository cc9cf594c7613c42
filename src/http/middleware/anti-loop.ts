import type { NextFunction, Request, Response } from 'express';
import { RegistryError } from '../../domain/errors.js';

/** The Via token hubcache adds to its upstream requests (RFC 9110 §7.6.3). */
export function viaToken(instanceId: string): string {
  return `hubcache-${instanceId}`;
}

/**
 * Refuses requests that already passed through this instance: a mirror chain that points back at
 * itself would otherwise recurse until something times out (verdaccio's antiLoop).
 */
export function antiLoop(instanceId: string) {
  const token = viaToken(instanceId);
  return (req: Request, _res: Response, next: NextFunction): void => {
    const via = req.get('via');
    if (via && via.split(',').some((hop) => hop.trim().split(/\s+/)[1] === token)) {
      next(new RegistryError('LOOP_DETECTED', { via: via.slice(0, 300) }));
      return;
    }
    next();
  };
}
