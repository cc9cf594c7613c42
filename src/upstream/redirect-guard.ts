/**
 * SSRF guard for redirects: an upstream (or anything that can answer for it) must not be able to
 * send hubcache to the instance-metadata endpoint, to loopback services or into the operator's
 * private network with a `Location` header. A redirect target is allowed when it is the
 * upstream's own host, a host the operator listed (`allowedRedirectHosts`, e.g. an internal CDN),
 * or when every address it resolves to is public.
 *
 * The check resolves the name before the request; undici resolves it again when connecting, so a
 * DNS server that answers differently the second time (rebinding) is not covered. The upstreams
 * are configured by the operator, so that takes a hostile registry plus a hostile DNS name.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { UpstreamError } from './upstream.js';

/** Resolves a host name to all its addresses (injected by tests). */
export type Lookup = (hostname: string) => Promise<ReadonlyArray<{ address: string; family: number }>>;

const defaultLookup: Lookup = (hostname) => dnsLookup(hostname, { all: true, verbatim: true });

// Addresses that are not on the public internet (IANA special-purpose registries, RFC 6890).
const PRIVATE = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], // "this network"
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local, cloud instance metadata (169.254.169.254)
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15], // benchmarking
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
] as const) {
  PRIVATE.addSubnet(net, prefix, 'ipv4');
}
for (const [net, prefix] of [
  ['::', 128], // unspecified
  ['::1', 128], // loopback
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['ff00::', 8], // multicast
  ['64:ff9b::', 96], // NAT64 to IPv4 (could reach private IPv4 through a translator)
  ['2001:db8::', 32], // documentation
] as const) {
  PRIVATE.addSubnet(net, prefix, 'ipv6');
}

/** True for loopback, link-local, private, shared, multicast and reserved addresses (IPv4, IPv6, v4-mapped). */
export function isPrivateAddress(address: string): boolean {
  const bare = address.replace(/^\[|\]$/g, '');
  const family = isIP(bare);
  if (family === 4) return PRIVATE.check(bare, 'ipv4');
  if (family === 6) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
    if (mapped) return PRIVATE.check(mapped[1]!, 'ipv4');
    const hexMapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(bare);
    if (hexMapped) {
      const hi = parseInt(hexMapped[1]!, 16);
      const lo = parseInt(hexMapped[2]!, 16);
      return PRIVATE.check(`${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`, 'ipv4');
    }
    return PRIVATE.check(bare, 'ipv6');
  }
  return false;
}

export interface RedirectGuardOptions {
  /** The upstream's own base URL: its host (with port) is always allowed. */
  readonly base: URL;
  /** `host` or `host:port` entries allowed even on private addresses. */
  readonly allowedHosts: readonly string[];
  readonly lookup?: Lookup;
}

export class RedirectGuard {
  readonly #base: URL;
  readonly #allowed: ReadonlySet<string>;
  readonly #lookup: Lookup;

  constructor(opts: RedirectGuardOptions) {
    this.#base = opts.base;
    this.#allowed = new Set(opts.allowedHosts.map((h) => h.toLowerCase()));
    this.#lookup = opts.lookup ?? defaultLookup;
  }

  /**
   * Resolves when `target` may be requested; throws UpstreamError('protocol') naming the host when
   * it points at a non-public address that is neither the upstream's host nor allowed.
   */
  async check(target: URL): Promise<void> {
    if (target.host === this.#base.host) return;
    if (this.#allowed.has(target.host) || this.#allowed.has(target.hostname)) return;
    const hostname = target.hostname.replace(/^\[|\]$/g, '');
    let addresses: string[];
    if (isIP(hostname)) {
      addresses = [hostname];
    } else {
      try {
        addresses = (await this.#lookup(hostname)).map((a) => a.address);
      } catch (err) {
        throw new UpstreamError('unavailable', `cannot resolve redirect host ${target.host}`, { cause: err });
      }
    }
    const bad = addresses.find(isPrivateAddress);
    if (bad !== undefined || addresses.length === 0) {
      throw new UpstreamError(
        'protocol',
        `redirect to ${target.host} refused: it resolves to the non-public address ${bad ?? '(none)'}; list it under allowedRedirectHosts if it is your CDN`,
      );
    }
  }
}
