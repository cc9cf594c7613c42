import { RegistryError } from '../domain/errors.js';

// A registry name as clients write it: a lowercase DNS hostname (RFC 1123 labels of at most 63
// characters, 253 in all) with an optional port. It becomes a directory name under
// repositories/, so anything else (`..`, slashes, uppercase that would collide on case-insensitive
// filesystems, IPv6 brackets) is refused rather than sanitised.
const LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
const UPSTREAM_RE = new RegExp(`^(${LABEL}(?:\\.${LABEL})*)(?::([0-9]{1,5}))?$`);

/** True for `docker.io`, `ghcr.io`, `localhost`, `registry.example.com:5000`, `10.0.0.1:5000`. */
export function isUpstreamName(s: string): boolean {
  const m = UPSTREAM_RE.exec(s);
  if (!m || m[1]!.length > 253) return false;
  if (m[2] === undefined) return true;
  const port = Number(m[2]);
  return port >= 1 && port <= 65535 && !m[2].startsWith('0');
}

/** Returns `s` when it is a valid upstream name; otherwise throws `RegistryError('NAME_INVALID')`. */
export function parseUpstreamName(s: string): string {
  if (!isUpstreamName(s)) {
    throw new RegistryError('NAME_INVALID', { upstream: s.slice(0, 300) }, { message: 'invalid upstream registry name' });
  }
  return s;
}
