import { isDigest } from '../domain/digest.js';
import type { TagEntry } from './manifest-store.js';

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
