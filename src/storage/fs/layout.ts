/**
 * The on-disk layout of a hubcache storage root. This comment is the reference; docs/storage-layout.md
 * points here. (Modelled on distribution's registry/storage/paths.go.)
 *
 *   <root>/
 *     blobs/sha256/<hex[0:2]>/<hex>              committed blob bytes; `sha256sum` of the file is <hex>
 *     blob-sizes/<hex[0:2]>                      lines `<hex> <size>`: the sizes of that partition's blobs
 *                                                (blob-sizes.ts), a hint: readdir says which blobs exist,
 *                                                a blob without a line is stat'ed
 *     manifests/sha256/<hex[0:2]>/<hex>          manifest bytes, byte-exact as received
 *     manifests/sha256/<hex[0:2]>/<hex>.json     sidecar {"mediaType": "..."}, renamed into place BEFORE
 *                                                the body, so a visible body always has a media type
 *     manifest-refs/<hex[0:2]>                   lines `<hex> i|b <JSON array>`: what that partition's
 *                                                manifests reference (manifest-refs.ts), a hint: readdir
 *                                                says which manifests exist, one without a line is read
 *     repositories/<upstream>/<repo path>/       one directory per component of the repository name
 *       _tags/<tag>                              TagEntry JSON {digest, mediaType, size, validatedAt}
 *       _manifests/<hex>                         link file containing "sha256:<hex>": this manifest was
 *                                                fetched for (or pushed to) this repository
 *       _tagindex                                the tag index (tag-index.ts): every tag's entry in one
 *                                                file, so a listing reads one file per repository; derived
 *                                                from `_tags/` (the truth), trusted only while it records
 *                                                `_tags/`'s current mtime, else ignored and rebuilt
 *     repositories/_hosted/<repo path>/          hosted (pushed) repositories (config hosted.repositories):
 *                                                `_hosted` is no registry name (those never start with
 *                                                `_`), so hosted keys can't collide with an upstream's
 *       _tags/<tag>, _manifests/<hex>            as above (a pushed tag's validatedAt is its push time)
 *       _layers/<hex>                            link file "sha256:<hex>": blob pushed (uploaded or
 *                                                mounted) into this repository; a hosted blob GET needs it
 *     tmp/blob-<uuid>                            a blob being written: a cache fill, or a push's upload
 *                                                session until its final PUT renames it into blobs/
 *                                                (removed on cancel, on expiry, and at start)
 *     tmp/<kind>-<uuid>                          files being written (uploads in progress); on the same
 *                                                filesystem so that rename(2) is atomic; swept at start
 *     tmp/lock-claim-<hash>-<n>                  a stale lock's takeover in progress (store-lock.ts)
 *     access.log                                 last-access record (fs-access-record.ts): lines
 *                                                `<ms> b <digest>`, `<ms> m <digest>`,
 *                                                `<ms> t <upstream> <repo> <tag>`, or `- <subject>` for
 *                                                a forgotten one; the latest line of a subject wins;
 *                                                appended in batches, compacted by rename from tmp/
 *     auth/token-signing-key.pem                 the key signing hubcache's bearer tokens (auth.htpasswd set):
 *                                                ECDSA P-256 PKCS#8 PEM, mode 0600, created at first start
 *                                                (written aside and link(2)ed into place; auth/token.ts)
 *     hubcache.lock                              ownership lock (store-lock.ts): JSON {pid, hostname,
 *                                                pidNamespace?, startedAt, procStartTime?, token} of the
 *                                                process that owns the root; its mtime is the owner's
 *                                                heartbeat (every 10 s)
 *
 * Examples: repositories/docker.io/library/alpine/_tags/3.20,
 *           repositories/registry.example.com:5000/org/team/app/_manifests/<hex>.
 *
 * Invariants:
 * - Every file outside tmp/ is complete: it is written in tmp/, fsynced, then renamed into place,
 *   and the directory is fsynced. A crash leaves at most garbage in tmp/, which `FsBlobStore.init()`
 *   (run by the owner's `Storage.init()`) removes. Content is only ever replaced by identical content (content addressing).
 * - Paths are built only from validated values: a sha256 `Digest` (64 lowercase hex), a repository
 *   name whose components match `[a-z0-9]+([._-][a-z0-9]+)*`, a tag matching
 *   `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}` and a registry name (domain/registry-name.ts: a lowercase
 *   hostname[:port], at most 253 characters). None of them can be `.` or
 *   `..` or contain a separator; the mapper re-validates anyway and asserts that every path it
 *   returns lies inside the root (defence in depth).
 * - A repository component never starts with `_`, so `_tags` and `_manifests` can't collide with a
 *   nested repository (`org/app` and `org/app/sub` live side by side).
 * - Tags differing only in case (`Latest`, `latest`) would share a file on a case-insensitive
 *   filesystem (macOS default); run the store on a case-sensitive one.
 * - One process owns a storage root: the start-up sweep of tmp/ would break another process's
 *   uploads in progress. `hubcache.lock` enforces it: `serve` (and `prefetch` without --server)
 *   creates it with O_EXCL before anything else touches the store and removes it on shutdown; a
 *   second process fails to start. A lock is stale, and taken over, when its holder is on this host
 *   (same hostname and PID namespace) and its pid is gone, or when its mtime is older than 30 s
 *   (`storage.lockStaleAfter`); a holder elsewhere (another host or PID namespace) is watched by
 *   `serve` for up to 30 s, and its lock taken over if its mtime doesn't move meanwhile.
 *   Readers (`hubcache ls`) don't take it.
 */
import { randomUUID } from 'node:crypto';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import { digestHex, parseDigest, type Digest } from '../../domain/digest.js';
import { RegistryError } from '../../domain/errors.js';
import { isTag, parseRepoName, type RepoKey, type Tag } from '../../domain/reference.js';
import { parseKeySpace } from '../../domain/registry-name.js';

export const TAGS_DIR = '_tags';
export const MANIFEST_LINKS_DIR = '_manifests';
/** Blobs pushed to a hosted repository (`repositories/_hosted/<repo>/_layers/<hex>`). */
export const BLOB_LINKS_DIR = '_layers';
/** A repository's tag index (tag-index.ts), next to `_tags/`. */
export const TAG_INDEX_FILE = '_tagindex';
/** The suffix of a manifest's media-type sidecar. */
export const MEDIA_TYPE_SUFFIX = '.json';

/** What a temp file is for; only shows up in its name, to make a look into tmp/ readable. */
export type TempKind = 'blob' | 'manifest' | 'meta' | 'lock' | 'access' | 'index';

export interface StorageLayoutOptions {
  /** The storage root; resolved to an absolute path once. */
  readonly root: string;
}

/**
 * Maps typed values to paths under the storage root (see the layout comment above). Every method
 * throws a `RegistryError` (`DIGEST_INVALID`, `NAME_INVALID`, `TAG_INVALID`) for a value that slipped
 * past the type system unvalidated, and an `Error` if a path would leave the root.
 */
export class StorageLayout {
  readonly root: string;
  readonly tmpDir: string;
  readonly blobsDir: string;
  readonly manifestsDir: string;
  readonly repositoriesDir: string;
  /** The ownership lock: outside tmp/, so the start-up sweep can't remove it. */
  readonly lockPath: string;
  /** The last-access record (fs-access-record.ts). */
  readonly accessLogPath: string;

  constructor(opts: StorageLayoutOptions) {
    this.root = resolve(opts.root);
    this.tmpDir = this.#inside('tmp');
    this.blobsDir = this.#inside('blobs', 'sha256');
    this.manifestsDir = this.#inside('manifests', 'sha256');
    this.repositoriesDir = this.#inside('repositories');
    this.lockPath = this.#inside('hubcache.lock');
    this.accessLogPath = this.#inside('access.log');
  }

  /** A fresh, unique path in tmp/ (the file does not exist yet). */
  tempPath(kind: TempKind): string {
    return this.#inside('tmp', `${kind}-${randomUUID()}`);
  }

  blobPath(digest: Digest): string {
    const hex = hexOf(digest);
    return this.#inside('blobs', 'sha256', hex.slice(0, 2), hex);
  }

  manifestPath(digest: Digest): string {
    const hex = hexOf(digest);
    return this.#inside('manifests', 'sha256', hex.slice(0, 2), hex);
  }

  /** The sidecar holding the manifest's media type. */
  manifestMediaTypePath(digest: Digest): string {
    const hex = hexOf(digest);
    return this.#inside('manifests', 'sha256', hex.slice(0, 2), hex + MEDIA_TYPE_SUFFIX);
  }

  /** `repositories/<upstream>`: the root of one upstream's repositories. */
  upstreamDir(upstream: string): string {
    return this.#inside('repositories', parseKeySpace(upstream));
  }

  /** `repositories/<upstream>/<repo path>`. */
  repositoryDir(key: RepoKey): string {
    const repo = parseRepoName(key.repo);
    return this.#inside('repositories', parseKeySpace(key.upstream), ...repo.split('/'));
  }

  tagsDir(key: RepoKey): string {
    return join(this.repositoryDir(key), TAGS_DIR);
  }

  tagPath(key: RepoKey, tag: Tag): string {
    if (!isTag(tag)) throw new RegistryError('TAG_INVALID', { tag: String(tag).slice(0, 200) }, { message: 'invalid tag' });
    return this.#inside(relative(this.root, this.tagsDir(key)), tag);
  }

  manifestLinksDir(key: RepoKey): string {
    return join(this.repositoryDir(key), MANIFEST_LINKS_DIR);
  }

  manifestLinkPath(key: RepoKey, digest: Digest): string {
    return this.#inside(relative(this.root, this.manifestLinksDir(key)), hexOf(digest));
  }

  /** `repositories/<upstream>/<repo path>/_tagindex`: the tag index (tag-index.ts), derived from `_tags/`. */
  tagIndexPath(key: RepoKey): string {
    return join(this.repositoryDir(key), TAG_INDEX_FILE);
  }

  /** `blob-sizes/<ab>`: the sizes of the blobs of `blobs/sha256/<ab>/` (blob-sizes.ts), a hint derived from them. */
  blobSizesPath(prefix: string): string {
    if (!/^[a-f0-9]{2}$/.test(prefix)) throw new Error(`not a blob partition: ${JSON.stringify(prefix)}`);
    return this.#inside('blob-sizes', prefix);
  }

  /** `manifest-refs/<ab>`: what the manifests of `manifests/sha256/<ab>/` reference (manifest-refs.ts), a hint derived from them. */
  manifestRefsPath(prefix: string): string {
    if (!/^[a-f0-9]{2}$/.test(prefix)) throw new Error(`not a manifest partition: ${JSON.stringify(prefix)}`);
    return this.#inside('manifest-refs', prefix);
  }

  blobLinksDir(key: RepoKey): string {
    return join(this.repositoryDir(key), BLOB_LINKS_DIR);
  }

  blobLinkPath(key: RepoKey, digest: Digest): string {
    return this.#inside(relative(this.root, this.blobLinksDir(key)), hexOf(digest));
  }

  #inside(...segments: string[]): string {
    return resolveInside(this.root, ...segments);
  }
}

/**
 * `root` joined with `segments`, asserting that the result lies strictly inside `root`. Throws an
 * `Error` otherwise: with validated inputs that can't happen, so it signals a bug, not bad input.
 */
export function resolveInside(root: string, ...segments: string[]): string {
  const absRoot = resolve(root);
  const p = resolve(absRoot, ...segments);
  const rel = relative(absRoot, p);
  if (rel === '' || isAbsolute(rel) || rel === '..' || rel.startsWith('..' + sep)) {
    throw new Error(`storage path escapes the root: ${JSON.stringify(segments)}`);
  }
  return p;
}

function hexOf(digest: Digest): string {
  return digestHex(parseDigest(digest));
}
