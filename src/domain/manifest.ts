/**
 * What hubcache accepts as a manifest, decided in one place: the upstream client asks it before a
 * manifest is stored, and the stores ask it again before they write or serve one. Only JSON shaped
 * like one of the manifest formats hubcache knows is a manifest, and its media type comes from the
 * bytes as much as from the upstream's `Content-Type`:
 *
 * - a specific `Content-Type` must be a known manifest type, and when the body names a
 *   `mediaType` the two must agree (as distribution's manifest unmarshallers require);
 * - a generic one (none, `application/octet-stream`, `application/json`, `text/plain`) says
 *   nothing: the body's `mediaType` decides, or failing that the document's shape;
 * - either way the document's shape must be the one its media type promises.
 *
 * Anything else is refused with a reason (never thrown: callers choose their error). A manifest's
 * media type therefore never depends on which upstream served the bytes first, except for a
 * document that names no `mediaType` and is valid as both of a format's dialects (OCI and Docker):
 * the stores keep the first one (manifest-store.ts).
 */
import { bareMediaType, MediaTypes } from './media-types.js';

export type ManifestVerdict = { readonly ok: true; readonly mediaType: string } | { readonly ok: false; readonly reason: string };

/** The formats: what a document of each looks like. */
type Shape = 'index' | 'image' | 'schema1';

/** Every manifest media type hubcache stores and serves, with the shape its documents have. */
const SHAPE_OF: ReadonlyMap<string, Shape> = new Map([
  [MediaTypes.ociIndex, 'index'],
  [MediaTypes.dockerManifestList, 'index'],
  [MediaTypes.ociManifest, 'image'],
  [MediaTypes.dockerManifest, 'image'],
  // Docker schema 1 is still asked for (UPSTREAM_MANIFEST_ACCEPT): old private registries serve
  // nothing else, and a type we ask for is one we must be able to keep.
  [MediaTypes.dockerSchema1Signed, 'schema1'],
  [MediaTypes.dockerSchema1, 'schema1'],
]);

/** The media type a document of this shape has when nothing names it (what distribution assumes). */
const DEFAULT_FOR_SHAPE: Readonly<Record<Shape, string>> = {
  index: MediaTypes.ociIndex,
  image: MediaTypes.ociManifest,
  schema1: MediaTypes.dockerSchema1Signed,
};

/** Content types that say nothing about the manifest format. */
const GENERIC_CONTENT_TYPES: ReadonlySet<string> = new Set(['', MediaTypes.octetStream, 'application/json', 'text/plain']);

// RFC 6838 §4.2: type "/" subtype, restricted-name characters only: no parameters, no whitespace,
// no control characters (a CR/LF here would end up in a response header).
const MEDIA_TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

/** Whether `mediaType` is one of the manifest media types hubcache stores and serves. */
export function isManifestMediaType(mediaType: string): boolean {
  return SHAPE_OF.has(mediaType);
}

/**
 * The media type of the manifest `body` that an upstream served with `contentType` (a raw
 * `Content-Type` value; parameters are ignored), or why it is not a manifest hubcache accepts.
 */
export function manifestMediaType(body: Buffer, contentType: string | undefined): ManifestVerdict {
  const declared = bareMediaType(contentType);
  const generic = GENERIC_CONTENT_TYPES.has(declared);
  if (!generic && !SHAPE_OF.has(declared)) return refuse(`Content-Type ${quote(declared)} is not a manifest media type`);
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    return refuse('the body is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return refuse('the body is not a JSON object');
  const m = doc as Record<string, unknown>;
  let named: string | undefined;
  // distribution reads an empty mediaType as an absent one.
  if (m.mediaType !== undefined && m.mediaType !== '') {
    if (typeof m.mediaType !== 'string' || !MEDIA_TYPE_RE.test(m.mediaType)) return refuse('the mediaType field is not a valid media type');
    if (!SHAPE_OF.has(m.mediaType)) return refuse(`the mediaType field ${quote(m.mediaType)} is not a manifest media type`);
    named = m.mediaType;
  }
  const shape = shapeOf(m);
  let mediaType: string;
  if (!generic) {
    if (named !== undefined && named !== declared) return refuse(`Content-Type ${quote(declared)} disagrees with the mediaType field ${quote(named)}`);
    mediaType = declared;
  } else if (named !== undefined) {
    mediaType = named;
  } else if (shape !== undefined) {
    mediaType = DEFAULT_FOR_SHAPE[shape];
  } else {
    return refuse('the body names no mediaType and has no manifest shape');
  }
  if (shape !== SHAPE_OF.get(mediaType)) return refuse(`the document is not shaped like ${mediaType}`);
  return { ok: true, mediaType };
}

/**
 * The format a document's fields say it is (image-spec manifest.md and image-index.md, Docker's
 * manifest v2 schema 2 and schema 1): `undefined` when it is none of them, or ambiguous.
 */
function shapeOf(m: Record<string, unknown>): Shape | undefined {
  if (m.schemaVersion === 1) return Array.isArray(m.fsLayers) ? 'schema1' : undefined;
  if (m.schemaVersion !== 2) return undefined;
  const index = Array.isArray(m.manifests);
  const image = typeof m.config === 'object' && m.config !== null && !Array.isArray(m.config) && Array.isArray(m.layers);
  if (index === image) return undefined;
  return index ? 'index' : 'image';
}

function refuse(reason: string): ManifestVerdict {
  return { ok: false, reason };
}

/** Upstream-controlled text in a reason: quoted, escaped (no control characters) and short. */
function quote(s: string): string {
  return JSON.stringify(s.length > 100 ? `${s.slice(0, 100)}…` : s);
}
