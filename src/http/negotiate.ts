import { isIndexMediaType, MANIFEST_MEDIA_TYPES } from '../domain/media-types.js';

/**
 * The manifest media types a client's Accept header lists. `undefined` means "anything" (no
 * header, or a wildcard), which is how distribution treats clients that don't negotiate.
 */
export function acceptedManifestTypes(accept: string | undefined): Set<string> | undefined {
  if (!accept) return undefined;
  const types = new Set<string>();
  for (const part of accept.split(',')) {
    const [type, ...params] = part.trim().toLowerCase().split(';');
    if (!type) continue;
    if (params.some((p) => /^\s*q=0(\.0*)?\s*$/.test(p))) continue;
    if (type === '*/*' || type === 'application/*') return undefined;
    types.add(type.trim());
  }
  // A client that lists no manifest type at all (e.g. only application/json) gets what is stored.
  return [...types].some((t) => MANIFEST_MEDIA_TYPES.includes(t)) ? types : undefined;
}

export function isAcceptable(mediaType: string, accepted: Set<string> | undefined): boolean {
  return accepted === undefined || accepted.has(mediaType);
}

/**
 * For a client that can't read an index: the digest of the linux/amd64 image in it, which is what
 * distribution serves such clients. `undefined` when the index has no such entry.
 */
export function defaultPlatformChild(indexBody: Buffer, mediaType: string): string | undefined {
  if (!isIndexMediaType(mediaType)) return undefined;
  try {
    const doc = JSON.parse(indexBody.toString('utf8')) as { manifests?: Array<{ digest?: string; platform?: { os?: string; architecture?: string } }> };
    return doc.manifests?.find((m) => m.platform?.os === 'linux' && m.platform?.architecture === 'amd64')?.digest;
  } catch {
    return undefined;
  }
}
