/**
 * Pins (`cache.pin`): image references the cache keeps warm and never evicts (issue #13). One
 * syntax, parsed here and nowhere else, with docker's reference rules for the name:
 *
 * - `nginx:1.27`, `ghcr.io/org/app:v1`, `alpine` (= `alpine:latest`): a **tag**, revalidated on its
 *   upstream's tag TTL and followed when it moves;
 * - `alpine@sha256:<hex>`: a **digest**, immutable;
 * - `redis:7.*`, `myorg/base:*`: a **tag pattern**, a glob over the repository's tags, the whole tag
 *   matched: `*` any run of tag characters (none included), `?` exactly one. No other character is
 *   special; the rest must be tag characters (`[A-Za-z0-9_.-]`), and a pattern is at most 128 long.
 *
 * The first path component is a registry when it contains a `.` or a `:` or is `localhost`
 * (`splitRegistry`); without one the image is on Docker Hub. The registry and repository are
 * returned as written: Docker Hub's aliases and its `library/` prefix are the upstream layer's
 * (upstream/docker-hub.ts, `imageName`).
 */
import { isDigest, type Digest } from './digest.js';
import { isTag, isValidRepoPath, type Tag } from './reference.js';
import { registryNameProblem, splitRegistry } from './registry-name.js';

export type PinSelector =
  | { readonly kind: 'tag'; readonly tag: Tag }
  | { readonly kind: 'digest'; readonly digest: Digest }
  | { readonly kind: 'pattern'; readonly pattern: string };

export interface PinSpec {
  /** The pin as configured (trimmed): how logs and errors name it. */
  readonly source: string;
  /** The registry as written, `undefined` when none was (Docker Hub). */
  readonly registry: string | undefined;
  /** The repository path as written (`nginx`, `org/app`). */
  readonly path: string;
  readonly selector: PinSelector;
}

const PATTERN_RE = /^[A-Za-z0-9_.*?-]{1,128}$/;

/** The pin, or why it isn't one (a message naming the pin, for the configuration's errors). */
export function parsePin(input: string): PinSpec | { readonly error: string } {
  const source = input.trim();
  const fail = (why: string) => ({ error: `${JSON.stringify(source)}: ${why}` });
  if (source === '') return fail('empty image reference');
  let rest = source;
  let selector: PinSelector = { kind: 'tag', tag: 'latest' as Tag };
  const at = rest.indexOf('@');
  if (at !== -1) {
    const digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(digest)) return fail('invalid digest (expected sha256:<64 hex digits>)');
    if (rest.lastIndexOf(':') > rest.lastIndexOf('/')) return fail('pin a tag or a digest, not both');
    selector = { kind: 'digest', digest };
  } else {
    const colon = rest.lastIndexOf(':');
    if (colon > rest.lastIndexOf('/')) {
      const tag = rest.slice(colon + 1);
      rest = rest.slice(0, colon);
      if (/[*?]/.test(tag)) {
        if (!PATTERN_RE.test(tag)) return fail('invalid tag pattern (tag characters A-Z a-z 0-9 _ . - plus * and ?, at most 128)');
        selector = { kind: 'pattern', pattern: tag };
      } else {
        if (!isTag(tag)) return fail('invalid tag (A-Z a-z 0-9 _ . -, at most 128, not starting with . or -; a tag pattern may add * and ?, nothing else)');
        selector = { kind: 'tag', tag };
      }
    }
  }
  let registry: string | undefined;
  const prefixed = splitRegistry(rest);
  if (prefixed) {
    registry = prefixed.registry;
    rest = prefixed.rest;
    const problem = registryNameProblem(registry);
    if (problem) return fail(`invalid registry: ${problem}`);
  }
  if (!isValidRepoPath(rest)) return fail('invalid repository name (lowercase letters, digits, separators . _ __ -, components joined by /)');
  return { source, registry, path: rest, selector };
}

/** Whether `tag` matches the tag pattern (`*` any run, `?` one character; the whole tag). */
export function matchTagPattern(pattern: string, tag: string): boolean {
  return compileTagPattern(pattern)(tag);
}

/** The pattern as a predicate (compiled once, for matching a whole tag list). */
export function compileTagPattern(pattern: string): (tag: string) => boolean {
  // Only `.` and `-` among the tag characters mean anything to a RegExp (outside a class only `.`).
  const source = pattern.replace(/[.]/g, '\\.').replace(/\*/g, '[A-Za-z0-9_.-]*').replace(/\?/g, '[A-Za-z0-9_.-]');
  const re = new RegExp(`^${source}$`);
  return (tag) => re.test(tag);
}

/** `os/architecture[/variant]`, as `cache.pinPlatforms` and `prefetch --platform` name platforms. */
const PLATFORM_RE = /^[a-z0-9]+\/[a-z0-9_]+(?:\/[a-z0-9]+)?$/;

export function isPlatformName(s: string): boolean {
  return PLATFORM_RE.test(s);
}

/**
 * Whether an index entry's platform is one of `wanted` (`linux/arm64` also takes every variant of
 * it; `linux/arm/v7` only that one). Every entry is wanted when `wanted` is empty.
 */
export function platformWanted(wanted: readonly string[], platform: { os?: string; architecture?: string; variant?: string } | undefined): boolean {
  if (wanted.length === 0) return true;
  if (!platform?.os || !platform.architecture) return false;
  const name = `${platform.os}/${platform.architecture}${platform.variant ? `/${platform.variant}` : ''}`;
  return wanted.some((w) => name === w || name.startsWith(`${w}/`));
}
