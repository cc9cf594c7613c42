import { RegistryError } from '../domain/errors.js';
import { parseRepoName } from '../domain/reference.js';
import type { RepoKey } from '../storage/manifest-store.js';

export interface RepoResolverOptions {
  /** Registry names that are configured (`docker.io`, `ghcr.io`, …). */
  readonly upstreams: ReadonlySet<string>;
  readonly defaultUpstream: string;
  /** Per-upstream name normalisation (Docker Hub's `library/` prefix lives in upstream/docker-hub.ts). */
  readonly normalize: (upstream: string, name: string) => string;
}

/**
 * Which upstream and repository a request means, in this order:
 * 1. containerd's `?ns=<registry>` parameter;
 * 2. a registry host as first path component (`/v2/ghcr.io/org/app/...`), recognised the way
 *    docker's reference parser does: it contains a `.` or a `:`, or is `localhost`;
 * 3. otherwise the default upstream (Docker Hub).
 * A registry that is not configured is refused here, before anything goes out (no open proxy).
 */
export function resolveRepo(opts: RepoResolverOptions, rawName: string, ns: string | null): RepoKey {
  let upstream = opts.defaultUpstream;
  let name = rawName;
  const slash = rawName.indexOf('/');
  const first = slash === -1 ? '' : rawName.slice(0, slash);
  if (first && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    upstream = first;
    name = rawName.slice(slash + 1);
  } else if (ns !== null && ns !== '') {
    upstream = ns === 'registry-1.docker.io' || ns === 'index.docker.io' ? 'docker.io' : ns.toLowerCase();
  }
  if (!opts.upstreams.has(upstream)) {
    throw new RegistryError('UPSTREAM_UNKNOWN', { registry: upstream.slice(0, 255), configured: [...opts.upstreams] });
  }
  return { upstream, repo: parseRepoName(opts.normalize(upstream, name)) };
}
