/**
 * What a stored manifest refers to: an index's child manifests (with their platforms), an image
 * manifest's config and layers (schema 1: its `fsLayers`). Used to find everything an image needs
 * (pins, cache/pins.ts). Only well-formed digests are returned; the document was validated when it
 * was stored (domain/manifest.ts), so anything else is ignored, never thrown.
 */
import { isDigest, type Digest } from './digest.js';

export interface ManifestChild {
  readonly digest: Digest;
  readonly platform?: { readonly os?: string; readonly architecture?: string; readonly variant?: string };
}

export interface ManifestRefs {
  /** Child manifests (an index). */
  readonly manifests: readonly ManifestChild[];
  /** Blobs: config first, then layers, each once (an image manifest). */
  readonly blobs: readonly Digest[];
}

export function manifestRefs(body: Buffer): ManifestRefs {
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    return { manifests: [], blobs: [] };
  }
  if (typeof doc !== 'object' || doc === null) return { manifests: [], blobs: [] };
  const m = doc as { manifests?: unknown; config?: unknown; layers?: unknown; fsLayers?: unknown };
  const manifests: ManifestChild[] = [];
  for (const d of Array.isArray(m.manifests) ? m.manifests : []) {
    const digest = digestOf(d);
    if (!digest) continue;
    const p = (d as { platform?: unknown }).platform;
    manifests.push(typeof p === 'object' && p !== null ? { digest, platform: pickPlatform(p as Record<string, unknown>) } : { digest });
  }
  const blobs = new Set<Digest>();
  for (const d of [m.config, ...(Array.isArray(m.layers) ? m.layers : [])]) {
    const digest = digestOf(d);
    if (digest) blobs.add(digest);
  }
  for (const l of Array.isArray(m.fsLayers) ? m.fsLayers : []) {
    const sum = typeof l === 'object' && l !== null ? (l as { blobSum?: unknown }).blobSum : undefined;
    if (typeof sum === 'string' && isDigest(sum)) blobs.add(sum);
  }
  return { manifests, blobs: [...blobs] };
}

function digestOf(d: unknown): Digest | undefined {
  const digest = typeof d === 'object' && d !== null ? (d as { digest?: unknown }).digest : undefined;
  return typeof digest === 'string' && isDigest(digest) ? digest : undefined;
}

function pickPlatform(p: Record<string, unknown>): ManifestChild['platform'] {
  const s = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const os = s(p.os);
  const architecture = s(p.architecture);
  const variant = s(p.variant);
  return { ...(os ? { os } : {}), ...(architecture ? { architecture } : {}), ...(variant ? { variant } : {}) };
}
