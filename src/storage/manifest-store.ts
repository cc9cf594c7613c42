import type { Descriptor } from '../domain/descriptor.js';
import type { Digest } from '../domain/digest.js';
import type { RepoName } from '../domain/reference.js';
import type { TagStore } from './tag-store.js';

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

/** A repository on a given upstream (`docker.io`, `ghcr.io`, …). Keys all per-repository metadata. */
export interface RepoKey {
  readonly upstream: string;
  readonly repo: RepoName;
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
}
