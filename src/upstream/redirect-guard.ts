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

// IPv4 addresses that are not on the public internet (IANA IPv4 special-purpose registry, RFC 6890).
const PRIVATE_V4 = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], // "this network"
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local, cloud instance metadata (169.254.169.254)
  ['172.16.0.0', 12],
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // documentation (TEST-NET-1)
  ['192.88.99.0', 24], // 6to4 relay anycast (deprecated, RFC 7526): a relay of someone's choosing
  ['192.168.0.0', 16],
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // documentation (TEST-NET-2)
  ['203.0.113.0', 24], // documentation (TEST-NET-3)
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
] as const) {
  PRIVATE_V4.addSubnet(net, prefix, 'ipv4');
}

/**
 * IPv6 ranges (IANA IPv6 special-purpose registry) refused whole: not on the public internet, or
 * able to carry a packet to an IPv4 address of the attacker's choosing through a tunnel, relay or
 * translator (issue #11: `[::127.0.0.1]`, `64:ff9b:1::/48`, `2002::/16` were let through).
 */
const PRIVATE_V6 = new BlockList();
for (const [net, prefix] of [
  ['::', 96], // unspecified (::), loopback (::1), IPv4-compatible (::a.b.c.d, deprecated, RFC 4291 §2.5.5.1)
  ['::ffff:0:0:0', 96], // IPv4-translated (SIIT, RFC 2765)
  ['64:ff9b:1::', 48], // local-use NAT64 (RFC 8215): the operator's own translator, any embedding format
  ['100::', 64], // discard-only (RFC 6666)
  ['2001::', 32], // Teredo (RFC 4380): embeds a server and a client IPv4 address, reached through a relay
  ['2001:2::', 48], // benchmarking
  ['2001:10::', 28], // ORCHID (deprecated)
  ['2001:20::', 28], // ORCHIDv2: identifiers, not locators
  ['2001:db8::', 32], // documentation
  ['2002::', 16], // 6to4 (RFC 3056, deprecated by RFC 7526): embeds an IPv4 address, reached through a relay
  ['3fff::', 20], // documentation (RFC 9637)
  ['5f00::', 16], // SRv6 SIDs (RFC 9602)
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['fec0::', 10], // site-local (deprecated, still routed by some stacks)
  ['ff00::', 8], // multicast
] as const) {
  PRIVATE_V6.addSubnet(net, prefix, 'ipv6');
}

/**
 * IPv6 ranges judged by the IPv4 address in their last 32 bits: IPv4-mapped (a dual-stack socket's
 * view of an IPv4 peer) and the well-known NAT64 prefix (RFC 6052 §2.1), which DNS64 synthesises
 * for every IPv4-only name in an IPv6-only cluster, Docker Hub's CDN included. RFC 6052 §3.1
 * forbids the well-known prefix for non-global IPv4, and we check rather than trust that.
 */
const EMBEDS_V4_LAST_32 = new BlockList();
EMBEDS_V4_LAST_32.addSubnet('::ffff:0:0', 96, 'ipv6');
EMBEDS_V4_LAST_32.addSubnet('64:ff9b::', 96, 'ipv6');

/**
 * True for addresses a redirect must not reach: loopback, link-local, private, shared, multicast and
 * reserved IPv4; the IPv6 ranges above; IPv6 forms embedding such an IPv4 address. Accepts
 * brackets (`[::1]`) and zone ids (`fe80::1%eth0`). Not an IP address: false.
 */
export function isPrivateAddress(address: string): boolean {
  const bare = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const family = isIP(bare);
  if (family === 4) return PRIVATE_V4.check(bare, 'ipv4');
  if (family !== 6) return false;
  if (EMBEDS_V4_LAST_32.check(bare, 'ipv6')) {
    const g = ipv6Groups(bare);
    return g === undefined || PRIVATE_V4.check(`${g[6]! >> 8}.${g[6]! & 255}.${g[7]! >> 8}.${g[7]! & 255}`, 'ipv4');
  }
  return PRIVATE_V6.check(bare, 'ipv6');
}

/** The eight 16-bit groups of a valid IPv6 address (`::` expanded, a trailing dotted quad folded in). */
function ipv6Groups(address: string): number[] | undefined {
  let text = address;
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, quad.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const parse = (s: string | undefined) => (s ? s.split(':').map((h) => parseInt(h, 16)) : []);
  const left = parse(head);
  const right = parse(tail);
  const groups = tail === undefined ? left : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  return groups.length === 8 && groups.every((n) => Number.isInteger(n) && n >= 0 && n <= 0xffff) ? groups : undefined;
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
