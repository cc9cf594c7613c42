import type { BlobResult, ManifestResult, RangeSpec, ReadOptions, RegistryReader, TagListResult } from '../cache/registry-reader.js';
import type { Digest } from '../domain/digest.js';
import { isRegistryError, type ErrorCode } from '../domain/errors.js';
import type { Reference, RepoKey } from '../domain/reference.js';
import { TagList, type TagPageRequest } from '../domain/tag-list.js';

/**
 * A hosted pattern with `fallThrough: <upstream>`: pushed content wins, and what isn't pushed is
 * pulled through from the upstream under the same name (`upstreamKey`). The risk is the one hosted
 * names exist to avoid: a tag or digest not pushed here is looked up in the upstream, where anyone
 * who controls that name there can publish it (dependency confusion). Only for names the operator
 * owns on that upstream too.
 *
 * Tag lists are the union of both, paginated here.
 */
export function fallThroughReader(hosted: RegistryReader, upstream: RegistryReader, upstreamKey: RepoKey): RegistryReader {
  return {
    async getManifest(key: RepoKey, ref: Reference, opts: ReadOptions & { head?: boolean }): Promise<ManifestResult> {
      return orElse(() => hosted.getManifest(key, ref, opts), 'MANIFEST_UNKNOWN', () => upstream.getManifest(upstreamKey, ref, opts));
    },
    async getBlob(key: RepoKey, digest: Digest, opts: ReadOptions & { head?: boolean; range?: RangeSpec }): Promise<BlobResult> {
      return orElse(() => hosted.getBlob(key, digest, opts), 'BLOB_UNKNOWN', () => upstream.getBlob(upstreamKey, digest, opts));
    },
    async listTags(key: RepoKey, page: TagPageRequest, opts: ReadOptions): Promise<TagListResult> {
      const [mine, theirs] = await Promise.all([
        hosted.listTags(key, {}, opts).then((r) => r.tags.toArray(), (err) => (isRegistryError(err) && err.code === 'NAME_UNKNOWN' ? [] : Promise.reject(err))),
        upstream.listTags(upstreamKey, {}, opts).then(
          (r) => ({ tags: r.tags.toArray(), stale: r.stale }),
          (err) => (isRegistryError(err) && (err.code === 'NAME_UNKNOWN' || err.code === 'DENIED') ? { tags: [], stale: undefined } : Promise.reject(err)),
        ),
      ]);
      const { tags, next } = TagList.of([...mine, ...theirs.tags]).page(page);
      return { name: key.repo, tags, ...(next ? { next } : {}), ...(theirs.stale ? { stale: theirs.stale } : {}) };
    },
  };
}

async function orElse<T>(first: () => Promise<T>, missing: ErrorCode, then: () => Promise<T>): Promise<T> {
  try {
    return await first();
  } catch (err) {
    if (isRegistryError(err) && err.code === missing) return then();
    throw err;
  }
}
