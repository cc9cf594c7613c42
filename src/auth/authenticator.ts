import * as crypto from 'node:crypto';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { BcryptPool } from './bcrypt-pool.js';
import { normalizeAddress } from './policy.js';

/**
 * Checks a user name and password against the htpasswd users, with what makes it safe and cheap:
 *
 * - bcrypt runs off the event loop (`BcryptPool`), and a user who doesn't exist costs a comparison
 *   against a dummy hash too, so the answer time doesn't tell which users exist.
 * - Verified credentials are remembered for `cacheTtlMs` (keyed by a keyed SHA-256 digest of the
 *   credentials with a random key made at start: the password is never kept, not even its plain
 *   hash), and forgotten at once when the users change. A pull that authenticates on every request
 *   (Basic) costs one bcrypt comparison per `cacheTtlMs`, not one per request; and a request whose
 *   `Authorization` header was verified lately costs one digest of the header and a lookup
 *   (`known`), not even the decoding of the header.
 * - Failed logins are counted per user and per client address over `failedLoginWindowMs`; from
 *   `maxFailedLogins` (per user) or `maxFailedLoginsPerAddress` on, further attempts are refused without checking (`rate-limited`) until
 *   the window moves past them.
 */
export type Verdict = { readonly ok: true; readonly user: string } | { readonly ok: false; readonly reason: 'invalid' | 'rate-limited'; readonly retryAfterSeconds?: number };

export interface UserSource {
  readonly users: ReadonlyMap<string, string>;
  onChange(listener: () => void): void;
}

export interface AuthenticatorOptions {
  readonly users: UserSource;
  readonly bcrypt: Pick<BcryptPool, 'compare'>;
  readonly maxFailedLogins: number;
  readonly maxFailedLoginsPerAddress: number;
  readonly failedLoginWindowMs: number;
  readonly cacheTtlMs?: number;
  readonly now?: () => number;
}

// A valid bcrypt hash of a random password: what a missing user is compared against when there are
// no users (otherwise another user's hash, so that the cost is the file's).
const DUMMY_HASH = '$2b$10$t0uHEKM5pxWYlTTgk1xE2ebhP./ZnyqThGZybFPsQ75c8zEEu9PZW';

// crypto.hash (Node ≥ 20.12): a one-shot digest without a Hash object, several times cheaper than
// createHmac per request; createHmac where it is missing.
const oneShotHash = (crypto as { hash?: (algorithm: string, data: string, encoding: 'base64') => string }).hash;

interface Verified {
  readonly verdict: Verdict & { readonly ok: true };
  readonly until: number;
}

export class Authenticator {
  readonly #opts: AuthenticatorOptions;
  readonly #now: () => number;
  readonly #cacheKey = randomBytes(32);
  readonly #cacheKeyText = this.#cacheKey.toString('base64');
  readonly #verified: LRUCache<string, Verified>;
  // `maxSize` with a size of 1 each, not `max`: no 100k slots preallocated at start (see pull-through.ts).
  readonly #failures = new LRUCache<string, number[]>({ maxSize: 100_000, sizeCalculation: () => 1 });

  constructor(opts: AuthenticatorOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#verified = new LRUCache({ max: 10_000 });
    opts.users.onChange(() => this.#verified.clear());
  }

  /**
   * The verdict on an `Authorization` header (Basic) that `verify` accepted lately, with the limits
   * on failed logins still applied; undefined when it must be decoded and verified. The header is
   * looked up by its keyed digest: it is never stored.
   */
  known(header: string, address: string): Verdict | undefined {
    const cached = this.#verified.get(this.#digest('h', header));
    if (cached === undefined || cached.until <= this.#now()) return undefined;
    if (this.#failures.size > 0) {
      const limited = this.#rateLimited(this.#limitKeys(cached.verdict.user, address));
      if (limited !== undefined) return { ok: false, reason: 'rate-limited', retryAfterSeconds: limited };
    }
    return cached.verdict;
  }

  /** `header`: the `Authorization` header the user and password came in, remembered for `known` when they are right. */
  async verify(user: string, password: string, address: string, header?: string): Promise<Verdict> {
    const keys = this.#limitKeys(user, address);
    const limited = this.#rateLimited(keys);
    if (limited !== undefined) return { ok: false, reason: 'rate-limited', retryAfterSeconds: limited };

    const cacheKey = this.#digest('p', `${user}\0${password}`);
    const cached = this.#verified.get(cacheKey);
    if (cached && cached.until > this.#now() && constantTimeEqual(cached.verdict.user, user)) {
      if (header !== undefined) this.#verified.set(this.#digest('h', header), cached);
      return cached.verdict;
    }

    const hash = this.#opts.users.users.get(user);
    const compareWith = hash ?? this.#opts.users.users.values().next().value ?? DUMMY_HASH;
    const ok = (await this.#opts.bcrypt.compare(password, compareWith)) && hash !== undefined;
    // The users may have changed while bcrypt ran: only a still-current entry is trusted.
    if (ok && this.#opts.users.users.get(user) === hash) {
      const verified: Verified = { verdict: { ok: true, user }, until: this.#now() + (this.#opts.cacheTtlMs ?? 60_000) };
      this.#verified.set(cacheKey, verified);
      if (header !== undefined) this.#verified.set(this.#digest('h', header), verified);
      return verified.verdict;
    }
    this.#recordFailure(keys);
    return { ok: false, reason: 'invalid' };
  }

  /**
   * The cache key of a credential: SHA-256 over the per-process random key and the credential (a
   * keyed digest: without the key, which never leaves this object, nothing in the cache can be
   * checked against a guessed password). `kind` separates user+password from whole headers.
   */
  #digest(kind: 'h' | 'p', credential: string): string {
    if (oneShotHash) return oneShotHash('sha256', `${this.#cacheKeyText}${kind}${credential}`, 'base64');
    return createHmac('sha256', this.#cacheKey).update(kind).update(credential).digest('base64');
  }

  #limitKeys(user: string, address: string): [string, number][] {
    return [
      [`u:${user}`, this.#opts.maxFailedLogins],
      [`a:${normalizeAddress(address)}`, this.#opts.maxFailedLoginsPerAddress],
    ];
  }

  /** Seconds until the oldest counted failure leaves the window, when one of `keys` is at the limit. */
  #rateLimited(keys: readonly [string, number][]): number | undefined {
    const now = this.#now();
    let wait: number | undefined;
    for (const [key, max] of keys) {
      const recent = (this.#failures.get(key) ?? []).filter((t) => t > now - this.#opts.failedLoginWindowMs);
      if (recent.length >= max) {
        const s = Math.max(1, Math.ceil((recent[recent.length - max]! + this.#opts.failedLoginWindowMs - now) / 1000));
        wait = Math.max(wait ?? 0, s);
      }
    }
    return wait;
  }

  #recordFailure(keys: readonly [string, number][]): void {
    const now = this.#now();
    for (const [key, max] of keys) {
      const recent = (this.#failures.get(key) ?? []).filter((t) => t > now - this.#opts.failedLoginWindowMs);
      recent.push(now);
      this.#failures.set(key, recent.slice(-max));
    }
  }
}

/** String equality whose time doesn't depend on where the strings differ. */
export function constantTimeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
