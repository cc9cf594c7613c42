import { BlockList, isIP } from 'node:net';
import { matchesAny } from '../domain/repo-pattern.js';

/**
 * Who may do what on which repository (issue #14): the one authorization decision, pure. The HTTP
 * layer asks it with (who, client address, repository name as the client sent it, action) and maps
 * the answer: `allow`, `challenge` (401 with a `WWW-Authenticate` challenge: not authenticated, a
 * login might help) or `deny` (403: authenticated, and this user may not).
 */
export const ACTIONS = ['pull', 'push', 'delete'] as const;
export type Action = (typeof ACTIONS)[number];

export type Principal = { readonly kind: 'anonymous' } | { readonly kind: 'user'; readonly name: string };
export const ANONYMOUS: Principal = { kind: 'anonymous' };

export type Decision = 'allow' | 'challenge' | 'deny';

/** One `auth.rules` entry: grants `actions` on the matching repositories to the principals it names. */
export interface AccessRule {
  readonly repositories: readonly string[];
  readonly users?: readonly string[];
  readonly groups?: readonly string[];
  /** Any authenticated user. */
  readonly authenticated?: boolean;
  readonly anonymous?: boolean;
  readonly actions: readonly Action[];
  /** Only for clients in these ranges (`10.0.0.0/8`, `fd00::/8`, or a bare address). */
  readonly cidrs?: readonly string[];
}

export interface PolicyOptions {
  readonly rules: readonly AccessRule[];
  readonly groups: Readonly<Record<string, readonly string[]>>;
  /** Anonymous pull of mirrored (not hosted) names: on by default, dockerd sends no credentials to a mirror. */
  readonly anonymousPull: boolean;
  /** Limits that anonymous pull to clients in these ranges; absent: any client. */
  readonly anonymousPullCidrs?: readonly string[];
  /** Hosted names (`hosted.repositories`, matched on the name as sent): served from the store only, never pulled anonymously by default. */
  readonly isHosted: (name: string) => boolean;
}

export interface AccessRequest {
  readonly principal: Principal;
  /** The client's address as the socket reports it (IPv4-mapped IPv6 is read as IPv4). */
  readonly address: string;
  /** The repository name as the client sent it (before Docker Hub's `library/` rule). */
  readonly repository: string;
  readonly action: Action;
}

interface CompiledRule {
  readonly matches: (name: string) => boolean;
  readonly users: ReadonlySet<string>;
  readonly authenticated: boolean;
  readonly anonymous: boolean;
  readonly actions: ReadonlySet<Action>;
  readonly cidrs?: AddressRanges;
}

/**
 * The compiled policy. Defaults, before any rule: anonymous pull of mirrored names (within
 * `anonymousPullCidrs` when set), and pull of mirrored names for every authenticated user (a login
 * never takes away what anonymous clients get). Everything else (any push or delete, any access to
 * a hosted name) only through a rule. Rules only grant; there is no deny rule.
 */
export class AccessPolicy {
  readonly #rules: CompiledRule[];
  readonly #anonymousPull: boolean;
  readonly #anonymousPullCidrs?: AddressRanges;
  readonly #isHosted: (name: string) => boolean;

  constructor(opts: PolicyOptions) {
    this.#anonymousPull = opts.anonymousPull;
    this.#anonymousPullCidrs = opts.anonymousPullCidrs ? new AddressRanges(opts.anonymousPullCidrs) : undefined;
    this.#isHosted = opts.isHosted;
    this.#rules = opts.rules.map((r) => ({
      matches: matchesAny(r.repositories),
      users: new Set([...(r.users ?? []), ...(r.groups ?? []).flatMap((g) => opts.groups[g] ?? [])]),
      authenticated: r.authenticated ?? false,
      anonymous: r.anonymous ?? false,
      actions: new Set(r.actions),
      cidrs: r.cidrs ? new AddressRanges(r.cidrs) : undefined,
    }));
  }

  /** Whether `req.principal` may do `req.action` on `req.repository`. */
  allows(req: AccessRequest): boolean {
    const { principal, address, repository, action } = req;
    if (action === 'pull' && !this.#isHosted(repository)) {
      if (principal.kind === 'user') return true;
      if (this.#anonymousPull && (this.#anonymousPullCidrs?.contains(address) ?? true)) return true;
    }
    return this.#rules.some(
      (r) =>
        r.actions.has(action) &&
        r.matches(repository) &&
        (principal.kind === 'anonymous' ? r.anonymous : r.authenticated || r.users.has(principal.name)) &&
        (r.cidrs?.contains(address) ?? true),
    );
  }

  /** The answer for a request: allowed, or refused as 401 (anonymous) or 403 (authenticated). */
  decide(req: AccessRequest): Decision {
    if (this.allows(req)) return 'allow';
    return req.principal.kind === 'anonymous' ? 'challenge' : 'deny';
  }

  /** The subset of `actions` the principal may do on the repository (what a token grants). */
  granted(req: Omit<AccessRequest, 'action'>, actions: readonly Action[]): Action[] {
    return actions.filter((action) => this.allows({ ...req, action }));
  }

  /** Whether an anonymous client at `address` may pull anything at all (mirrored names): `/v2/` in Basic mode. */
  anonymousMayPull(address: string): boolean {
    return this.#anonymousPull && (this.#anonymousPullCidrs?.contains(address) ?? true);
  }
}

/** `::ffff:10.1.2.3` (IPv4 on a dual-stack socket) → `10.1.2.3`. */
export function normalizeAddress(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}

/** Why a CIDR entry is invalid, or undefined when it is fine: `10.0.0.0/8`, `fd00::/8`, `192.0.2.7`. */
export function cidrProblem(cidr: string): string | undefined {
  const [net, prefix, ...rest] = cidr.split('/');
  const family = isIP(net ?? '');
  if (family === 0 || rest.length > 0) return `${JSON.stringify(cidr)} is not an address or a CIDR range (e.g. 10.0.0.0/8, fd00::/8)`;
  if (prefix === undefined) return undefined;
  const max = family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max) return `${JSON.stringify(cidr)}: the prefix length must be 0–${max}`;
  return undefined;
}

/** A set of address ranges (node:net BlockList), matched against a client address. */
export class AddressRanges {
  readonly #list = new BlockList();

  constructor(cidrs: readonly string[]) {
    for (const cidr of cidrs) {
      const problem = cidrProblem(cidr);
      if (problem) throw new Error(problem);
      const [net, prefix] = cidr.split('/') as [string, string | undefined];
      const type = isIP(net) === 4 ? 'ipv4' : 'ipv6';
      if (prefix === undefined) this.#list.addAddress(net, type);
      else this.#list.addSubnet(net, Number(prefix), type);
    }
  }

  contains(address: string): boolean {
    const a = normalizeAddress(address);
    const family = isIP(a);
    if (family === 0) return false;
    return this.#list.check(a, family === 4 ? 'ipv4' : 'ipv6');
  }
}
