import { RegistryError } from '../domain/errors.js';
import { manifestMediaType } from '../domain/manifest.js';

/**
 * Why `body` can't be stored or served as a manifest of `mediaType`, or `undefined` when it can:
 * it must be a manifest hubcache accepts (domain/manifest.ts) and `mediaType` must be what its
 * bytes say, so that no store ever holds, or serves, a manifest under a media type its body
 * contradicts.
 */
export function manifestProblem(body: Buffer, mediaType: string): string | undefined {
  if (mediaType.length === 0) return 'manifest media type is required';
  const verdict = manifestMediaType(body, mediaType);
  if (!verdict.ok) return verdict.reason;
  return verdict.mediaType === mediaType ? undefined : `not a manifest of ${JSON.stringify(mediaType.slice(0, 100))}`;
}

/** `manifestProblem` for `put`: a problem is `MANIFEST_INVALID`. */
export function checkManifest(body: Buffer, mediaType: string): void {
  const problem = manifestProblem(body, mediaType);
  if (problem !== undefined) throw new RegistryError('MANIFEST_INVALID', undefined, { message: problem });
}
