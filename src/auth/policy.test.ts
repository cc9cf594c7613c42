import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AccessPolicy, ACTIONS, ANONYMOUS, cidrProblem, normalizeAddress, type Action, type Principal } from './policy.js';

const user = (name: string): Principal => ({ kind: 'user', name });
const isHosted = (n: string) => n.startsWith('myorg/') || n.startsWith('ci/');

const policy = new AccessPolicy({
  isHosted,
  anonymousPull: true,
  anonymousPullCidrs: ['10.0.0.0/8', 'fd00::/8'],
  groups: { devs: ['alice', 'dave'], bots: ['ci-bot'] },
  rules: [
    { repositories: ['myorg/**'], groups: ['devs'], actions: ['pull', 'push'] },
    { repositories: ['myorg/**'], users: ['alice'], actions: ['delete'] },
    { repositories: ['myorg/public/*'], anonymous: true, actions: ['pull'] },
    { repositories: ['ci/*'], groups: ['bots'], actions: ['pull', 'push', 'delete'], cidrs: ['192.0.2.0/24'] },
    { repositories: ['ci/*'], authenticated: true, actions: ['pull'] },
  ],
});

describe('AccessPolicy: the authorization matrix', () => {
  const cases: [string, Principal, string, string, Action, 'allow' | 'challenge' | 'deny'][] = [
    // Mirrored names: anonymous pull within the ranges, every user pulls, nobody pushes or deletes.
    ['anonymous pull, mirrored, inside the range', ANONYMOUS, '10.1.2.3', 'library/alpine', 'pull', 'allow'],
    ['anonymous pull, mirrored, IPv4-mapped address', ANONYMOUS, '::ffff:10.1.2.3', 'library/alpine', 'pull', 'allow'],
    ['anonymous pull, mirrored, IPv6 range', ANONYMOUS, 'fd00::1', 'library/alpine', 'pull', 'allow'],
    ['anonymous pull, mirrored, outside the range', ANONYMOUS, '203.0.113.9', 'library/alpine', 'pull', 'challenge'],
    ['user pull, mirrored, outside the range', user('bob'), '203.0.113.9', 'library/alpine', 'pull', 'allow'],
    ['anonymous push, mirrored', ANONYMOUS, '10.1.2.3', 'library/alpine', 'push', 'challenge'],
    ['user push, mirrored', user('alice'), '10.1.2.3', 'library/alpine', 'push', 'deny'],
    ['user delete, mirrored', user('alice'), '10.1.2.3', 'library/alpine', 'delete', 'deny'],
    // Hosted names: rules only.
    ['anonymous pull, hosted', ANONYMOUS, '10.1.2.3', 'myorg/app', 'pull', 'challenge'],
    ['group member pull, hosted (** across components)', user('dave'), '1.2.3.4', 'myorg/team/app', 'pull', 'allow'],
    ['group member push, hosted', user('dave'), '1.2.3.4', 'myorg/app', 'push', 'allow'],
    ['group member delete without a delete rule', user('dave'), '1.2.3.4', 'myorg/app', 'delete', 'deny'],
    ['user with a delete rule', user('alice'), '1.2.3.4', 'myorg/app', 'delete', 'allow'],
    ['user outside every pattern', user('bob'), '1.2.3.4', 'myorg/app', 'pull', 'deny'],
    ['anonymous rule on a sub-pattern', ANONYMOUS, '203.0.113.9', 'myorg/public/docs', 'pull', 'allow'],
    ['anonymous rule does not reach deeper (* is one component)', ANONYMOUS, '203.0.113.9', 'myorg/public/a/b', 'pull', 'challenge'],
    ['anonymous rule grants pull only', ANONYMOUS, '203.0.113.9', 'myorg/public/docs', 'push', 'challenge'],
    // CIDR-limited rules.
    ['bot inside its range pushes', user('ci-bot'), '192.0.2.10', 'ci/build', 'push', 'allow'],
    ['bot outside its range may not push', user('ci-bot'), '198.51.100.1', 'ci/build', 'push', 'deny'],
    ['bot outside its range still pulls (authenticated rule)', user('ci-bot'), '198.51.100.1', 'ci/build', 'pull', 'allow'],
    ['any user pulls ci/*', user('bob'), '198.51.100.1', 'ci/build', 'pull', 'allow'],
    ['a user named like a group is not its member', user('devs'), '1.2.3.4', 'myorg/app', 'pull', 'deny'],
  ];
  for (const [what, principal, address, repository, action, want] of cases) {
    it(`${what}: ${want}`, () => assert.equal(policy.decide({ principal, address, repository, action }), want));
  }

  it('granted(): the subset of the actions asked for', () => {
    assert.deepEqual(policy.granted({ principal: user('dave'), address: '1.2.3.4', repository: 'myorg/app' }, [...ACTIONS]), ['pull', 'push']);
    assert.deepEqual(policy.granted({ principal: ANONYMOUS, address: '1.2.3.4', repository: 'myorg/app' }, ['pull', 'push']), []);
  });

  it('anonymous pull can be switched off; users still pull mirrored names', () => {
    const closed = new AccessPolicy({ isHosted, anonymousPull: false, groups: {}, rules: [] });
    assert.equal(closed.decide({ principal: ANONYMOUS, address: '10.0.0.1', repository: 'library/alpine', action: 'pull' }), 'challenge');
    assert.equal(closed.decide({ principal: user('x'), address: '10.0.0.1', repository: 'library/alpine', action: 'pull' }), 'allow');
    assert.equal(closed.anonymousMayPull('10.0.0.1'), false);
    assert.equal(policy.anonymousMayPull('10.0.0.1'), true);
    assert.equal(policy.anonymousMayPull('127.0.0.1'), false);
  });
});

describe('addresses and ranges', () => {
  it('normalizes IPv4-mapped IPv6 addresses', () => {
    assert.equal(normalizeAddress('::ffff:127.0.0.1'), '127.0.0.1');
    assert.equal(normalizeAddress('::1'), '::1');
  });

  it('validates CIDR entries with a reason', () => {
    assert.equal(cidrProblem('10.0.0.0/8'), undefined);
    assert.equal(cidrProblem('192.0.2.7'), undefined);
    assert.equal(cidrProblem('fd00::/8'), undefined);
    assert.match(cidrProblem('10.0.0.0/33')!, /prefix length must be 0–32/);
    assert.match(cidrProblem('fd00::/129')!, /0–128/);
    assert.match(cidrProblem('example.com/8')!, /not an address or a CIDR range/);
    assert.match(cidrProblem('10.0.0.0/8/8')!, /not an address/);
  });
});
