import type { Request } from 'express';
import { RegistryError } from '../domain/errors.js';
import type { RouteName } from './parse-request.js';
import type { RepoRoute } from './resolve-repo.js';

/**
 * What a request does to a repository, in the vocabulary of the Docker token scopes
 * (`repository:<name>:pull,push`) and of permissions: read it, write to it, delete from it.
 */
export type RepoAction = 'pull' | 'push' | 'delete';

/**
 * The route table: which methods each registry route answers, and the action each one is. A method
 * missing here is `UNSUPPORTED` (405) before anything else happens. The one place that says what a
 * request does: authorization (the `authorize` hook, `AppOptions`) reads it, handlers don't decide.
 */
export const ROUTE_ACTIONS: Readonly<Record<Exclude<RouteName, 'base' | 'unknown'>, Readonly<Partial<Record<string, RepoAction>>>>> = {
  manifest: { GET: 'pull', HEAD: 'pull', PUT: 'push', DELETE: 'delete' },
  blob: { GET: 'pull', HEAD: 'pull', DELETE: 'delete' },
  // Every step of an upload is part of a push; a mount also reads its `from` repository (see `RepoAccess`).
  upload: { POST: 'push', PATCH: 'push', PUT: 'push', GET: 'push', DELETE: 'push' },
  tags: { GET: 'pull' },
  referrers: { GET: 'pull', HEAD: 'pull' },
};

/** One repository a request acts on, and how. */
export interface RepoAccess {
  /** The repository as the client named it (the scope's name). */
  readonly name: string;
  /** Where it routes (hosted or pulled through, and the key). */
  readonly route: RepoRoute;
  readonly action: RepoAction;
}

/**
 * Decides whether the request may do what `access` lists (its repository, and a mount's `from`
 * with `pull`): resolves to let it through, throws a `RegistryError` (`UNAUTHORIZED` with a
 * challenge, `DENIED`) to refuse it. Runs after routing and before any handler touches anything:
 * a refused request changes nothing. Without one, every request is let through (no authentication
 * yet: pushes to hosted names are open to anyone who can reach the port).
 */
export type Authorize = (req: Request, access: readonly RepoAccess[]) => Promise<void>;

/** The action of `method` on `route`; `UNSUPPORTED` (405) when the route doesn't answer the method. */
export function routeAction(route: keyof typeof ROUTE_ACTIONS, method: string): RepoAction {
  const action = ROUTE_ACTIONS[route][method];
  if (!action) throw new RegistryError('UNSUPPORTED', { method }, { message: `${method} is not supported on ${route}` });
  return action;
}
