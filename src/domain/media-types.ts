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
