import { AsyncLocalStorage } from 'node:async_hooks';
import type { NextFunction, Request, Response } from 'express';
import { RegistryError } from '../../domain/errors.js';

/** The Via token hubcache adds to its upstream requests (RFC 9110 §7.6.3). */
export function viaToken(instanceId: string): string {
  return `hubcache-${instanceId}`;
}

/** The Via header of the client request being served (see `viaChain`). */
const incomingVia = new AsyncLocalStorage<string | undefined>();
// A longer chain, or one with characters a header can't carry on, is not passed upstream.
const MAX_CARRIED_VIA = 1024;
const CARRIABLE_VIA = /^[\x20-\x7e]+$/;

/**
 * Refuses requests that already passed through this instance: a mirror chain that points back at
 * itself would otherwise recurse until something times out (verdaccio's antiLoop). A request let
 * through is served with its Via remembered, for `viaChain`.
 */
export function antiLoop(instanceId: string) {
  const token = viaToken(instanceId);
  return (req: Request, _res: Response, next: NextFunction): void => {
    const via = req.get('via');
    if (via && via.split(',').some((hop) => hop.trim().split(/\s+/)[1] === token)) {
      next(new RegistryError('LOOP_DETECTED', { via: via.slice(0, 300) }));
      return;
    }
    const carried = via?.trim();
    incomingVia.run(carried && carried.length <= MAX_CARRIED_VIA && CARRIABLE_VIA.test(carried) ? carried : undefined, next);
  };
}

/**
 * The Via value for an upstream request made while serving a client request: the Via that request
 * arrived with, then `own` (RFC 9110 §7.6.3: a proxy appends its entry). Only with the whole chain
 * can a loop through another mirror (A → B → A) be seen: with its own entry alone, each mirror's
 * request reaches the other carrying just the other's entry, and the loop goes unnoticed until a
 * timeout. Upstream requests are made deep in the cache (single-flight, detached fills), always
 * within the request that started them, so the chain travels as async context, not as a parameter.
 */
export function viaChain(own: string): string {
  const incoming = incomingVia.getStore();
  return incoming ? `${incoming}, ${own}` : own;
}
