import type { Descriptor } from '../../domain/descriptor.js';
import { parseDigest, sha256Digest, type Digest } from '../../domain/digest.js';
import { RegistryError } from '../../domain/errors.js';
import { isTag, parseRepoName, type RepoKey, type RepoName, type Tag } from '../../domain/reference.js';
import { parseKeySpace } from '../../domain/registry-name.js';
import { checkManifest } from '../manifest-entry.js';
import type { ManifestStore, MetadataStore, StoredManifest, StoredManifestInfo } from '../manifest-store.js';
import { checkTagEntry, type TagEntry } from '../tag-store.js';

/** An in-memory `ManifestStore` for tests; passes the same conformance suite as `FsManifestStore`. */
export class MemoryManifestStore implements ManifestStore {
  readonly #manifests = new Map<Digest, { mediaType: string; body: Buffer }>();

  async get(digest: Digest): Promise<StoredManifest | undefined> {
    const m = this.#manifests.get(parseDigest(digest));
    if (!m) return undefined;
    // Copies keep the stored bytes immutable whatever callers do with theirs.
    return { descriptor: { digest, size: m.body.length, mediaType: m.mediaType }, body: Buffer.from(m.body) };
  }

  /** See `FsManifestStore.put`: `DIGEST_INVALID`, `MANIFEST_INVALID`, and the first media type stays. */
  async put(body: Buffer, mediaType: string, expected?: Digest): Promise<Descriptor> {
    const digest = sha256Digest(body);
    if (expected !== undefined && expected !== digest) throw new RegistryError('DIGEST_INVALID', { expected, actual: digest });
    checkManifest(body, mediaType);
    const existing = this.#manifests.get(digest);
    if (existing) return { digest, size: existing.body.length, mediaType: existing.mediaType };
    this.#manifests.set(digest, { mediaType, body: Buffer.from(body) });
    return { digest, size: body.length, mediaType };
  }

  async delete(digest: Digest): Promise<void> {
    this.#manifests.delete(parseDigest(digest));
  }

  /** Every manifest, in digest order (no `modifiedAt`: memory keeps no times). */
  async *list(): AsyncIterable<StoredManifestInfo> {
    for (const digest of [...this.#manifests.keys()].sort()) {
      const m = this.#manifests.get(digest);
      if (m) yield { digest, size: m.body.length };
    }
  }
}

interface RepoMetadata {
  readonly key: RepoKey;
  readonly tags: Map<string, TagEntry>;
  readonly manifests: Set<Digest>;
  readonly blobs: Set<Digest>;
}

/**
 * An in-memory `MetadataStore` for tests. It validates names as `FsMetadataStore` does
 * (`NAME_INVALID`, `TAG_INVALID`, `DIGEST_INVALID`) and passes the same conformance suite.
 */
export class MemoryMetadataStore implements MetadataStore {
  readonly #repos = new Map<string, RepoMetadata>();
  /** When each blob link was last made (`blobLinkedAt`), by repository id and digest. */
  readonly #linkedAt = new Map<string, number>();
  readonly #clock: () => number;

  constructor(opts: { readonly clock?: () => number } = {}) {
    this.#clock = opts.clock ?? Date.now;
  }

  async getTag(key: RepoKey, tag: Tag): Promise<TagEntry | undefined> {
    const t = checkTag(tag);
    return this.#repo(key, false)?.tags.get(t);
  }

  async setTag(key: RepoKey, tag: Tag, entry: TagEntry): Promise<void> {
    const t = checkTag(tag);
    this.#repo(key, true)!.tags.set(t, Object.freeze(checkTagEntry(entry)));
  }

  async listTags(key: RepoKey): Promise<string[]> {
    return [...(this.#repo(key, false)?.tags.keys() ?? [])].sort();
  }

  async linkManifest(key: RepoKey, digest: Digest): Promise<void> {
    this.#repo(key, true)!.manifests.add(parseDigest(digest));
  }

  async hasManifest(key: RepoKey, digest: Digest): Promise<boolean> {
    return this.#repo(key, false)?.manifests.has(parseDigest(digest)) ?? false;
  }

  async deleteTag(key: RepoKey, tag: Tag): Promise<void> {
    this.#repo(key, false)?.tags.delete(checkTag(tag));
  }

  async unlinkManifest(key: RepoKey, digest: Digest): Promise<void> {
    this.#repo(key, false)?.manifests.delete(parseDigest(digest));
  }

  async listManifests(key: RepoKey): Promise<Digest[]> {
    return [...(this.#repo(key, false)?.manifests ?? [])].sort();
  }

  async linkBlob(key: RepoKey, digest: Digest): Promise<void> {
    this.#repo(key, true)!.blobs.add(parseDigest(digest));
    this.#linkedAt.set(`${key.upstream}\n${key.repo}\n${digest}`, this.#clock());
  }

  async blobLinkedAt(key: RepoKey, digest: Digest): Promise<number | undefined> {
    if (!(await this.hasBlob(key, digest))) return undefined;
    return this.#linkedAt.get(`${key.upstream}\n${key.repo}\n${digest}`);
  }

  async hasBlob(key: RepoKey, digest: Digest): Promise<boolean> {
    return this.#repo(key, false)?.blobs.has(parseDigest(digest)) ?? false;
  }

  async unlinkBlob(key: RepoKey, digest: Digest): Promise<void> {
    this.#repo(key, false)?.blobs.delete(parseDigest(digest));
  }

  async listBlobs(key: RepoKey): Promise<Digest[]> {
    return [...(this.#repo(key, false)?.blobs ?? [])].sort();
  }

  async *listRepositories(): AsyncIterable<RepoKey> {
    const ids = [...this.#repos.keys()].sort();
    for (const id of ids) {
      const r = this.#repos.get(id);
      if (r) yield r.key;
    }
  }

  #repo(key: RepoKey, create: boolean): RepoMetadata | undefined {
    const upstream = parseKeySpace(key.upstream);
    const repo: RepoName = parseRepoName(key.repo);
    const id = `${upstream}\0${repo}`;
    let r = this.#repos.get(id);
    if (!r && create) {
      r = { key: Object.freeze({ upstream, repo }), tags: new Map(), manifests: new Set(), blobs: new Set() };
      this.#repos.set(id, r);
    }
    return r;
  }
}

function checkTag(tag: Tag): Tag {
  if (!isTag(tag)) throw new RegistryError('TAG_INVALID', { tag: String(tag).slice(0, 200) }, { message: 'invalid tag' });
  return tag;
}
