import type { Digest } from './digest.js';

/** What a registry knows about a piece of content (OCI descriptor, minus annotations). */
export interface Descriptor {
  readonly digest: Digest;
  readonly size: number;
  readonly mediaType: string;
}

/** An inclusive byte range already resolved against a known size. */
export interface ByteRange {
  readonly start: number;
  readonly end: number; // inclusive
}
