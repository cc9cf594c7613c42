import type { RepoKey, Tag } from '../domain/reference.js';
import type { MetadataStore } from './manifest-store.js';
import type { TagEntry } from './tag-store.js';

/** What reading a repository's tags in bulk needs of a metadata store. */
export type TagLister = Pick<MetadataStore, 'listTags' | 'getTag' | 'getTags' | 'listTagEntries'>;

/**
 * A repository's tags with their entries, in windows of `size` (sorted by tag; `undefined` where a
 * tag's entry is unreadable): from `listTagEntries` where the store has it (the filesystem's tag
 * index: one read per repository), else `listTags` and a batch read per window (each tag is a
 * file read: a window of them at once, rows in order). The walk of every tag in the store —
 * `ls`, `du`, the evictor's retention index — goes through here: one file read per tag is ~0.2 ms
 * of a pool thread, 20 s of CPU at 100k tags (issue #13).
 */
export async function* tagWindows(metadata: TagLister, key: RepoKey, size: number): AsyncIterable<[string[], Array<TagEntry | undefined>]> {
  if (metadata.listTagEntries) {
    const all = await metadata.listTagEntries(key);
    for (let start = 0; start < all.length; start += size) {
      const window = all.slice(start, start + size);
      yield [window.map(([t]) => t), window.map(([, e]) => e)];
    }
    return;
  }
  const names = await metadata.listTags(key);
  for (let start = 0; start < names.length; start += size) {
    const window = names.slice(start, start + size);
    yield [window, await readTags(metadata, key, window)];
  }
}

/** The entries of `tags`, in order: one batch read where the store has one (`getTags`), else a read per tag. */
export function readTags(metadata: TagLister, key: RepoKey, tags: readonly string[]): Promise<Array<TagEntry | undefined>> {
  return metadata.getTags ? metadata.getTags(key, tags) : Promise.all(tags.map((tag) => metadata.getTag(key, tag as Tag)));
}
