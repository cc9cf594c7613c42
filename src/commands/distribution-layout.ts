import { existsSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { digestHex, isDigest, type Digest } from '../domain/digest.js';
import { isTag, isValidRepoPath, type Tag } from '../domain/reference.js';

/**
 * The filesystem layout of distribution (registry:2, Debian's `docker-registry`), read-only, for
 * `hubcache import`. Its reference is distribution's `registry/storage/paths.go`; what we read:
 *
 * ```
 * <root>/docker/registry/v2/
 *   blobs/sha256/<hex[0:2]>/<hex>/data                          every blob's bytes, manifests' too
 *   repositories/<name>/                                        <name> may have several components
 *     _manifests/tags/<tag>/current/link                        "sha256:<hex>": what the tag names
 *     _manifests/revisions/sha256/<hex>/link                    "sha256:<hex>": a manifest of the repository
 *     _layers/sha256/<hex>/link                                 "sha256:<hex>": a blob of the repository
 *     _uploads/                                                 uploads in progress (ignored)
 * ```
 *
 * A link is a small text file naming a digest. Nothing here is trusted: a link that doesn't name
 * a digest (or not the one its directory names), a link to a blob whose `data` is missing, a name
 * hubcache can't store: each is a `LayoutProblem`, and what it names is left out. Whether a blob's
 * bytes hash to its digest is checked when they are copied (the store's verifying writer).
 */
export interface DistributionRepository {
  /** The repository name, e.g. `myorg/app`. */
  readonly name: string;
  /** Tags and the manifest each names (only tags whose manifest is a revision of the repository with data). */
  readonly tags: ReadonlyArray<{ readonly tag: Tag; readonly digest: Digest }>;
  /** The repository's manifests (revisions) whose data exists, in digest order. */
  readonly manifests: readonly Digest[];
  /** The repository's blobs (`_layers`) whose data exists, in digest order. */
  readonly layers: readonly Digest[];
}

export type LayoutProblemKind = 'broken-link' | 'missing-blob' | 'invalid-name' | 'corrupt-blob' | 'invalid-manifest' | 'incomplete-manifest' | 'tag-conflict';

/** Something in the source that can't be imported; the rest is. */
export interface LayoutProblem {
  readonly kind: LayoutProblemKind;
  /** The repository concerned, when there is one. */
  readonly repository?: string;
  /** The file or directory concerned (relative to the v2 root), or the digest. */
  readonly what: string;
  readonly message: string;
}

/** `DIR` or `DIR/docker/registry/v2`; throws when neither is a distribution store. */
export function distributionRoot(dir: string): string {
  for (const candidate of [join(dir, 'docker', 'registry', 'v2'), dir]) {
    if (existsSync(join(candidate, 'repositories')) || existsSync(join(candidate, 'blobs'))) return candidate;
  }
  throw new Error(`${dir}: not a registry:2 filesystem store (no docker/registry/v2/repositories or blobs in it; give the registry's rootdirectory)`);
}

export class DistributionLayout {
  /** The `docker/registry/v2` directory. */
  readonly v2: string;

  constructor(v2: string) {
    this.v2 = v2;
  }

  /** Where the bytes of `digest` are. */
  blobPath(digest: Digest): string {
    const hex = digestHex(digest);
    return join(this.v2, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
  }

  /** The size of the blob's data, or `undefined` when it has none. */
  async blobSize(digest: Digest): Promise<number | undefined> {
    try {
      const s = await stat(this.blobPath(digest));
      return s.isFile() ? s.size : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
      throw err;
    }
  }

  /**
   * Every repository, by name, with what it links; `problems` receives what is left out. A
   * directory is a repository when it has `_manifests` or `_layers`; its other subdirectories
   * (not starting with `_`) are searched for nested repositories.
   */
  async *repositories(problems: LayoutProblem[]): AsyncIterable<DistributionRepository> {
    yield* this.#walk(join(this.v2, 'repositories'), [], problems);
  }

  async *#walk(dir: string, components: string[], problems: LayoutProblem[]): AsyncIterable<DistributionRepository> {
    const entries = await readdirSorted(dir);
    const name = components.join('/');
    if (components.length > 0 && (entries.includes('_manifests') || entries.includes('_layers'))) {
      if (!isValidRepoPath(name)) {
        problems.push({ kind: 'invalid-name', repository: name, what: `repositories/${name}`, message: 'not a repository name hubcache can store' });
      } else {
        const repo = await this.#repository(dir, name, problems);
        if (repo) yield repo;
      }
    }
    for (const e of entries) {
      if (e.startsWith('_')) continue;
      if (!(await isDir(join(dir, e)))) continue;
      yield* this.#walk(join(dir, e), [...components, e], problems);
    }
  }

  async #repository(dir: string, name: string, problems: LayoutProblem[]): Promise<DistributionRepository | undefined> {
    const rel = (p: string) => `repositories/${name}/${p}`;
    const linked = async (sub: string): Promise<Digest[]> => {
      const out: Digest[] = [];
      for (const hex of await readdirSorted(join(dir, sub, 'sha256'))) {
        const path = `${sub}/sha256/${hex}/link`;
        const digest = await readLink(join(dir, path));
        if (!digest || digest !== `sha256:${hex}`) {
          problems.push({ kind: 'broken-link', repository: name, what: rel(path), message: digest ? `names ${digest}, not sha256:${hex}` : 'missing or not a sha256 digest' });
          continue;
        }
        if ((await this.blobSize(digest)) === undefined) {
          problems.push({ kind: 'missing-blob', repository: name, what: digest, message: `${rel(path)} names a blob with no data (blobs/sha256/${hex.slice(0, 2)}/${hex}/data)` });
          continue;
        }
        out.push(digest);
      }
      return out;
    };
    const manifests = await linked('_manifests/revisions');
    const layers = await linked('_layers');
    const tags: Array<{ tag: Tag; digest: Digest }> = [];
    for (const tag of await readdirSorted(join(dir, '_manifests', 'tags'))) {
      const path = `_manifests/tags/${tag}/current/link`;
      if (!isTag(tag)) {
        problems.push({ kind: 'invalid-name', repository: name, what: rel(`_manifests/tags/${tag}`), message: 'not a valid tag' });
        continue;
      }
      const digest = await readLink(join(dir, path));
      if (!digest) {
        problems.push({ kind: 'broken-link', repository: name, what: rel(path), message: 'missing or not a sha256 digest' });
        continue;
      }
      if (!manifests.includes(digest)) {
        problems.push({ kind: 'missing-blob', repository: name, what: `${name}:${tag}`, message: `the tag names ${digest}, which is not a manifest of the repository with data` });
        continue;
      }
      tags.push({ tag, digest });
    }
    if (manifests.length === 0 && layers.length === 0 && tags.length === 0) return undefined;
    return { name, tags, manifests, layers };
  }
}

/** The digest a link file names, or `undefined` (missing, unreadable, not a sha256 digest). */
async function readLink(path: string): Promise<Digest | undefined> {
  let text: string;
  try {
    text = (await readFile(path, 'utf8')).trim();
  } catch {
    return undefined;
  }
  return isDigest(text) && text.startsWith('sha256:') ? text : undefined;
}

async function readdirSorted(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
    throw err;
  }
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}
