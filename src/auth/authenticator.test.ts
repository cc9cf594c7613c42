import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { Authenticator, constantTimeEqual, type UserSource } from './authenticator.js';
import { BcryptPool } from './bcrypt-pool.js';

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

describe('Authenticator', () => {
  const pool = new BcryptPool(1);
  after(() => pool.close());
  let comparisons = 0;
  const counting = { compare: (pw: string, h: string) => (comparisons++, pool.compare(pw, h)) };
  const setup = (max = 3, perAddress = 100) => {
    const users = new Users();
    users.set('alice', 'right');
    const clock = { ms: 1_000_000 };
    const auth = new Authenticator({ users, bcrypt: counting, maxFailedLogins: max, maxFailedLoginsPerAddress: perAddress, failedLoginWindowMs: 60_000, cacheTtlMs: 60_000, now: () => clock.ms });
    return { users, clock, auth };
  };

  it('verifies with bcrypt in a worker, then from the cache until the TTL or a change of users', async () => {
    const { users, clock, auth } = setup();
    const before = comparisons;
    assert.deepEqual(await auth.verify('alice', 'right', '10.0.0.1'), { ok: true, user: 'alice' });
    assert.deepEqual(await auth.verify('alice', 'right', '10.0.0.2'), { ok: true, user: 'alice' });
    assert.equal(comparisons - before, 1, 'the second verification came from the cache');
    clock.ms += 60_001;
    await auth.verify('alice', 'right', '10.0.0.1');
    assert.equal(comparisons - before, 2, 'expired: bcrypt again');
    users.set('alice', 'changed');
    assert.deepEqual(await auth.verify('alice', 'right', '10.0.0.1'), { ok: false, reason: 'invalid' }, 'the old password is gone with the change');
    assert.deepEqual(await auth.verify('alice', 'changed', '10.0.0.1'), { ok: true, user: 'alice' });
  });

  it('knows an Authorization header verified lately by its digest, until the TTL, a change of users or a rate limit', async () => {
    const { users, clock, auth } = setup(3);
    const header = `Basic ${Buffer.from('alice:right').toString('base64')}`;
    assert.equal(auth.known(header, '10.0.0.1'), undefined, 'never verified');
    const before = comparisons;
    assert.deepEqual(await auth.verify('alice', 'right', '10.0.0.1', header), { ok: true, user: 'alice' });
    assert.deepEqual(auth.known(header, '10.0.0.2'), { ok: true, user: 'alice' });
    assert.equal(auth.known(`Basic ${Buffer.from('alice:wrong').toString('base64')}`, '10.0.0.1'), undefined, 'another password is another header');
    assert.equal(auth.known(header.replace('Basic', 'basic'), '10.0.0.1'), undefined, 'only the exact header');
    assert.equal(comparisons - before, 1);
    // Failed logins for the user: the known header is refused like any other attempt.
    for (let i = 0; i < 3; i++) await auth.verify('alice', `wrong${i}`, '10.0.0.9');
    assert.deepEqual(auth.known(header, '10.0.0.1'), { ok: false, reason: 'rate-limited', retryAfterSeconds: 60 });
    clock.ms += 60_001;
    assert.equal(auth.known(header, '10.0.0.1'), undefined, 'past the TTL');
    assert.deepEqual(await auth.verify('alice', 'right', '10.0.0.1', header), { ok: true, user: 'alice' });
    assert.deepEqual(auth.known(header, '10.0.0.1'), { ok: true, user: 'alice' });
    users.set('bob', 'x');
    assert.equal(auth.known(header, '10.0.0.1'), undefined, 'forgotten when the users change');
    // A user and password verified without a header (the OAuth2 form) then arriving in one: no bcrypt.
    assert.deepEqual(await auth.verify('alice', 'right', '10.0.0.1'), { ok: true, user: 'alice' });
    const n = comparisons;
    assert.deepEqual(await auth.verify('alice', 'right', '10.0.0.1', header), { ok: true, user: 'alice' });
    assert.equal(comparisons, n);
    assert.deepEqual(auth.known(header, '10.0.0.1'), { ok: true, user: 'alice' });
  });

  it('an unknown user costs a bcrypt comparison too and fails', async () => {
    const { auth } = setup();
    const before = comparisons;
    assert.deepEqual(await auth.verify('nobody', 'x', '10.0.0.1'), { ok: false, reason: 'invalid' });
    assert.equal(comparisons - before, 1);
  });

  it('rate-limits failed logins per user, without checking the password, until the window passes', async () => {
    const { clock, auth } = setup(3);
    for (let i = 0; i < 3; i++) assert.deepEqual(await auth.verify('alice', `wrong${i}`, `10.0.0.${i}`), { ok: false, reason: 'invalid' });
    clock.ms += 10_000;
    const before = comparisons;
    assert.deepEqual(await auth.verify('alice', 'right', '10.9.9.9'), { ok: false, reason: 'rate-limited', retryAfterSeconds: 50 });
    assert.equal(comparisons, before, 'no bcrypt while limited');
    clock.ms += 50_001;
    assert.deepEqual(await auth.verify('alice', 'right', '10.9.9.9'), { ok: true, user: 'alice' });
  });

  it('rate-limits per address whatever the user names; IPv4-mapped addresses count as IPv4', async () => {
    const { auth } = setup(100, 2);
    await auth.verify('u1', 'x', '::ffff:10.0.0.1');
    await auth.verify('u2', 'x', '10.0.0.1');
    assert.equal((await auth.verify('alice', 'right', '10.0.0.1')).ok, false);
    assert.equal((await auth.verify('alice', 'right', '10.0.0.2')).ok, true, 'another address is not limited');
  });

  it('keeps the event loop free while bcrypt runs (a timer fires during a cost-12 comparison)', async () => {
    const slow = bcrypt.hashSync('pw', 12);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      assert.equal(await pool.compare('pw', slow), true);
    } finally {
      clearInterval(timer);
    }
    assert.ok(ticks > 0, 'the main thread ran timers during the comparison');
    assert.equal(await pool.compare('pw', 'not a hash'), false);
  });

  it('constantTimeEqual compares whole strings', () => {
    assert.ok(constantTimeEqual('abc', 'abc'));
    assert.ok(!constantTimeEqual('abc', 'abd'));
    assert.ok(!constantTimeEqual('abc', 'abcd'));
  });
});
