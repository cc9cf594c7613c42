/**
 * Registry names (`docker.io`, `ghcr.io`, `registry.example.com:5000`): the one rule, used by the
 * configuration (upstream keys, `defaultUpstream`), routing (`?ns=` and the path prefix), storage
 * (`repositories/<registry>/`, docs/storage-layout.md), the command line and — generated from
 * `REGISTRY_NAME_SCHEMA` — the Helm chart's values.schema.json (issue #12).
 *
 * A registry name is a lowercase DNS hostname with an optional port, as clients write it in an image
 * reference:
 * - labels of letters, digits and inner hyphens, at most 63 characters each (RFC 1123);
 * - an optional port 1–65535, written without leading zeros (`:5000`, not `:05000`);
 * - at most 253 characters in all, port included (a DNS name's limit; it also keeps the name one
 *   valid directory name);
 * - and it must read as a registry in a reference (`namesRegistry`): a dot, a port, or `localhost`.
 *   `docker pull myregistry/app` pulls `docker.io/myregistry/app`, and containerd sends
 *   `?ns=docker.io` for it, so a registry named `myregistry` could never be asked for.
 * Uppercase, IPv6 literals, `..` and separators are refused rather than normalised: the name becomes
 * a directory, and two spellings of one registry must not become two caches.
 */
import { RegistryError } from './errors.js';
import { HOSTED_UPSTREAM } from './reference.js';

const LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
// 1–65535 without leading zeros, spelled out so that a regular expression alone (the chart's schema)
// can say it.
const PORT = '(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])';

/** The most characters a registry name has, port included. */
export const MAX_REGISTRY_NAME_LENGTH = 253;

/**
 * The rule as a regular expression (without the length limit), in the syntax that JavaScript and
 * Go's RE2 (helm's JSON Schema validator) share: no lookaround, no backreferences.
 * `localhost`; or dotted labels with an optional port; or one label with a port.
 */
export const REGISTRY_NAME_PATTERN = `^(?:localhost|${LABEL}(?:\\.${LABEL})+(?::${PORT})?|${LABEL}:${PORT})$`;
const REGISTRY_NAME_RE = new RegExp(REGISTRY_NAME_PATTERN);

/** The rule as a JSON Schema, for the Helm chart's values.schema.json (a test keeps the chart in step). */
export const REGISTRY_NAME_SCHEMA = { type: 'string', pattern: REGISTRY_NAME_PATTERN, maxLength: MAX_REGISTRY_NAME_LENGTH } as const;

/**
 * Docker's reference rule (distribution/reference `splitDockerDomain`): the first path component
 * of an image name is a registry when it contains a `.` or a `:` or is `localhost`; otherwise it is
 * a repository on the default registry (`alpine`, `bitnami/redis`). Says nothing about validity.
 */
export function namesRegistry(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost';
}

/**
 * Splits a registry off the front of an image name by `namesRegistry`: `ghcr.io/org/app` →
 * `{registry: 'ghcr.io', rest: 'org/app'}`; `undefined` for `alpine`, `org/app`, `my.org` (no `/`).
 */
export function splitRegistry(name: string): { registry: string; rest: string } | undefined {
  const slash = name.indexOf('/');
  if (slash <= 0) return undefined;
  const first = name.slice(0, slash);
  return namesRegistry(first) ? { registry: first, rest: name.slice(slash + 1) } : undefined;
}

export function isRegistryName(s: string): boolean {
  return s.length <= MAX_REGISTRY_NAME_LENGTH && REGISTRY_NAME_RE.test(s);
}

/** Returns `s` when it is a registry name; otherwise throws `RegistryError('NAME_INVALID')`. */
export function parseRegistryName(s: string): string {
  if (!isRegistryName(s)) {
    throw new RegistryError('NAME_INVALID', { registry: s.slice(0, 300) }, { message: 'invalid registry name' });
  }
  return s;
}

/**
 * The `upstream` part of a stored repository key: a registry name, or `_hosted` for pushed content
 * (`HOSTED_UPSTREAM`, domain/reference.ts: no registry name can start with `_`, so the two never
 * collide). Throws `NAME_INVALID` otherwise.
 */
export function parseKeySpace(s: string): string {
  return s === HOSTED_UPSTREAM ? s : parseRegistryName(s);
}

export function isKeySpace(s: string): boolean {
  return s === HOSTED_UPSTREAM || isRegistryName(s);
}

/**
 * Why `s` is not a registry name, as a sentence for a person (configuration errors, the command
 * line); `undefined` exactly when `isRegistryName(s)`.
 */
export function registryNameProblem(s: string): string | undefined {
  if (isRegistryName(s)) return undefined;
  const shown = JSON.stringify(s.length > 80 ? `${s.slice(0, 77)}...` : s);
  const what = `${shown} is not a registry name`;
  if (s.length > MAX_REGISTRY_NAME_LENGTH) return `${what}: ${s.length} characters long, at most ${MAX_REGISTRY_NAME_LENGTH}`;
  if (/[A-Z]/.test(s)) return `${what}: registry names are lowercase`;
  const colon = s.indexOf(':');
  const host = colon === -1 ? s : s.slice(0, colon);
  const port = colon === -1 ? undefined : s.slice(colon + 1);
  if (port !== undefined) {
    if (!/^[0-9]{1,5}$/.test(port)) return `${what}: registry names are hostnames with an optional port, e.g. ghcr.io or registry.example.com:5000`;
    if (port.startsWith('0') && Number(port) !== 0) return `${what}: port ${port} has a leading zero (write ${Number(port)})`;
    if (Number(port) < 1 || Number(port) > 65535) return `${what}: port ${port} is out of range (1–65535)`;
  }
  const long = host.split('.').find((label) => label.length > 63);
  if (long !== undefined) return `${what}: the label ${JSON.stringify(`${long.slice(0, 20)}...`)} is ${long.length} characters long, at most 63 (RFC 1123)`;
  if (host.split('.').every((label) => new RegExp(`^${LABEL}$`).test(label)) && !namesRegistry(s)) {
    return `${what}: it has no dot and no port and isn't localhost, so clients read it as a Docker Hub namespace (docker pull ${s}/app pulls docker.io/${s}/app); name the registry as clients do, e.g. ${s}.example.com or ${s}:5000`;
  }
  return `${what}: registry names are hostnames with an optional port, e.g. ghcr.io or registry.example.com:5000`;
}
