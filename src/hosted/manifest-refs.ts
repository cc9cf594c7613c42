import type { Descriptor } from '../domain/descriptor.js';
import { isDigest, type Digest } from '../domain/digest.js';
import { RegistryError } from '../domain/errors.js';
import { isIndexMediaType, MediaTypes } from '../domain/media-types.js';

/** A descriptor as a manifest writes it (image-spec descriptor.md), with the fields the referrers API passes on. */
export interface ManifestDescriptor extends Descriptor {
  readonly artifactType?: string;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly urls?: readonly string[];
}

/** What a pushed manifest points at, and what the referrers API needs to know about it. */
export interface ManifestRefs {
  /** Blobs that must be in the repository: the config and the layers (non-distributable layers with `urls` excepted). */
  readonly blobs: readonly Digest[];
  /** Child manifests (an index's `manifests`) that must be in the repository. */
  readonly manifests: readonly Digest[];
  /** The manifest this one refers to (`subject`: a signature, an SBOM), when it has one. */
  readonly subject?: Digest;
  /** `artifactType`, else (an image manifest) the config's media type: what the referrers API filters on. */
  readonly artifactType?: string;
  readonly annotations?: Readonly<Record<string, string>>;
}

/**
 * The references of a manifest already accepted by `manifestMediaType` (domain/manifest.ts) as
 * `mediaType`. Descriptors that are not descriptors (no sha256 digest, no size) are `MANIFEST_INVALID`.
 * Schema 1 manifests are refused: they can't be pushed to hubcache (distribution disabled it too).
 */
export function manifestRefs(body: Buffer, mediaType: string): ManifestRefs {
  if (mediaType === MediaTypes.dockerSchema1 || mediaType === MediaTypes.dockerSchema1Signed) {
    throw new RegistryError('MANIFEST_INVALID', { mediaType }, { message: 'Docker schema 1 manifests cannot be pushed' });
  }
  const doc = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
  const subject = doc.subject === undefined ? undefined : descriptor(doc.subject, 'subject').digest;
  const annotations = stringMap(doc.annotations);
  const artifactType = typeof doc.artifactType === 'string' && doc.artifactType !== '' ? doc.artifactType : undefined;
  if (isIndexMediaType(mediaType)) {
    const children = (doc.manifests as unknown[]).map((m, i) => descriptor(m, `manifests[${i}]`));
    return { blobs: [], manifests: children.map((c) => c.digest), ...opt({ subject, artifactType, annotations }) };
  }
  const config = descriptor(doc.config, 'config');
  const layers = (doc.layers as unknown[]).map((l, i) => descriptor(l, `layers[${i}]`));
  const blobs = [config, ...layers.filter((l) => !(l.urls && l.urls.length > 0))].map((d) => d.digest);
  return { blobs, manifests: [], ...opt({ subject, artifactType: artifactType ?? config.mediaType, annotations }) };
}

function descriptor(v: unknown, where: string): ManifestDescriptor {
  const d = v as Partial<Record<string, unknown>> | null;
  if (typeof d !== 'object' || d === null || typeof d.digest !== 'string' || !isDigest(d.digest) || typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw new RegistryError('MANIFEST_INVALID', { descriptor: where }, { message: `${where} is not a descriptor with a sha256 digest and a size` });
  }
  const urls = Array.isArray(d.urls) ? d.urls.filter((u): u is string => typeof u === 'string') : undefined;
  return { digest: d.digest, size: d.size, mediaType: typeof d.mediaType === 'string' ? d.mediaType : '', ...(urls ? { urls } : {}) };
}

function stringMap(v: unknown): Record<string, string> | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const out: Record<string, string> = {};
  for (const [k, s] of Object.entries(v)) if (typeof s === 'string') out[k] = s;
  return out;
}

function opt<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
