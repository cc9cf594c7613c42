import { isDigest, type Digest } from '../domain/digest.js';
import type { RepoKey, Tag } from '../domain/reference.js';

/** One tag's cached resolution. `validatedAt` is when upstream last confirmed it (ms since epoch). */
export interface TagEntry {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly size: number;
  readonly validatedAt: number;
}

/**
 * The tags of cached repositories: what each tag resolved to when upstream last confirmed it (the
 * cache's tag TTL policy, cache/cache-policy.ts, decides when to ask again). Keyed by upstream +
 * repository. Invalid names are refused: `NAME_INVALID` for an upstream or repository name,
 * `TAG_INVALID` for a tag.
 */
export interface TagStore {
  /** The cached entry, or `undefined` when the tag isn't cached (an unreadable entry counts as not cached: it is a cache). */
  getTag(key: RepoKey, tag: Tag): Promise<TagEntry | undefined>;
  /** Creates or replaces the entry atomically; only the `TagEntry` fields are kept. A malformed entry is a caller bug (TypeError). */
  setTag(key: RepoKey, tag: Tag, entry: TagEntry): Promise<void>;
  /** Tags cached for the repository, sorted; `[]` for an unknown repository. */
  listTags(key: RepoKey): Promise<string[]>;
}

/**
 * Exactly the `TagEntry` fields of `doc` when they are well-formed, else `undefined`. Used on the way
 * in (extra fields such as a spread descriptor's are dropped) and on the way out of storage.
 */
export function toTagEntry(doc: unknown): TagEntry | undefined {
  if (typeof doc !== 'object' || doc === null) return undefined;
  const { digest, mediaType, size, validatedAt } = doc as Partial<Record<keyof TagEntry, unknown>>;
  if (typeof digest !== 'string' || !isDigest(digest)) return undefined;
  if (typeof mediaType !== 'string' || mediaType.length === 0) return undefined;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) return undefined;
  if (typeof validatedAt !== 'number' || !Number.isFinite(validatedAt)) return undefined;
  return { digest, mediaType, size, validatedAt };
}

/** `toTagEntry` for values handed to `setTag`: a malformed entry is a caller bug (TypeError). */
export function checkTagEntry(entry: TagEntry): TagEntry {
  const e = toTagEntry(entry);
  if (!e) throw new TypeError('invalid TagEntry: expected {digest, mediaType, size, validatedAt}');
  return e;
}
