import { createHash } from 'node:crypto';
import { RegistryError } from './errors.js';

/** A validated `sha256:<64 hex>` digest. Storage paths are built only from this type. */
export type Digest = string & { readonly __brand: 'Digest' };

// OCI allows other algorithms in the grammar; a cache can only verify what it can hash, and every
// public registry uses sha256, so anything else is refused up front (DIGEST_INVALID).
const SHA256_RE = /^sha256:[a-f0-9]{64}$/;

export function isDigest(s: string): s is Digest {
  return SHA256_RE.test(s);
}

export function parseDigest(s: string): Digest {
  if (!isDigest(s)) throw new RegistryError('DIGEST_INVALID', { digest: s.slice(0, 200) }, { message: 'invalid digest' });
  return s;
}

export function sha256Digest(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}` as Digest;
}

export function digestHex(d: Digest): string {
  return d.slice('sha256:'.length);
}
