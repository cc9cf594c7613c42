import type { BlobResult, ManifestResult, RangeSpec, ReadOptions, RegistryReader, TagListResult } from '../cache/registry-reader.js';
import { resolveRange } from '../cache/registry-reader.js';
import type { Descriptor } from '../domain/descriptor.js';
import { sha256Digest, type Digest } from '../domain/digest.js';
import { RegistryError } from '../domain/errors.js';
import { manifestMediaType } from '../domain/manifest.js';
import { manifestRefs, pushedManifestRefs, type ManifestRefs } from '../domain/manifest-refs.js';
import { MediaTypes } from '../domain/media-types.js';
import type { Reference, RepoKey, Tag } from '../domain/reference.js';
import { TagList, type TagPageRequest } from '../domain/tag-list.js';
import type { Logger } from '../lib/logger.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { ManifestStore, MetadataStore } from '../storage/manifest-store.js';
import type { UploadSessions } from '../storage/upload-sessions.js';
import { HostedContent } from './hosted-content.js';

/** An upload session as the HTTP layer sees it. */
export interface UploadStatus {
  readonly id: string;
  /** Bytes received so far. */
  readonly offset: number;
}

export interface HostedRegistryOptions {
  readonly blobs: BlobStore;
  readonly manifests: ManifestStore;
  readonly metadata: MetadataStore;
  readonly uploads: UploadSessions;
  /** `hosted.allowDelete`: DELETE of manifests, tags and blobs; otherwise `UNSUPPORTED` (405). */
  readonly allowDelete: boolean;
  readonly content?: HostedContent;
  readonly clock?: () => number;
  readonly logger?: Logger;
}

/**
 * The registry of hosted repositories (config `hosted.repositories`): content pushed to hubcache,
 * served from the local store only — never looked up upstream, whatever is missing (dependency
 * confusion). Keys are `{upstream: '_hosted', repo}` (domain/reference.ts `HOSTED_UPSTREAM`).
 *
 * Reads implement `RegistryReader`, like the pull-through cache, so the HTTP handlers serve both
 * alike. Writes are the push side of the distribution spec: blob uploads (upload sessions,
 * storage/upload-sessions.ts), mounts, manifest PUTs, and deletes behind `allowDelete`.
 */
export class HostedRegistry implements RegistryReader {
  readonly content: HostedContent;
  readonly #o: HostedRegistryOptions;
  readonly #clock: () => number;
  /** What the referrers API needs of each manifest, parsed once (manifests are immutable). */
  readonly #refsCache = new Map<Digest, ManifestRefs & { readonly descriptor: Descriptor }>();

  constructor(opts: HostedRegistryOptions) {
    this.#o = opts;
    this.content = opts.content ?? new HostedContent();
    this.#clock = opts.clock ?? Date.now;
  }

  // --- reads --------------------------------------------------------------------------------

  async getManifest(key: RepoKey, ref: Reference, _opts: ReadOptions & { head?: boolean }): Promise<ManifestResult> {
    const digest = await this.#resolve(key, ref);
    const stored = digest && (await this.#o.manifests.get(digest));
    if (!stored) throw new RegistryError('MANIFEST_UNKNOWN', { repository: key.repo, reference: ref.kind === 'tag' ? ref.tag : ref.digest });
    return { descriptor: stored.descriptor, body: stored.body, outcome: 'hit' };
  }

  async getBlob(key: RepoKey, digest: Digest, opts: ReadOptions & { head?: boolean; range?: RangeSpec }): Promise<BlobResult> {
    const info = (await this.#o.metadata.hasBlob(key, digest)) ? await this.#o.blobs.stat(digest) : undefined;
    if (!info) throw new RegistryError('BLOB_UNKNOWN', { repository: key.repo, digest });
    const range = resolveRange(opts.range, info.size);
    if (opts.head) return { digest, size: info.size, ...(range ? { range } : {}), source: 'cache' };
    const body = await this.#o.blobs.open(digest, { ...(range ? { range } : {}), signal: opts.signal });
    return { digest, size: info.size, ...(range ? { range } : {}), body, source: 'cache' };
  }

  async listTags(key: RepoKey, page: TagPageRequest, _opts: ReadOptions): Promise<TagListResult> {
    const tags = await this.#o.metadata.listTags(key);
    if (tags.length === 0 && (await this.#o.metadata.listManifests(key)).length === 0) {
      throw new RegistryError('NAME_UNKNOWN', { repository: key.repo });
    }
    const { tags: pageTags, next } = TagList.of(tags).page(page);
    return { name: key.repo, tags: pageTags, ...(next ? { next } : {}) };
  }

  /**
   * The referrers of `subject` in the repository (OCI distribution spec 1.1, "Listing Referrers"):
   * an image index of the descriptors of the manifests whose `subject` is it, with their
   * `artifactType` and `annotations`; only those of `artifactType` when it is given. An unknown
   * subject has no referrers (an empty index, not a 404). Walks the repository's manifests: each
   * is parsed once and remembered.
   */
  async referrers(key: RepoKey, subject: Digest, artifactType?: string): Promise<Buffer> {
    const manifests: object[] = [];
    for (const digest of await this.#o.metadata.listManifests(key)) {
      const refs = await this.#refsOf(digest);
      if (!refs || refs.subject !== subject) continue;
      if (artifactType !== undefined && refs.artifactType !== artifactType) continue;
      manifests.push({
        mediaType: refs.descriptor.mediaType,
        digest: refs.descriptor.digest,
        size: refs.descriptor.size,
        ...(refs.artifactType !== undefined ? { artifactType: refs.artifactType } : {}),
        ...(refs.annotations && Object.keys(refs.annotations).length > 0 ? { annotations: refs.annotations } : {}),
      });
    }
    return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests }));
  }

  // --- blob uploads -------------------------------------------------------------------------

  async startUpload(key: RepoKey): Promise<UploadStatus> {
    return status(await this.#o.uploads.start(key));
  }

  /** Whether this process holds upload session `id` (with several replicas, another one may). */
  holdsUpload(id: string): boolean {
    return this.#o.uploads.has(id);
  }

  uploadStatus(key: RepoKey, id: string): UploadStatus {
    return status(this.#o.uploads.get(key, id));
  }

  async appendUpload(key: RepoKey, id: string, body: AsyncIterable<Uint8Array>, start?: number): Promise<UploadStatus> {
    return status(await this.#o.uploads.append(key, id, body, start));
  }

  /** The final PUT: the body's bytes (if any) are appended, then the blob is verified, published and linked to the repository. */
  async finishUpload(key: RepoKey, id: string, digest: Digest, body?: AsyncIterable<Uint8Array>, expectedSize?: number): Promise<void> {
    // Held from before the commit: an evictor must not take the blob between its commit and its
    // link, nor garbage collection remove it (or its link) meanwhile.
    const release = await this.content.use([digest]);
    this.content.add(digest, 0);
    try {
      const info = await this.#o.uploads.finish(key, id, digest, body, expectedSize);
      await this.#linkBlob(key, digest, info.size);
    } finally {
      this.content.remove(digest);
      release();
    }
  }

  /** A whole blob in one request (`POST ?digest=`): a session of one PUT. */
  async uploadWhole(key: RepoKey, digest: Digest, body: AsyncIterable<Uint8Array>, expectedSize?: number): Promise<void> {
    const { id } = await this.startUpload(key);
    await this.finishUpload(key, id, digest, body, expectedSize);
  }

  async cancelUpload(key: RepoKey, id: string): Promise<void> {
    await this.#o.uploads.cancel(key, id);
  }

  /**
   * Cross-repository mount: when the store has the blob, it is linked to `key` without copying a
   * byte (blobs are shared by digest) and `true` is returned; otherwise `false` (the client gets a
   * normal upload session). Whether the client may read `from` is the authorization step's call.
   */
  async mount(key: RepoKey, digest: Digest): Promise<boolean> {
    const release = await this.content.use([digest]);
    try {
      const info = await this.#o.blobs.stat(digest);
      if (!info) return false;
      await this.#linkBlob(key, digest, info.size);
      return true;
    } finally {
      release();
    }
  }

  // --- manifests ----------------------------------------------------------------------------

  /**
   * PUT of a manifest by tag or digest: it must be a manifest hubcache accepts in the media type
   * the client sends (`MANIFEST_INVALID`), hash to the digest it is put under (`DIGEST_INVALID`),
   * and everything it references must be in the repository already: blobs (`MANIFEST_BLOB_UNKNOWN`)
   * and child manifests (`MANIFEST_UNKNOWN`). Stored byte-exact. Returns the descriptor and the
   * subject (for the `OCI-Subject` header).
   */
  async putManifest(key: RepoKey, ref: Reference, body: Buffer, contentType: string | undefined): Promise<{ descriptor: Descriptor; subject?: Digest }> {
    const verdict = manifestMediaType(body, contentType);
    if (!verdict.ok) throw new RegistryError('MANIFEST_INVALID', undefined, { message: verdict.reason });
    const digest = sha256Digest(body);
    if (ref.kind === 'digest' && ref.digest !== digest) throw new RegistryError('DIGEST_INVALID', { expected: ref.digest, actual: digest });
    const refs = pushedManifestRefs(body, verdict.mediaType);
    // What it references stays until it is linked: garbage collection (hosted-gc.ts) waits, or has
    // finished removing it and the checks below see it gone.
    const release = await this.content.use([digest, ...refs.blobs, ...refs.manifests.map((c) => c.digest)]);
    try {
      return await this.#putManifest(key, ref, body, digest, verdict.mediaType, refs);
    } finally {
      release();
    }
  }

  async #putManifest(key: RepoKey, ref: Reference, body: Buffer, digest: Digest, mediaType: string, refs: ManifestRefs): Promise<{ descriptor: Descriptor; subject?: Digest }> {
    // Non-distributable layers (with `urls`) are fetched from elsewhere: a push needn't have them.
    // A link whose bytes are gone (a garbage collection that died between removing the bytes and
    // the link) doesn't count.
    const external = new Set(refs.external);
    const missingBlobs = await this.#missing(
      refs.blobs.filter((d) => !external.has(d)),
      async (d) => (await this.#o.metadata.hasBlob(key, d)) && (await this.#o.blobs.stat(d)) !== undefined,
    );
    if (missingBlobs.length > 0) throw new RegistryError('MANIFEST_BLOB_UNKNOWN', { repository: key.repo, digests: missingBlobs.slice(0, 20) }, { message: `the manifest references ${missingBlobs.length} blob(s) not pushed to this repository` });
    const missingChildren = await this.#missing(refs.manifests.map((c) => c.digest), (d) => this.#o.metadata.hasManifest(key, d));
    if (missingChildren.length > 0) throw new RegistryError('MANIFEST_UNKNOWN', { repository: key.repo, digests: missingChildren.slice(0, 20) }, { message: `the index references ${missingChildren.length} manifest(s) not pushed to this repository` });
    const descriptor = await this.#o.manifests.put(body, mediaType, digest);
    if (!(await this.#o.metadata.hasManifest(key, digest))) {
      await this.#o.metadata.linkManifest(key, digest);
      this.content.add(digest, descriptor.size);
    }
    if (ref.kind === 'tag') await this.#o.metadata.setTag(key, ref.tag, { ...descriptor, validatedAt: this.#clock() });
    this.#o.logger?.info('manifest pushed', { repository: key.repo, digest, mediaType: descriptor.mediaType, ...(ref.kind === 'tag' ? { tag: ref.tag } : {}) });
    return { descriptor, ...(refs.subject ? { subject: refs.subject } : {}) };
  }

  // --- deletes (hosted.allowDelete) -----------------------------------------------------------

  /**
   * By digest: the manifest leaves the repository, with every tag pointing at it. By tag: only the
   * tag goes (spec 1.1). The bytes stay in the store: they are shared by digest with the cache and
   * other repositories, and removing them is garbage collection's job.
   */
  async deleteManifest(key: RepoKey, ref: Reference): Promise<void> {
    this.#assertDeletable();
    if (ref.kind === 'tag') {
      if (!(await this.#o.metadata.getTag(key, ref.tag))) throw new RegistryError('MANIFEST_UNKNOWN', { repository: key.repo, tag: ref.tag });
      await this.#o.metadata.deleteTag(key, ref.tag);
      return;
    }
    if (!(await this.#o.metadata.hasManifest(key, ref.digest))) throw new RegistryError('MANIFEST_UNKNOWN', { repository: key.repo, digest: ref.digest });
    for (const tag of await this.#o.metadata.listTags(key)) {
      if ((await this.#o.metadata.getTag(key, tag as Tag))?.digest === ref.digest) await this.#o.metadata.deleteTag(key, tag as Tag);
    }
    await this.#o.metadata.unlinkManifest(key, ref.digest);
    this.content.remove(ref.digest);
  }

  /** The blob leaves the repository (a GET there is 404 from now on); its bytes stay until garbage collection. */
  async deleteBlob(key: RepoKey, digest: Digest): Promise<void> {
    this.#assertDeletable();
    if (!(await this.#o.metadata.hasBlob(key, digest))) throw new RegistryError('BLOB_UNKNOWN', { repository: key.repo, digest });
    await this.#o.metadata.unlinkBlob(key, digest);
    this.content.remove(digest);
  }

  // --- internals ----------------------------------------------------------------------------

  #assertDeletable(): void {
    if (!this.#o.allowDelete) throw new RegistryError('UNSUPPORTED', undefined, { message: 'deleting is disabled on this registry (hosted.allowDelete)' });
  }

  async #resolve(key: RepoKey, ref: Reference): Promise<Digest | undefined> {
    if (ref.kind === 'tag') return (await this.#o.metadata.getTag(key, ref.tag))?.digest;
    return (await this.#o.metadata.hasManifest(key, ref.digest)) ? ref.digest : undefined;
  }

  async #linkBlob(key: RepoKey, digest: Digest, size: number): Promise<void> {
    const had = await this.#o.metadata.hasBlob(key, digest);
    // Linked again (uploaded or mounted again): the link is fresh, garbage collection's grace
    // period (hosted.gcGracePeriod) starts over for it.
    await this.#o.metadata.linkBlob(key, digest);
    if (!had) this.content.add(digest, size);
  }

  async #missing(digests: readonly Digest[], has: (d: Digest) => Promise<boolean>): Promise<Digest[]> {
    const unique = [...new Set(digests)];
    const present = await Promise.all(unique.map(has));
    return unique.filter((_, i) => !present[i]);
  }

  async #refsOf(digest: Digest): Promise<(ManifestRefs & { descriptor: Descriptor }) | undefined> {
    const cached = this.#refsCache.get(digest);
    if (cached) return cached;
    const stored = await this.#o.manifests.get(digest);
    if (!stored) return undefined;
    // Validated when it was pushed: the lenient reading (nothing to throw).
    const entry = { ...manifestRefs(stored.body), descriptor: stored.descriptor };
    this.#refsCache.set(digest, entry);
    return entry;
  }
}

function status(r: { id: string; offset: number }): UploadStatus {
  return { id: r.id, offset: r.offset };
}
