export const MediaTypes = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  octetStream: 'application/octet-stream',
} as const;

/**
 * Every manifest type we can store and serve; also the Accept list sent upstream
 * (docs/protocol.md#the-manifest-accept-list).
 */
export const MANIFEST_MEDIA_TYPES: readonly string[] = [
  MediaTypes.ociIndex,
  MediaTypes.dockerManifestList,
  MediaTypes.ociManifest,
  MediaTypes.dockerManifest,
];

export const UPSTREAM_MANIFEST_ACCEPT = [...MANIFEST_MEDIA_TYPES, MediaTypes.dockerSchema1Signed, MediaTypes.dockerSchema1].join(', ');

export function isIndexMediaType(mt: string): boolean {
  return mt === MediaTypes.ociIndex || mt === MediaTypes.dockerManifestList;
}

/**
 * Strip parameters and whitespace from a Content-Type value. Registries sometimes add
 * `; charset=utf-8`; the media type is what identifies the manifest format.
 */
export function bareMediaType(contentType: string | undefined | null): string {
  return (contentType ?? '').split(';')[0]!.trim().toLowerCase();
}

/**
 * Sniff a manifest's media type from its body when the upstream sent none (or a generic one):
 * the `mediaType` field first, then the shape (OCI manifests may omit the field).
 */
export function sniffManifestMediaType(body: Buffer): string | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof doc !== 'object' || doc === null) return undefined;
  const m = doc as Record<string, unknown>;
  if (typeof m.mediaType === 'string' && m.mediaType.length > 0) return m.mediaType;
  if (m.schemaVersion === 1) return MediaTypes.dockerSchema1Signed;
  if (Array.isArray(m.manifests)) return MediaTypes.ociIndex;
  if (typeof m.config === 'object' && Array.isArray(m.layers)) return MediaTypes.ociManifest;
  return undefined;
}
