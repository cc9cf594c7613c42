import type { Descriptor } from '../domain/descriptor.js';
import type { Digest } from '../domain/digest.js';
import type { ListingRefs } from '../domain/manifest-refs.js';
import type { RepoKey, Tag } from '../domain/reference.js';
import type { TagEntry, TagStore } from './tag-store.js';

export interface StoredManifest {
  readonly descriptor: Descriptor;
  /** The exact bytes as received from upstream (or pushed): re-serialising would change the digest. */
  readonly body: Buffer;
}

/**
 * Content-addressed manifests with their media type. Manifests are small: they are held in memory.
 * Only manifests hubcache accepts are kept (domain/manifest.ts), and a stored manifest's media
 * type never changes: whoever puts the same bytes again gets the stored descriptor back.
 */
export interface ManifestStore {
  /**
   * `undefined` when not stored, and when what is stored is not a manifest hubcache accepts in its
   * stored media type (written by an older version): fetching it again replaces it.
   */
  get(digest: Digest): Promise<StoredManifest | undefined>;
  /**
   * Stores `body` byte-exact under its sha256. When `expected` is given the body must hash to it,
   * otherwise `RegistryError('DIGEST_INVALID')` and nothing is stored. `MANIFEST_INVALID` when
   * `body` is not a manifest of `mediaType` (domain/manifest.ts, with `mediaType` as its
   * Content-Type). Atomic and idempotent; when the manifest is stored already, nothing is written
   * and the stored descriptor is returned, whatever `mediaType` says (the first media type wins).
   */
  put(body: Buffer, mediaType: string, expected?: Digest): Promise<Descriptor>;
  /**
   * Removes the manifest; missing is not an error. It is invisible from the first step on (a
   * backend storing a media type apart removes the body first). Who refers to it (tags, links) is
   * the caller's business: eviction removes those first (cache/evictor.ts).
   */
  delete(digest: Digest): Promise<void>;
  /**
   * Every stored manifest (a full walk, for eviction and `du`; nothing on the serving path), with
   * `modifiedAt` (when it was stored, ms) where the backend knows it cheaply. Manifests deleted
   * during the walk may or may not appear.
   */
  list(): AsyncIterable<StoredManifestInfo>;
  /**
   * A reader for one walk over the store (`hubcache ls`/`du`): what a stored manifest references
   * (`listingRefs` of its body), `undefined` when it is not stored (as `get`). Optional: a backend
   * keeping a record of its manifests' references answers from it (the filesystem's
   * `manifest-refs/`, issue #13); without it a walk reads each manifest with `get`. The reader may
   * hold what it read until it is dropped: manifests stored or deleted during the walk may or may
   * not be seen.
   */
  refsReader?(): (digest: Digest) => Promise<ListingRefs | undefined>;
}

export interface StoredManifestInfo {
  readonly digest: Digest;
  readonly size: number;
  readonly modifiedAt?: number;
}

/**
 * Per-repository metadata: tags (the `TagStore` contract, tag-store.ts) and which manifests belong
 * to the repository. Entries are keyed by upstream + repository; content itself is shared by digest.
 */
export interface MetadataStore extends TagStore {
  /** Records that `digest` was fetched for (or pushed to) this repository. Idempotent. */
  linkManifest(key: RepoKey, digest: Digest): Promise<void>;
  hasManifest(key: RepoKey, digest: Digest): Promise<boolean>;
  /** Every repository with any metadata. */
  listRepositories(): AsyncIterable<RepoKey>;
  /**
   * The entries of several tags of one repository, in the order given (`undefined` where a tag is
   * not cached or not a valid tag): the batch read of a listing (`ls`, `du`; issue #13). Optional:
   * without it a listing calls `getTag` once per tag.
   */
  getTags?(key: RepoKey, tags: readonly string[]): Promise<Array<TagEntry | undefined>>;
  /**
   * Every cached tag of the repository with its entry, sorted by tag: the listing's read (`ls`,
   * `du`). Optional: a backend keeping an index of its tags reads it in one go (the filesystem's
   * `_tagindex`, issue #13); without it a listing uses `listTags` and `getTags`/`getTag`.
   */
  listTagEntries?(key: RepoKey): Promise<Array<readonly [string, TagEntry]>>;
  /** Removes the tag atomically and durably (it is there or gone); missing is not an error. */
  deleteTag(key: RepoKey, tag: Tag): Promise<void>;
  /** Removes the link of `digest` to this repository (the manifest bytes stay: shared by digest). Missing is not an error. */
  unlinkManifest(key: RepoKey, digest: Digest): Promise<void>;
  /** The manifests linked to this repository, in digest order; `[]` for an unknown repository. */
  listManifests(key: RepoKey): Promise<Digest[]>;
  /**
   * Records that the blob `digest` belongs to this repository: pushed (uploaded or mounted) into
   * a hosted repository (layout.ts `_layers`). Cached repositories don't link blobs. Idempotent.
   */
  linkBlob(key: RepoKey, digest: Digest): Promise<void>;
  hasBlob(key: RepoKey, digest: Digest): Promise<boolean>;
  /** Missing is not an error. */
  unlinkBlob(key: RepoKey, digest: Digest): Promise<void>;
  /**
   * Optional: when the blob was last linked to this repository (ms; `linkBlob` of a link that
   * exists refreshes it), `undefined` when it isn't linked. Garbage collection's grace period
   * for blobs uploaded but not referenced yet (hosted/hosted-gc.ts); a backend without it falls
   * back on the blob's own `modifiedAt`.
   */
  blobLinkedAt?(key: RepoKey, digest: Digest): Promise<number | undefined>;
  /** The blobs linked to this repository, in digest order. */
  listBlobs(key: RepoKey): Promise<Digest[]>;
}
