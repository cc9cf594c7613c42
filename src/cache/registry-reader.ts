import type { Readable } from 'node:stream';
import type { ByteRange, Descriptor } from '../domain/descriptor.js';
import type { Digest } from '../domain/digest.js';
import { RegistryError } from '../domain/errors.js';
import type { Reference, RepoKey } from '../domain/reference.js';
import type { TagList, TagPageRequest } from '../domain/tag-list.js';
import type { Logger } from '../lib/logger.js';
import type { CacheOutcome } from './cache-metrics.js';

/**
 * A client's Range header, applied to the blob's size once the reader knows it (RFC 9110 §14.2):
 * one byte range to serve (206), `'whole'` for the whole body (200) or `'unsatisfiable'` (416).
 * The HTTP layer builds it from the header (parse-request.ts) and throws `RANGE_INVALID` from it for
 * a header it refuses outright.
 */
export type RangeSpec = (size: number) => ByteRange | 'whole' | 'unsatisfiable';

export interface ManifestResult {
  readonly descriptor: Descriptor;
  readonly body: Buffer;
  readonly outcome: CacheOutcome;
  /** Served from the cache because the upstream failed; `reason` says how. */
  readonly stale?: { readonly reason: string };
}

export interface BlobResult {
  readonly digest: Digest;
  /** Total size of the blob. */
  readonly size: number;
  /** The resolved range when one was requested (206), else undefined (200). */
  readonly range?: ByteRange;
  /** The body; the caller owns it and must consume or destroy it. Absent for HEAD. */
  readonly body?: Readable;
  readonly source: 'cache' | 'upstream';
  /**
   * Call once the body's last byte has been handed to the client (the response finished): a body
   * that follows a download in flight reports the tail the download added (hubcache_fill_tail_seconds).
   */
  readonly delivered?: () => void;
}

export interface TagListResult {
  readonly name: string;
  /** This page's tags, sorted. */
  readonly tags: TagList;
  readonly next?: { readonly n?: number; readonly last: string };
  readonly stale?: { readonly reason: string };
}

/** What every read gets from the request it serves. */
export interface ReadOptions {
  /** The client's signal: governs writing to that client only (docs/architecture.md#timeouts-and-aborts). */
  readonly signal: AbortSignal;
  /**
   * The request's logger (a child carrying its `requestId`). Events logged while serving it (a fill
   * it started, a stale answer) go through it, so they can be found by the request's id.
   */
  readonly log?: Logger;
}

/**
 * The read side of a registry. Implemented by the pull-through cache; handlers depend only on
 * this, so they never know whether a request was a hit (docs/architecture.md#layers).
 * Errors are `RegistryError`s with OCI codes.
 */
export interface RegistryReader {
  getManifest(key: RepoKey, ref: Reference, opts: ReadOptions & { head?: boolean }): Promise<ManifestResult>;
  getBlob(key: RepoKey, digest: Digest, opts: ReadOptions & { head?: boolean; range?: RangeSpec }): Promise<BlobResult>;
  listTags(key: RepoKey, page: TagPageRequest, opts: ReadOptions): Promise<TagListResult>;
}

/**
 * The range of a blob of `size` bytes to serve for `spec`: `undefined` for the whole body. Throws
 * `RANGE_INVALID` (416, with a `Content-Range` naming the size) when nothing requested can be served.
 */
export function resolveRange(spec: RangeSpec | undefined, size: number): ByteRange | undefined {
  const range = spec ? spec(size) : 'whole';
  if (range === 'whole') return undefined;
  if (range === 'unsatisfiable') throw new RegistryError('RANGE_INVALID', { size }, { headers: { 'Content-Range': `bytes */${size}` } });
  return range;
}

/** Blob bodies from the store may offer a faster way to be written out (see DirectBody). */
export { isDirectBody, type DirectBody } from '../storage/blob-store.js';
