import type { Descriptor } from '../domain/descriptor.js';
import type { Digest } from '../domain/digest.js';
import type { RepoKey, Tag } from '../domain/reference.js';

export interface StoredManifest {
  readonly descriptor: Descriptor;
  /** The exact bytes as received from upstream (or pushed): re-serialising would change the digest. */
  readonly body: Buffer;
}

/** Content-addressed manifests with their media type. Manifests are small: they are held in memory. */
export interface ManifestStore {
  /** `undefined` when not stored. */
  get(digest: Digest): Promise<StoredManifest | undefined>;
  /**
   * Stores `body` byte-exact under its sha256. When `expected` is given the body must hash to it,
   * otherwise `RegistryError('DIGEST_INVALID')` and nothing is stored. Atomic and idempotent.
   */
  put(body: Buffer, mediaType: string, expected?: Digest): Promise<Descriptor>;
  delete(digest: Digest): Promise<void>;
}

/** One tag's cached resolution. `validatedAt` is when upstream last confirmed it (ms since epoch). */
export interface TagEntry {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly size: number;
  readonly validatedAt: number;
}

/**
 * Per-repository metadata: tags and which manifests belong to the repository. Cache entries for
 * tags and manifests are keyed by upstream + repository; content itself is shared by digest.
 */
export interface MetadataStore {
  getTag(key: RepoKey, tag: Tag): Promise<TagEntry | undefined>;
  setTag(key: RepoKey, tag: Tag, entry: TagEntry): Promise<void>;
  /** Tags cached for the repository, sorted. */
  listTags(key: RepoKey): Promise<string[]>;
  /** Records that `digest` was fetched for (or pushed to) this repository. Idempotent. */
  linkManifest(key: RepoKey, digest: Digest): Promise<void>;
  hasManifest(key: RepoKey, digest: Digest): Promise<boolean>;
  /** Every repository with any metadata. */
  listRepositories(): AsyncIterable<RepoKey>;
}
