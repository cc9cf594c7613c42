import { ACTIONS, type Action } from './policy.js';

/**
 * Token scopes (Docker token authentication, "Token Scope Documentation"):
 * `repository:<name>:<action>[,<action>…]`, several separated by spaces or given as repeated
 * `scope` parameters. The name may hold a `:` (a registry host with a port), so the actions are what
 * follows the last `:`. `*` stands for every action. Other resource types (`registry:catalog:*`)
 * are kept with no actions hubcache grants.
 */
export interface Scope {
  readonly type: string;
  readonly name: string;
  readonly actions: readonly string[];
}

/** One access entry of a token (the JWT's `access` claim). */
export interface Access {
  readonly type: 'repository';
  readonly name: string;
  readonly actions: readonly Action[];
}

export function parseScope(scope: string): Scope | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last === first) return undefined;
  const type = scope.slice(0, first).replace(/\(.*\)$/, ''); // `repository(plugin)` is a repository
  const name = scope.slice(first + 1, last);
  if (!name) return undefined;
  const actions = scope.slice(last + 1).split(',').map((a) => a.trim()).filter(Boolean);
  return { type, name, actions };
}

/** Every scope of the request's `scope` parameters (repeated, or space-separated in one). */
export function parseScopes(params: readonly string[]): Scope[] {
  return params.flatMap((p) => p.split(' ')).filter(Boolean).flatMap((s) => parseScope(s) ?? []);
}

/** The hubcache actions a scope asks for (`*` is all of them; unknown ones are dropped). */
export function requestedActions(scope: Scope): Action[] {
  if (scope.actions.includes('*')) return [...ACTIONS];
  return ACTIONS.filter((a) => scope.actions.includes(a));
}

/** `repository:<name>:<actions>`, the form a challenge's `scope` carries. */
export function formatScope(name: string, actions: readonly string[]): string {
  return `repository:${name}:${actions.join(',')}`;
}
