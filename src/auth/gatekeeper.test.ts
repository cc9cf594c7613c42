import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { Authenticator, type UserSource } from './authenticator.js';
import { BcryptPool } from './bcrypt-pool.js';
import { Gatekeeper, type Identity } from './gatekeeper.js';
import { AccessPolicy } from './policy.js';
import type { Scope } from './scope.js';
import { TokenSigner } from './token.js';

class Users implements UserSource {
  users = new Map<string, string>();
  readonly #listeners: (() => void)[] = [];
  onChange(l: () => void) {
    this.#listeners.push(l);
  }
  set(user: string, password: string) {
    this.users = new Map(this.users).set(user, bcrypt.hashSync(password, 4));
    for (const l of this.#listeners) l();
  }
}

/** A signer that counts its ECDSA operations. */
class CountingSigner extends TokenSigner {
  signed = 0;
  verified = 0;
  override issueAccess(...args: Parameters<TokenSigner['issueAccess']>) {
    this.signed++;
    return super.issueAccess(...args);
  }
  override verifyAccess(token: string) {
    this.verified++;
    return super.verifyAccess(token);
  }
}

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const pull = (name: string): Scope => ({ type: 'repository', name, actions: ['pull'] });

describe('Gatekeeper: Basic on every request', () => {
  const pool = new BcryptPool(1);
  after(() => pool.close());
  it('verifies a header once, knows it after, and still refuses a wrong password and a malformed header', async () => {
    const users = new Users();
    users.set('alice', 'right');
    let comparisons = 0;
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const gk = new Gatekeeper({
      policy: new AccessPolicy({ rules: [], groups: {}, anonymousPull: true, isHosted: () => false }),
      authenticator: new Authenticator({ users, bcrypt: { compare: (p, h) => (comparisons++, pool.compare(p, h)) }, maxFailedLogins: 10, maxFailedLoginsPerAddress: 50, failedLoginWindowMs: 300_000 }),
      signer: new TokenSigner({ key: privateKey, service: 'hubcache' }),
      users,
      tokenTtlSeconds: 300,
      refreshTokenTtlSeconds: 3600,
    });
    for (let i = 0; i < 3; i++) assert.deepEqual(await gk.identify(basic('alice', 'right'), '10.0.0.1'), { scheme: 'basic', principal: { kind: 'user', name: 'alice' } });
    assert.equal(comparisons, 1);
    assert.deepEqual(await gk.identify(basic('alice', 'wrong'), '10.0.0.1'), { failure: 'invalid-credentials', scheme: 'basic' });
    assert.deepEqual(await gk.identify('Basic !!!', '10.0.0.1'), { failure: 'invalid-credentials', scheme: 'basic' });
    assert.equal(comparisons, 2);
  });
});

describe('Gatekeeper: tokens', () => {
  const pool = new BcryptPool(1);
  after(() => pool.close());
  const setup = (ttl = 300, reuse?: number) => {
    const users = new Users();
    users.set('alice', 'right');
    users.set('bob', 'right');
    const clock = { ms: Date.parse('2025-01-01T00:00:00Z') };
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const signer = new CountingSigner({ key: privateKey, service: 'hubcache', now: () => clock.ms });
    const gk = new Gatekeeper({
      policy: new AccessPolicy({ rules: [{ repositories: ['myorg/**'], users: ['alice'], actions: ['pull', 'push'] }], groups: {}, anonymousPull: true, isHosted: (n) => n.startsWith('myorg/') }),
      authenticator: new Authenticator({ users, bcrypt: pool, maxFailedLogins: 10, maxFailedLoginsPerAddress: 50, failedLoginWindowMs: 300_000, now: () => clock.ms }),
      signer,
      users,
      tokenTtlSeconds: ttl,
      refreshTokenTtlSeconds: 3600,
      ...(reuse === undefined ? {} : { tokenReuseSeconds: reuse }),
    });
    const login = async (user: string): Promise<Identity> => {
      const id = await gk.identify(basic(user, 'right'), '10.0.0.1');
      assert.ok(!('failure' in id));
      return id;
    };
    return { users, clock, signer, gk, login };
  };

  it('hands the same access token to the same user for the same access while it is young, with what is left of its life', async () => {
    const { clock, signer, gk, login } = setup();
    const alice = await login('alice');
    const first = gk.issue(alice, '10.0.0.1', [pull('myorg/app')], false);
    assert.equal(first.expiresIn, 300);
    clock.ms += 20_000;
    const again = gk.issue(alice, '10.0.0.1', [pull('myorg/app')], false);
    assert.equal(again.token, first.token);
    assert.equal(again.expiresIn, 280, 'expires_in is what is left, not the full TTL');
    assert.equal(again.issuedAt, first.issuedAt);
    assert.equal(signer.signed, 1);
    // Past the window (ttl/10 = 30 s): a new token, with its full life.
    clock.ms += 11_000;
    const later = gk.issue(alice, '10.0.0.1', [pull('myorg/app')], false);
    assert.notEqual(later.token, first.token);
    assert.equal(later.expiresIn, 300);
    assert.equal(signer.signed, 2);
  });

  it('never shares a token across users, granted access or a change of the users', async () => {
    const { users, signer, gk, login } = setup();
    const alice = await login('alice');
    const bob = await login('bob');
    const a = gk.issue(alice, '10.0.0.1', [pull('myorg/app')], false);
    // bob may not pull the hosted name: his token grants nothing, so it is another token.
    const b = gk.issue(bob, '10.0.0.1', [pull('myorg/app')], false);
    assert.notEqual(b.token, a.token);
    assert.deepEqual(b.access, []);
    const other = gk.issue(alice, '10.0.0.1', [pull('myorg/other')], false);
    assert.notEqual(other.token, a.token);
    const anonymous = gk.issue({ scheme: 'anonymous', principal: { kind: 'anonymous' } }, '10.0.0.1', [pull('library/alpine')], false);
    const aliceAlpine = gk.issue(alice, '10.0.0.1', [pull('library/alpine')], false);
    assert.notEqual(anonymous.token, aliceAlpine.token, 'same access, other subject');
    assert.equal(signer.signed, 5);
    users.set('alice', 'changed');
    const afterChange = gk.issue(alice, '10.0.0.1', [pull('myorg/app')], false);
    assert.notEqual(afterChange.token, a.token, 'a change of the users drops the issued tokens');
  });

  it('tokenReuseSeconds 0, or a TTL under 10 s, signs a new token every time', async () => {
    for (const { ttl, reuse } of [{ ttl: 300, reuse: 0 }, { ttl: 9, reuse: undefined }]) {
      const { signer, gk, login } = setup(ttl, reuse);
      const alice = await login('alice');
      const t1 = gk.issue(alice, '10.0.0.1', [pull('myorg/app')], false).token;
      const t2 = gk.issue(alice, '10.0.0.1', [pull('myorg/app')], false).token;
      assert.equal(signer.signed, 2);
      // Distinct tokens only when they differ in iat or jti: jti is random.
      assert.notEqual(t1, t2);
    }
  });

  it('accepts a token it issued without verifying its signature, until it expires; anything else is verified', async () => {
    const { clock, signer, gk, login } = setup();
    const alice = await login('alice');
    const { token } = gk.issue(alice, '10.0.0.1', [pull('myorg/app')], false);
    const id = await gk.identify(`Bearer ${token}`, '10.0.0.1');
    assert.ok(!('failure' in id));
    assert.equal(id.scheme, 'bearer');
    assert.deepEqual(id.principal, { kind: 'user', name: 'alice' });
    assert.deepEqual(gk.check(id, '10.0.0.1', 'myorg/app', 'pull'), { decision: 'allow' });
    assert.deepEqual(gk.check(id, '10.0.0.1', 'myorg/app', 'push'), { decision: 'challenge', insufficientScope: true });
    assert.deepEqual(gk.check(id, '10.0.0.1', 'myorg/other', 'pull'), { decision: 'challenge', insufficientScope: true });
    assert.equal(signer.verified, 0, 'no ECDSA verification of our own fresh token');
    // The scheme's word in any case and extra spaces take the parsing path: still known.
    assert.ok(!('failure' in (await gk.identify(`bearer  ${token}`, '10.0.0.1'))));
    assert.equal(signer.verified, 0);
    // A tampered token is not the cached string: verified, and refused.
    const [h, b, s] = token.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(b, 'base64url').toString());
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...claims, access: [{ type: 'repository', name: 'myorg/secret', actions: ['pull', 'push'] }] })).toString('base64url')}.${s}`;
    assert.deepEqual(await gk.identify(`Bearer ${forged}`, '10.0.0.1'), { failure: 'invalid-token', scheme: 'bearer', problem: 'signature' });
    assert.equal(signer.verified, 1);
    // Expiry is checked on every request, also for known tokens.
    clock.ms += 300_000;
    assert.deepEqual(await gk.identify(`Bearer ${token}`, '10.0.0.1'), { failure: 'invalid-token', scheme: 'bearer', problem: 'expired' });
  });

  it('a token signed elsewhere with the same key (another replica) is verified once, then known', async () => {
    const { signer, gk } = setup();
    const { token } = signer.issueAccess('alice', [{ type: 'repository', name: 'myorg/app', actions: ['pull'] }], 300);
    for (let i = 0; i < 3; i++) assert.ok(!('failure' in (await gk.identify(`Bearer ${token}`, '10.0.0.1'))));
    assert.equal(signer.verified, 1);
  });

  it('an expired token is never handed out again, even inside the reuse window', async () => {
    const { clock, gk, login } = setup(10, 30);
    const alice = await login('alice');
    const first = gk.issue(alice, '10.0.0.1', [pull('myorg/app')], false);
    clock.ms += 10_000;
    const next = gk.issue(alice, '10.0.0.1', [pull('myorg/app')], false);
    assert.notEqual(next.token, first.token);
    assert.equal(next.expiresIn, 10);
  });
});
