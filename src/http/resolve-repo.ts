import { RegistryError } from '../domain/errors.js';
import { HOSTED_UPSTREAM, parseRepoName, type RepoKey } from '../domain/reference.js';
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
  /** Hosted repository patterns (config `hosted.repositories`), in order; see `compileHostedRules`. */
  readonly hosted?: readonly HostedRule[];
}

/** One `hosted.repositories` entry, compiled. */
export interface HostedRule {
  /** As configured, for logs and errors. */
  readonly pattern: string;
  readonly matches: (name: string) => boolean;
  /** `fallThrough: <upstream>`: what isn't pushed is pulled through from this configured upstream. */
  readonly fallThrough?: string;
}

/**
 * Where a request goes: a hosted repository (pushed content, served from the store only) or a
 * repository pulled through an upstream. The one routing decision: every handler gets one of these.
 */
export type RepoRoute =
  | { readonly kind: 'proxy'; readonly key: RepoKey }
  | {
      readonly kind: 'hosted';
      readonly key: RepoKey;
      readonly pattern: string;
      /** The pull-through key of the same name when the pattern falls through to an upstream. */
      readonly fallThrough?: RepoKey;
    };

/**
 * Routes a request's repository. Hosted patterns come first and are matched against the name
 * exactly as the client sent it (before the registry prefix, `?ns=` and Docker Hub's `library/`
 * rule): a hosted name is never looked up upstream, so a private name that isn't pushed yet can't
 * be answered by a public registry where someone else could publish it (dependency confusion).
 * Everything else goes through `resolveRepo`.
 */
export function routeRepo(opts: RepoResolverOptions, rawName: string, ns: string | null): RepoRoute {
  const rule = opts.hosted?.find((r) => r.matches(rawName));
  if (!rule) return { kind: 'proxy', key: resolveRepo(opts, rawName, ns) };
  const key: RepoKey = { upstream: HOSTED_UPSTREAM, repo: parseRepoName(rawName) };
  if (rule.fallThrough === undefined || !opts.upstreams.has(rule.fallThrough)) return { kind: 'hosted', key, pattern: rule.pattern };
  const repo = parseRepoName(normalizeRepoName(rule.fallThrough, rawName));
  const filter = opts.filters?.get(rule.fallThrough);
  // The upstream's own filter still applies: a name it refuses doesn't fall through.
  if (filter && !filter(repo)) return { kind: 'hosted', key, pattern: rule.pattern };
  return { kind: 'hosted', key, pattern: rule.pattern, fallThrough: { upstream: rule.fallThrough, repo } };
}

/** `hosted.repositories` → rules, in order (`*`, `**`, `?` as in `compileRepoFilter`). */
export function compileHostedRules(entries: readonly { readonly pattern: string; readonly fallThrough?: string | undefined }[]): HostedRule[] {
  return entries.map((e) => {
    const re = globToRegExp(e.pattern);
    return { pattern: e.pattern, matches: (name: string) => re.test(name), ...(e.fallThrough !== undefined ? { fallThrough: e.fallThrough } : {}) };
  });
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
