import { isDigest, type Digest } from './digest.js';
import { RegistryError } from './errors.js';

/** A validated repository name (`library/alpine`, `org/team/app`), already normalised for its upstream. */
export type RepoName = string & { readonly __brand: 'RepoName' };
export type Tag = string & { readonly __brand: 'Tag' };
export type Reference = { readonly kind: 'tag'; readonly tag: Tag } | { readonly kind: 'digest'; readonly digest: Digest };

/**
 * A repository on a given upstream: what a request is routed to (http/resolve-repo.ts) and what keys
 * all per-repository metadata. `upstream` is a configured registry name (domain/registry-name.ts).
 */
export interface RepoKey {
  readonly upstream: string;
  readonly repo: RepoName;
}

/**
 * The `upstream` of a hosted repository's key (config `hosted.repositories`: content pushed to
 * hubcache itself, never looked up upstream). It starts with `_`, which no registry name can
 * (domain/registry-name.ts: lowercase hostname labels), so hosted metadata lives in a key space
 * of its own (`repositories/_hosted/<repo>/` on the filesystem) that no configured upstream can
 * ever share, whatever it is called.
 */
export const HOSTED_UPSTREAM = '_hosted';

export function isHostedKey(key: RepoKey): boolean {
  return key.upstream === HOSTED_UPSTREAM;
}

// distribution/reference grammar: path components of lowercase alphanumerics separated by
// `.`, `_`, `__` or one or more `-`. A component can't start with a separator, so `.` and `..`
// can never be a component and a name can never escape the store's directories.
const COMPONENT_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
// The OCI image-spec digest grammar's `algorithm ":"` (image-spec descriptor.md, "Digests"):
// components `[a-z0-9]+` joined by one of `+._-`. No tag can contain a ':'.
const DIGEST_ALGORITHM_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:/;
/** distribution limits the whole name to 255 characters. */
export const MAX_NAME_LENGTH = 255;

export function isValidRepoPath(name: string): boolean {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH) return false;
  return name.split('/').every((c) => COMPONENT_RE.test(c));
}

export function parseRepoName(name: string): RepoName {
  if (!isValidRepoPath(name)) throw new RegistryError('NAME_INVALID', { name: name.slice(0, 300) }, { message: 'invalid repository name' });
  return name as RepoName;
}

export function isTag(s: string): s is Tag {
  return TAG_RE.test(s);
}

/**
 * Whether `s` has the form of a digest, `algorithm:encoded`, valid or not (`sha256:zzz`,
 * `md5:abc`): such a reference is a malformed digest, where any other non-tag is merely not a tag.
 */
export function claimsDigest(s: string): boolean {
  return DIGEST_ALGORITHM_RE.test(s);
}

/**
 * A tag or a digest. Throws DIGEST_INVALID for a reference that claims to be a digest (see
 * `claimsDigest`) but isn't a sha256 one, TAG_INVALID for anything else that isn't a tag.
 */
export function parseReference(s: string): Reference {
  if (claimsDigest(s)) {
    if (!isDigest(s)) throw new RegistryError('DIGEST_INVALID', { reference: s.slice(0, 200) }, { message: 'invalid digest' });
    return { kind: 'digest', digest: s };
  }
  if (!isTag(s)) throw new RegistryError('TAG_INVALID', { tag: s.slice(0, 200) }, { message: 'invalid tag' });
  return { kind: 'tag', tag: s };
}

export function referenceString(ref: Reference): string {
  return ref.kind === 'tag' ? ref.tag : ref.digest;
}
