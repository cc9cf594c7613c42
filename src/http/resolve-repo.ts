import { RegistryError } from '../domain/errors.js';
import { parseRepoName, type RepoKey } from '../domain/reference.js';
import { splitRegistry } from '../domain/registry-name.js';
import { globToRegExp } from '../domain/repo-pattern.js';
import { canonicalRegistry, normalizeRepoName } from '../upstream/docker-hub.js';

export { globToRegExp };

/** Decides whether a repository (already normalised) may be pulled through an upstream. */
export type RepoFilter = (repo: string) => boolean;

export interface RepoResolverOptions {
  /** Registry names that are configured (`docker.io`, `ghcr.io`, …). */
  readonly upstreams: ReadonlySet<string>;
  readonly defaultUpstream: string;
  /** Per-upstream repository allow/deny filters; upstreams without one allow every repository. */
  readonly filters?: ReadonlyMap<string, RepoFilter>;
}

/**
 * Which upstream and repository a request means, in this order:
 * 1. containerd's `?ns=<registry>` parameter (containerd adds it to every request it sends to a
 *    mirror; the whole path is then the repository, even when its first component has a dot);
 * 2. a registry as first path component (`/v2/ghcr.io/org/app/...`), recognised the way docker's
 *    reference parser does (`splitRegistry`, domain/registry-name.ts);
 * 3. otherwise the default upstream (Docker Hub).
 * Docker Hub's aliases name `docker.io`, and its names get their `library/` (upstream/docker-hub.ts).
 * A registry that is not configured is refused here, before anything goes out (no open proxy):
 * the name is only ever looked up in the configured set, never used to build a URL. A repository
 * the upstream's filter refuses is DENIED, also before anything goes out.
 */
export function resolveRepo(opts: RepoResolverOptions, rawName: string, ns: string | null): RepoKey {
  let upstream = opts.defaultUpstream;
  let name = rawName;
  const prefixed = splitRegistry(rawName);
  if (ns !== null && ns !== '') {
    upstream = canonicalRegistry(ns.toLowerCase());
  } else if (prefixed) {
    upstream = canonicalRegistry(prefixed.registry);
    name = prefixed.rest;
  }
  if (!opts.upstreams.has(upstream)) {
    throw new RegistryError('UPSTREAM_UNKNOWN', { registry: upstream.slice(0, 255), configured: [...opts.upstreams] });
  }
  const repo = parseRepoName(normalizeRepoName(upstream, name));
  const filter = opts.filters?.get(upstream);
  if (filter && !filter(repo)) {
    throw new RegistryError('DENIED', { registry: upstream, repository: repo }, { message: 'this repository may not be pulled through this mirror' });
  }
  return { upstream, repo };
}

/**
 * Compiles allow/deny glob patterns (config `upstreams.<name>.repositories`) into a filter: `*`
 * matches within one path component, `**` across components, `?` one character other than `/`.
 * With `allow` given a repository must match one of its patterns; a `deny` match always refuses.
 */
export function compileRepoFilter(rules: { readonly allow?: readonly string[] | undefined; readonly deny?: readonly string[] | undefined }): RepoFilter {
  const allow = rules.allow?.map(globToRegExp);
  const deny = (rules.deny ?? []).map(globToRegExp);
  return (repo) => (allow === undefined || allow.some((re) => re.test(repo))) && !deny.some((re) => re.test(repo));
}
