/**
 * The ONLY place Docker Hub quirks live (docs/architecture.md#where-docker-hub-quirks-live "Docker Hub quirks in one module"). Everything
 * else talks to Docker Hub as to any distribution-API registry: the token dance is driven by the
 * `WWW-Authenticate` challenge, never by these constants.
 */
import type { RateLimitSnapshot } from './upstream.js';

export const DOCKER_HUB = {
  /** The registry name clients use (`docker.io/library/alpine`). */
  name: 'docker.io',
  /** The API endpoint; `docker.io` itself serves the website, not /v2/. */
  url: 'https://registry-1.docker.io',
  /** Origin of the token realm named in Docker Hub's challenges (`https://auth.docker.io/token`). */
  authRealmOrigin: 'https://auth.docker.io',
  /** Host names that all mean Docker Hub (containerd sends `?ns=docker.io`, older tools index.docker.io). */
  aliases: ['docker.io', 'registry-1.docker.io', 'index.docker.io'],
} as const;

/** Whether a registry name or API host means Docker Hub. */
export function isDockerHub(nameOrHost: string): boolean {
  return (DOCKER_HUB.aliases as readonly string[]).includes(nameOrHost.toLowerCase());
}

/**
 * A registry name as hubcache knows it: Docker Hub's aliases become `docker.io` (containerd sends
 * `?ns=docker.io`, older tools `index.docker.io`; `docker.io/…` and `index.docker.io/…` name the
 * same image), every other name is returned as it is.
 */
export function canonicalRegistry(name: string): string {
  return isDockerHub(name) ? DOCKER_HUB.name : name;
}

/**
 * Why a registry name can't be configured as an upstream: Docker Hub is configured as `docker.io`,
 * since requests naming any of its aliases are routed there (`canonicalRegistry`). `undefined` for
 * every other name.
 */
export function dockerHubAliasProblem(name: string): string | undefined {
  if (name === DOCKER_HUB.name || !isDockerHub(name)) return undefined;
  return `${JSON.stringify(name)} is Docker Hub: configure it as ${DOCKER_HUB.name} (requests naming ${DOCKER_HUB.aliases.join(', ')} all go there)`;
}

const OFFICIAL_PREFIX = 'library/';

/**
 * Official images live under `library/`: `alpine` means `library/alpine`
 * (docs/protocol.md#official-images-library). dockerd already sends the `library/` form to
 * mirrors; containerd, podman and pods naming the mirror may not.
 */
export function normalizeDockerHubName(name: string): string {
  return name.includes('/') ? name : OFFICIAL_PREFIX + name;
}

/** A repository name as its registry knows it: Docker Hub's `library/` added, other registries' names unchanged. */
export function normalizeRepoName(registry: string, name: string): string {
  return registry === DOCKER_HUB.name ? normalizeDockerHubName(name) : name;
}

/** The short name people write, the inverse of `normalizeRepoName`: `library/alpine` on Docker Hub → `alpine`. */
export function familiarRepoName(registry: string, repo: string): string {
  const short = repo.slice(OFFICIAL_PREFIX.length);
  return registry === DOCKER_HUB.name && repo.startsWith(OFFICIAL_PREFIX) && !short.includes('/') ? short : repo;
}

/**
 * The token realms (origins, realm-allowlist.ts) an upstream may send us to when `allowedRealmHosts`
 * is not configured: its own origin, and for Docker Hub also https://auth.docker.io, to which its
 * registry delegates; other registries usually serve tokens themselves.
 */
export function defaultRealmHosts(upstreamName: string, upstreamUrl: URL): string[] {
  const origins = [upstreamUrl.origin];
  if (isDockerHub(upstreamName) || isDockerHub(upstreamUrl.hostname)) origins.push(DOCKER_HUB.authRealmOrigin);
  return origins;
}

/**
 * Docker Hub's rate-limit headers (https://docs.docker.com/docker-hub/usage/pulls/): sent on
 * manifest responses (a HEAD shows them without counting as a pull) and on 429s. `retry-after` is
 * the standard header a 429 may carry (RFC 9110 §10.2.3).
 */
export const RATE_LIMIT_HEADERS = {
  limit: 'ratelimit-limit',
  remaining: 'ratelimit-remaining',
  source: 'docker-ratelimit-source',
  retryAfter: 'retry-after',
} as const;

/** Parses `100;w=21600` (value; window in seconds). Undefined when the value is not a number. */
export function parseRateLimitValue(raw: string | undefined): { value: number; windowSeconds?: number } | undefined {
  if (raw === undefined) return undefined;
  const [head, ...params] = raw.split(';');
  const value = Number(head!.trim());
  if (head!.trim() === '' || !Number.isFinite(value) || value < 0) return undefined;
  let windowSeconds: number | undefined;
  for (const p of params) {
    const m = /^\s*w\s*=\s*(\d+)\s*$/i.exec(p);
    if (m) windowSeconds = Number(m[1]);
  }
  return windowSeconds === undefined ? { value } : { value, windowSeconds };
}

type HeaderGetter = (name: string) => string | undefined;

/** The rate-limit headers present on a response, to pass on to clients (e.g. with a 429). */
export function pickRateLimitHeaders(get: HeaderGetter): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of Object.values(RATE_LIMIT_HEADERS)) {
    const v = get(name);
    if (v !== undefined) out[name] = v;
  }
  return out;
}

/** A snapshot from a response's headers, or undefined when it carried none. */
export function parseRateLimitSnapshot(get: HeaderGetter, observedAt: number): RateLimitSnapshot | undefined {
  const limit = parseRateLimitValue(get(RATE_LIMIT_HEADERS.limit));
  const remaining = parseRateLimitValue(get(RATE_LIMIT_HEADERS.remaining));
  const source = get(RATE_LIMIT_HEADERS.source);
  if (!limit && !remaining && source === undefined) return undefined;
  const windowSeconds = limit?.windowSeconds ?? remaining?.windowSeconds;
  return {
    ...(limit ? { limit: limit.value } : {}),
    ...(remaining ? { remaining: remaining.value } : {}),
    ...(windowSeconds !== undefined ? { windowSeconds } : {}),
    ...(source !== undefined ? { source } : {}),
    observedAt,
  };
}

/**
 * The upstream and repository an image reference names, as the cache keys them: no registry (or
 * one of Docker Hub's aliases) is `docker.io`, and Docker Hub's official images get `library/`
 * (`nginx` → `docker.io`, `library/nginx`), like docker's own reference rules.
 */
export function imageName(registry: string | undefined, path: string): { readonly upstream: string; readonly repo: string } {
  const upstream = canonicalRegistry(registry ?? DOCKER_HUB.name);
  return { upstream, repo: normalizeRepoName(upstream, path) };
}
