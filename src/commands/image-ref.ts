import { isDigest } from '../domain/digest.js';
import { isTag, isValidRepoPath } from '../domain/reference.js';
import { registryNameProblem, splitRegistry } from '../domain/registry-name.js';
import { canonicalRegistry, DOCKER_HUB } from '../upstream/docker-hub.js';

export interface ImageRef {
  /** Registry as written (`docker.io` when none was). */
  readonly registry: string;
  readonly repo: string;
  /** A tag or a digest. */
  readonly reference: string;
}

/**
 * Parses `alpine`, `alpine:3.20`, `org/app@sha256:…`, `ghcr.io/org/app:1.0` the way docker does:
 * the first component is a registry when it contains `.` or `:` or is `localhost`
 * (`splitRegistry`); Docker Hub's aliases mean `docker.io`. The repository is returned as written
 * (`alpine`, not `library/alpine`): the mirror adds Docker Hub's `library/`.
 */
export function parseImageRef(input: string): ImageRef {
  let rest = input.trim();
  let reference = 'latest';
  const at = rest.indexOf('@');
  if (at !== -1) {
    reference = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(reference)) throw new Error(`${input}: invalid digest`);
  } else {
    const colon = rest.lastIndexOf(':');
    if (colon > rest.lastIndexOf('/')) {
      reference = rest.slice(colon + 1);
      rest = rest.slice(0, colon);
      if (!isTag(reference)) throw new Error(`${input}: invalid tag`);
    }
  }
  let registry: string = DOCKER_HUB.name;
  const prefixed = splitRegistry(rest);
  if (prefixed) {
    registry = canonicalRegistry(prefixed.registry);
    rest = prefixed.rest;
    const problem = registryNameProblem(registry);
    if (problem) throw new Error(`${input}: invalid registry: ${problem}`);
  }
  if (!isValidRepoPath(rest)) throw new Error(`${input}: invalid repository name`);
  return { registry, repo: rest, reference };
}

/** The /v2 path prefix that asks a hubcache instance for this image (default registry → plain path). */
export function mirrorPath(ref: ImageRef, defaultRegistry: string = DOCKER_HUB.name): string {
  return ref.registry === defaultRegistry ? `/v2/${ref.repo}` : `/v2/${ref.registry}/${ref.repo}`;
}
