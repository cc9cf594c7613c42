import { RegistryError } from '../domain/errors.js';
import type { RouteName } from './parse-request.js';

/**
 * What a request does to a repository, in the vocabulary of the Docker token scopes
 * (`repository:<name>:pull,push`) and of permissions: read it, write to it, delete from it.
 */
export type RepoAction = 'pull' | 'push' | 'delete';

/**
 * The route table: which methods each registry route answers, and the action each one is. A method
 * missing here is `UNSUPPORTED` (405). The one place that says what a request does: authorization
 * (`AppOptions.auth`, http/auth/guard.ts) is given the action from here, handlers don't decide.
 */
export const ROUTE_ACTIONS: Readonly<Record<Exclude<RouteName, 'base' | 'unknown'>, Readonly<Partial<Record<string, RepoAction>>>>> = {
  manifest: { GET: 'pull', HEAD: 'pull', PUT: 'push', DELETE: 'delete' },
  blob: { GET: 'pull', HEAD: 'pull', DELETE: 'delete' },
  // Every step of an upload is part of a push; a mount also reads its `from` repository (checked for pull in app.ts).
  upload: { POST: 'push', PATCH: 'push', PUT: 'push', GET: 'push', DELETE: 'push' },
  tags: { GET: 'pull' },
  referrers: { GET: 'pull', HEAD: 'pull' },
};

/** The action of `method` on `route`; `UNSUPPORTED` (405) when the route doesn't answer the method. */
export function routeAction(route: keyof typeof ROUTE_ACTIONS, method: string): RepoAction {
  const action = ROUTE_ACTIONS[route][method];
  if (!action) throw new RegistryError('UNSUPPORTED', { method }, { message: `${method} is not supported on ${route}` });
  return action;
}
