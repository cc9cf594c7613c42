import parseRange from 'range-parser';
import { parseDigest, type Digest } from '../domain/digest.js';
import { RegistryError } from '../domain/errors.js';
import { claimsDigest, isTag, parseReference, type Reference } from '../domain/reference.js';
import type { RangeSpec } from '../cache/registry-reader.js';

/**
 * A manifest reference that is neither a tag nor a digest (`.INVALID_MANIFEST_NAME`, `-x`,
 * `Foo:bar`): no manifest can have it, so it is answered MANIFEST_UNKNOWN (404), as distribution
 * does and as the OCI conformance suite expects of a "nonexistent manifest". The answer comes after
 * the name, upstream and method checks, and never from the cache: there is nothing to fetch
 * upstream and nothing to store. A reference that claims to be a digest but isn't one is refused
 * as DIGEST_INVALID (400) at parse time instead.
 */
export interface UnknownReference {
  readonly kind: 'unknown';
  /** As requested, clipped for the error detail. */
  readonly reference: string;
}

/** A /v2 request parsed into typed values (spegel's ParseDistributionPath, docs/architecture.md#the-life-of-a-request). */
export type RegistryRequest =
  | { readonly route: 'base' }
  | { readonly route: 'manifest'; readonly name: string; readonly ref: Reference | UnknownReference }
  | { readonly route: 'blob'; readonly name: string; readonly digest: Digest }
  | { readonly route: 'tags'; readonly name: string; readonly n?: number; readonly last?: string }
  /** `/v2/<name>/blobs/uploads/` (start an upload) or `/v2/<name>/blobs/uploads/<session>`. */
  | { readonly route: 'upload'; readonly name: string; readonly session?: string }
  | { readonly route: 'referrers'; readonly name: string; readonly digest: Digest };

export type RouteName = RegistryRequest['route'] | 'unknown';

const SESSION_RE = /^[A-Za-z0-9-]{1,64}$/;

/** Largest `n` accepted for tag pagination (distribution caps it too). */
export const MAX_TAGS_PAGE = 10_000;

/**
 * Parses the raw request target (`req.originalUrl`, never decoded): percent-encodings, empty and
 * dot segments are refused outright, since no valid name, tag or digest needs them and a decoded
 * `%2F` must never change how a path splits.
 */
export function parseRegistryRequest(rawUrl: string): { request: RegistryRequest; query: URLSearchParams } {
  const q = rawUrl.indexOf('?');
  const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
  const query = new URLSearchParams(q === -1 ? '' : rawUrl.slice(q + 1));
  if (path === '/v2/' || path === '/v2') return { request: { route: 'base' }, query };
  if (!path.startsWith('/v2/')) throw new RegistryError('NAME_INVALID', { path: clip(path) });
  if (path.includes('%')) throw new RegistryError('NAME_INVALID', { path: clip(path) }, { message: 'encoded characters are not allowed in registry paths' });
  const upload = /^\/v2\/(.+)\/blobs\/uploads(?:\/(.*))?$/.exec(path);
  if (upload) {
    const session = upload[2] ?? '';
    // Session ids are ours (UUIDs): anything else names no session.
    if (session !== '' && !SESSION_RE.test(session)) throw new RegistryError('BLOB_UPLOAD_UNKNOWN', { uuid: clip(session) });
    return { request: { route: 'upload', name: upload[1]!, ...(session !== '' ? { session } : {}) }, query };
  }
  const segments = path.slice('/v2/'.length).split('/');
  if (segments.some((s) => s === '' || s === '.' || s === '..')) {
    throw new RegistryError('NAME_INVALID', { path: clip(path) }, { message: 'empty or dot segments are not allowed in registry paths' });
  }
  const n = segments.length;
  const name = (upTo: number) => segments.slice(0, upTo).join('/');
  if (n >= 3 && segments[n - 2] === 'manifests') return { request: { route: 'manifest', name: name(n - 2), ref: manifestReference(segments[n - 1]!) }, query };
  if (n >= 3 && segments[n - 2] === 'blobs' && segments[n - 1] !== 'uploads') {
    return { request: { route: 'blob', name: name(n - 2), digest: parseDigest(segments[n - 1]!) }, query };
  }
  if (n >= 3 && segments[n - 2] === 'tags' && segments[n - 1] === 'list') {
    return { request: { route: 'tags', name: name(n - 2), ...parsePagination(query) }, query };
  }
  if (n >= 3 && segments[n - 2] === 'referrers') return { request: { route: 'referrers', name: name(n - 2), digest: parseDigest(segments[n - 1]!) }, query };
  throw new RegistryError('NOT_FOUND', { path: clip(path) });
}

/** A tag or digest; `unknown` for a reference that is neither and doesn't claim to be a digest. */
function manifestReference(s: string): Reference | UnknownReference {
  if (!isTag(s) && !claimsDigest(s)) return { kind: 'unknown', reference: clip(s) };
  return parseReference(s);
}

function parsePagination(query: URLSearchParams): { n?: number; last?: string } {
  const out: { n?: number; last?: string } = {};
  const n = query.get('n');
  if (n !== null) {
    if (!/^\d{1,6}$/.test(n) || Number(n) > MAX_TAGS_PAGE) throw new RegistryError('PAGINATION_NUMBER_INVALID', { n: clip(n), max: MAX_TAGS_PAGE });
    out.n = Number(n);
  }
  const last = query.get('last');
  if (last !== null && last !== '') out.last = last.slice(0, 256);
  return out;
}

/**
 * The client's `Range` header as a RangeSpec, or `undefined` without one. range-parser (express's
 * own) reads it against the blob's size: one range (`bytes=a-b`, `a-`, `-n`) is served; several
 * ranges get the whole body, which RFC 9110 §14.2 allows; ranges that start past the end are
 * dropped, and when none is left the header is unsatisfiable (416). A malformed `bytes` value is
 * refused with 416 (as Go's http.ServeContent, which distribution uses, does); a unit other than
 * `bytes` is ignored and the whole body served, as RFC 9110 §14.2 requires.
 */
export function parseRangeHeader(header: string | undefined): RangeSpec | undefined {
  if (header === undefined) return undefined;
  return (size) => {
    const ranges = parseRange(size, header);
    if (ranges !== -2 && ranges !== -1 && ranges.type !== 'bytes') return 'whole';
    if (ranges === -2) {
      if (!/^\s*bytes\s*=/i.test(header) && /^\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*=/.test(header)) return 'whole';
      throw new RegistryError('RANGE_INVALID', { range: clip(header) });
    }
    if (ranges === -1) {
      // range-parser 1.x drops a suffix longer than the blob (`bytes=-500` of 100 bytes) as
      // unsatisfiable; RFC 9110 §14.1.3 makes it the whole blob (jshttp/range-parser#66, fixed in
      // range-parser 2, which needs Node 22).
      return size > 0 && NONZERO_SUFFIX_RE.test(header) ? { start: 0, end: size - 1 } : 'unsatisfiable';
    }
    return ranges.length === 1 ? ranges[0]! : 'whole';
  };
}

const NONZERO_SUFFIX_RE = /^bytes=\s*-\s*0*[1-9]\d*\s*$/;

function clip(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}
