import type { Request, Response } from 'express';
import type { ManifestResult, RegistryReader } from '../../cache/registry-reader.js';
import { parseDigest } from '../../domain/digest.js';
import { RegistryError } from '../../domain/errors.js';
import type { Reference, RepoKey } from '../../domain/reference.js';
import { acceptedManifestTypes, defaultPlatformChild, isAcceptable } from '../negotiate.js';

/** GET/HEAD /v2/<name>/manifests/<ref>: byte-exact body with its stored media type and digest. */
export async function serveManifest(reader: RegistryReader, key: RepoKey, ref: Reference, req: Request, res: Response): Promise<void> {
  const head = req.method === 'HEAD';
  const accepted = acceptedManifestTypes(req.get('accept'));
  let result = await reader.getManifest(key, ref, { signal: req.ctx.signal, log: req.ctx.log, head });
  if (!isAcceptable(result.descriptor.mediaType, accepted)) {
    const child = defaultPlatformChild(result.body, result.descriptor.mediaType);
    const fallback: ManifestResult | undefined = child
      ? await reader.getManifest(key, { kind: 'digest', digest: parseDigest(child) }, { signal: req.ctx.signal, log: req.ctx.log, head })
      : undefined;
    if (!fallback || !isAcceptable(fallback.descriptor.mediaType, accepted)) {
      throw new RegistryError('MANIFEST_UNKNOWN', { mediaType: result.descriptor.mediaType, accepted: [...(accepted ?? [])] }, { message: 'manifest not available in a media type the client accepts' });
    }
    result = { ...fallback, stale: result.stale ?? fallback.stale };
  }
  req.ctx.cache = result.outcome;
  if (result.stale) {
    req.ctx.stale = result.stale.reason;
    res.setHeader('X-Hubcache-Stale', result.stale.reason);
    res.setHeader('Warning', '110 hubcache "Response is Stale"');
  }
  const { digest, mediaType, size } = result.descriptor;
  res.status(200);
  res.setHeader('Content-Type', mediaType);
  res.setHeader('Content-Length', size);
  res.setHeader('Docker-Content-Digest', digest);
  res.setHeader('ETag', `"${digest}"`);
  res.setHeader('X-Hubcache-Cache', result.outcome);
  if (head) res.end();
  else res.end(result.body);
}
