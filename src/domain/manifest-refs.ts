/**
 * What a manifest refers to — the one parser of a manifest's references, for every caller: an
 * index's child manifests (with their platforms), an image manifest's config and layers (schema 1:
 * its `fsLayers`), and what the referrers API needs (`subject`, `artifactType`, `annotations`).
 *
 * Two ways to read, one walk:
 * - `manifestRefs(body)`: a manifest already stored (validated when it was: domain/manifest.ts).
 *   Lenient: only well-formed digests are returned, anything else is ignored, never thrown. Used
 *   to find everything an image needs (pins, cache/pins.ts) and by the referrers API.
 * - `pushedManifestRefs(body, mediaType)`: a manifest being pushed, accepted by `manifestMediaType`
 *   as `mediaType`. Strict: a descriptor that is not one (no sha256 digest, no size) is
 *   `MANIFEST_INVALID`, and schema 1 is refused (it can't be pushed to hubcache; distribution
 *   disabled it too).
 */
import { isDigest, type Digest } from './digest.js';
import { RegistryError } from './errors.js';
import { isIndexMediaType, MediaTypes } from './media-types.js';

export interface ManifestChild {
  readonly digest: Digest;
  readonly platform?: { readonly os?: string; readonly architecture?: string; readonly variant?: string };
}

export interface ManifestRefs {
  /** Child manifests (an index). */
  readonly manifests: readonly ManifestChild[];
  /** Blobs: config first, then layers, each once (an image manifest; schema 1: its fsLayers). */
  readonly blobs: readonly Digest[];
  /**
   * Of `blobs`, the non-distributable layers (descriptors with `urls`): fetched from elsewhere, so
   * a registry needn't have them. Present only when there are some.
   */
  readonly external?: readonly Digest[];
  /** The manifest this one refers to (`subject`: a signature, an SBOM), when it has one. */
  readonly subject?: Digest;
  /** `artifactType`, else (an image manifest) the config's media type: what the referrers API filters on. */
  readonly artifactType?: string;
  readonly annotations?: Readonly<Record<string, string>>;
}

/** The references of a stored manifest; anything malformed is left out (see the module's header). */
export function manifestRefs(body: Buffer): ManifestRefs {
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    return { manifests: [], blobs: [] };
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return { manifests: [], blobs: [] };
  return walk(doc as Record<string, unknown>, lenient);
}

/**
 * The references of a manifest being pushed, which `manifestMediaType` accepted as `mediaType`:
 * `MANIFEST_INVALID` for a descriptor that is not one, or a schema 1 manifest.
 */
export function pushedManifestRefs(body: Buffer, mediaType: string): ManifestRefs {
  if (mediaType === MediaTypes.dockerSchema1 || mediaType === MediaTypes.dockerSchema1Signed) {
    throw new RegistryError('MANIFEST_INVALID', { mediaType }, { message: 'Docker schema 1 manifests cannot be pushed' });
  }
  const doc = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
  const index = isIndexMediaType(mediaType);
  if (index ? !Array.isArray(doc.manifests) : !Array.isArray(doc.layers)) {
    throw new RegistryError('MANIFEST_INVALID', { mediaType }, { message: index ? 'an index needs a manifests array' : 'an image manifest needs a layers array' });
  }
  return walk(index ? { ...doc, config: undefined, layers: undefined, fsLayers: undefined } : { ...doc, manifests: undefined, fsLayers: undefined }, strict);
}

interface Descriptor {
  readonly digest: Digest;
  readonly mediaType?: string;
  readonly external: boolean;
  readonly platform?: Record<string, unknown>;
}

/** How a field that is not a descriptor is taken: skipped (stored manifests) or refused (pushes). */
type Reader = (v: unknown, where: string) => Descriptor | undefined;

const lenient: Reader = (v) => {
  const d = v as Partial<Record<string, unknown>> | null;
  if (typeof d !== 'object' || d === null || typeof d.digest !== 'string' || !isDigest(d.digest)) return undefined;
  return describe(d, d.digest);
};

const strict: Reader = (v, where) => {
  const d = v as Partial<Record<string, unknown>> | null;
  if (typeof d !== 'object' || d === null || typeof d.digest !== 'string' || !isDigest(d.digest) || typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw new RegistryError('MANIFEST_INVALID', { descriptor: where }, { message: `${where} is not a descriptor with a sha256 digest and a size` });
  }
  return describe(d, d.digest);
};

function describe(d: Partial<Record<string, unknown>>, digest: Digest): Descriptor {
  const urls = Array.isArray(d.urls) ? d.urls.filter((u) => typeof u === 'string') : [];
  const platform = typeof d.platform === 'object' && d.platform !== null ? (d.platform as Record<string, unknown>) : undefined;
  return { digest, ...(typeof d.mediaType === 'string' ? { mediaType: d.mediaType } : {}), external: urls.length > 0, ...(platform ? { platform } : {}) };
}

function walk(doc: Record<string, unknown>, read: Reader): ManifestRefs {
  const manifests: ManifestChild[] = [];
  const list = (v: unknown) => (Array.isArray(v) ? v : []);
  list(doc.manifests).forEach((m, i) => {
    const c = read(m, `manifests[${i}]`);
    if (c) manifests.push(c.platform ? { digest: c.digest, platform: pickPlatform(c.platform) } : { digest: c.digest });
  });
  const blobs = new Set<Digest>();
  const external = new Set<Digest>();
  const config = doc.config === undefined ? undefined : read(doc.config, 'config');
  const layers = list(doc.layers).map((l, i) => read(l, `layers[${i}]`));
  for (const d of [config, ...layers]) {
    if (!d) continue;
    blobs.add(d.digest);
    if (d.external) external.add(d.digest);
  }
  for (const l of list(doc.fsLayers)) {
    const sum = typeof l === 'object' && l !== null ? (l as { blobSum?: unknown }).blobSum : undefined;
    if (typeof sum === 'string' && isDigest(sum)) blobs.add(sum);
  }
  // A digest both external and not (listed twice) is needed: only the always-external ones are.
  for (const d of [config, ...layers]) if (d && !d.external) external.delete(d.digest);
  const subject = doc.subject === undefined ? undefined : read(doc.subject, 'subject')?.digest;
  const artifactType = typeof doc.artifactType === 'string' && doc.artifactType !== '' ? doc.artifactType : config?.mediaType || undefined;
  const annotations = stringMap(doc.annotations);
  return {
    manifests,
    blobs: [...blobs],
    ...(external.size > 0 ? { external: [...external] } : {}),
    ...(subject ? { subject } : {}),
    ...(artifactType ? { artifactType } : {}),
    ...(annotations ? { annotations } : {}),
  };
}

function pickPlatform(p: Record<string, unknown>): ManifestChild['platform'] {
  const s = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const os = s(p.os);
  const architecture = s(p.architecture);
  const variant = s(p.variant);
  return { ...(os ? { os } : {}), ...(architecture ? { architecture } : {}), ...(variant ? { variant } : {}) };
}

function stringMap(v: unknown): Record<string, string> | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const out: Record<string, string> = {};
  for (const [k, s] of Object.entries(v)) if (typeof s === 'string') out[k] = s;
  return out;
}

/**
 * What `hubcache ls` and `du` count of a stored manifest, as its body has it (the filesystem's
 * manifest-refs record holds the same, storage/fs/manifest-refs.ts): an index's children, `null`
 * for one without a well-formed digest (a referenced manifest that can't be stored); else its blob
 * references as written (config, layers, schema 1 fsLayers: every string, duplicates kept). A
 * stored manifest is an index exactly when it has a `manifests` array (domain/manifest.ts refuses
 * a media type its shape contradicts), so the body alone decides. A body that is not a JSON object
 * references nothing.
 */
export type ListingRefs = { readonly index: true; readonly children: ReadonlyArray<Digest | null> } | { readonly index: false; readonly blobs: readonly string[] };

export function listingRefs(body: Buffer): ListingRefs {
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    return { index: false, blobs: [] };
  }
  if (typeof doc !== 'object' || doc === null) return { index: false, blobs: [] };
  const m = doc as { config?: { digest?: unknown }; layers?: unknown; manifests?: unknown; fsLayers?: unknown };
  if (Array.isArray(m.manifests)) {
    return { index: true, children: m.manifests.map((c: { digest?: unknown } | null) => (typeof c?.digest === 'string' && isDigest(c.digest) ? c.digest : null)) };
  }
  const field = (list: unknown, key: string): unknown[] => (Array.isArray(list) ? list.map((x: Record<string, unknown> | null) => x?.[key]) : []);
  const refs = [m.config?.digest, ...field(m.layers, 'digest'), ...field(m.fsLayers, 'blobSum')];
  return { index: false, blobs: refs.filter((r): r is string => typeof r === 'string') };
}
