import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RegistryError } from '../domain/errors.js';
import { compileHostedRules, compileRepoFilter, globToRegExp, resolveRepo, routeRepo, type RepoResolverOptions } from './resolve-repo.js';

const filtered: RepoResolverOptions = {
  upstreams: new Set(['docker.io', 'ghcr.io', 'registry.example.test:5000']),
  defaultUpstream: 'docker.io',
  filters: new Map([
    ['ghcr.io', compileRepoFilter({ allow: ['myorg/**', 'other/app'], deny: ['myorg/secret-*'] })],
    ['docker.io', compileRepoFilter({ deny: ['evilcorp/*'] })],
  ]),
};
const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return e instanceof RegistryError ? e.code : String(e);
  }
  return 'no error';
};

test('ns wins over a dotted first path component; then the path prefix; then the default', () => {
  const opts: RepoResolverOptions = { ...filtered, filters: new Map() };
  assert.deepEqual(resolveRepo(opts, 'my.org/app', 'ghcr.io'), { upstream: 'ghcr.io', repo: 'my.org/app' }, 'ghcr.io org with a dot, through containerd');
  assert.deepEqual(resolveRepo(opts, 'myorg/app', 'ghcr.io'), { upstream: 'ghcr.io', repo: 'myorg/app' });
  assert.deepEqual(resolveRepo(opts, 'ghcr.io/myorg/app', null), { upstream: 'ghcr.io', repo: 'myorg/app' });
  assert.deepEqual(resolveRepo(opts, 'registry.example.test:5000/team/x', null), { upstream: 'registry.example.test:5000', repo: 'team/x' });
  assert.deepEqual(resolveRepo(opts, 'alpine', 'registry-1.docker.io'), { upstream: 'docker.io', repo: 'library/alpine' });
  assert.deepEqual(resolveRepo(opts, 'alpine', ''), { upstream: 'docker.io', repo: 'library/alpine' });
  // library/ normalisation applies to Docker Hub only.
  assert.deepEqual(resolveRepo(opts, 'registry.example.test:5000/solo', null), { upstream: 'registry.example.test:5000', repo: 'solo' });
});

test("Docker Hub's aliases name docker.io both as ?ns= and as the path prefix (issue #12)", () => {
  const opts: RepoResolverOptions = { ...filtered, filters: new Map() };
  for (const alias of ['docker.io', 'index.docker.io', 'registry-1.docker.io']) {
    assert.deepEqual(resolveRepo(opts, 'alpine', alias), { upstream: 'docker.io', repo: 'library/alpine' }, `ns=${alias}`);
    assert.deepEqual(resolveRepo(opts, `${alias}/alpine`, null), { upstream: 'docker.io', repo: 'library/alpine' }, `${alias}/alpine`);
    assert.deepEqual(resolveRepo(opts, `${alias}/bitnami/redis`, null), { upstream: 'docker.io', repo: 'bitnami/redis' });
  }
});

test('unconfigured registries are refused whichever way they are named', () => {
  const opts = filtered;
  for (const [name, ns] of [
    ['x', 'evil.example'],
    ['x', '169.254.169.254'],
    ['x', 'localhost:22'],
    ['169.254.169.254/x', null],
    ['localhost/x', null],
    ['127.0.0.1:2375/x', null],
    ['ghcr.io.evil.example/x', null],
    ['x', 'GHCR.IO.evil'],
  ] as const) {
    assert.equal(code(() => resolveRepo(opts, name, ns)), 'UPSTREAM_UNKNOWN', `${name} ns=${ns}`);
  }
});

test('repository allow/deny patterns refuse with DENIED before anything goes out', () => {
  const opts = filtered;
  assert.equal(resolveRepo(opts, 'ghcr.io/myorg/team/app', null).repo, 'myorg/team/app');
  assert.equal(resolveRepo(opts, 'other/app', 'ghcr.io').repo, 'other/app');
  assert.equal(code(() => resolveRepo(opts, 'ghcr.io/myorg/secret-db', null)), 'DENIED');
  assert.equal(code(() => resolveRepo(opts, 'ghcr.io/other/app2', null)), 'DENIED');
  assert.equal(code(() => resolveRepo(opts, 'ghcr.io/stranger/app', null)), 'DENIED');
  assert.equal(code(() => resolveRepo(opts, 'evilcorp/miner', null)), 'DENIED');
  assert.equal(resolveRepo(opts, 'alpine', null).repo, 'library/alpine', 'no allow list: everything not denied');
});

test('glob patterns: * stays within a component, ** crosses them, ? is one character', () => {
  const m = (p: string, s: string) => globToRegExp(p).test(s);
  assert.ok(m('library/*', 'library/alpine'));
  assert.ok(!m('library/*', 'library/a/b'));
  assert.ok(m('org/**', 'org/a/b/c'));
  assert.ok(!m('org/**', 'orgx/a'));
  assert.ok(m('**/app', 'app') && m('**/app', 'a/b/app'));
  assert.ok(m('v?/x', 'v1/x') && !m('v?/x', 'v10/x'));
  assert.ok(!m('a.b', 'axb'), 'dots are literal');
});

test('routeRepo: hosted patterns first, against the name as sent (before ns, the registry prefix and library/); the rest is pulled through', () => {
  const opts: RepoResolverOptions = {
    ...filtered,
    hosted: compileHostedRules([{ pattern: 'myorg/**' }, { pattern: 'ci/*', fallThrough: 'docker.io' }, { pattern: 'alpine' }, { pattern: 'evilcorp/*', fallThrough: 'docker.io' }]),
  };
  assert.deepEqual(routeRepo(opts, 'myorg/app', null), { kind: 'hosted', key: { upstream: '_hosted', repo: 'myorg/app' }, pattern: 'myorg/**' });
  assert.deepEqual(routeRepo(opts, 'myorg/team/app', 'docker.io').key, { upstream: '_hosted', repo: 'myorg/team/app' }, 'ns does not take a hosted name upstream');
  assert.deepEqual(routeRepo(opts, 'alpine', null).key, { upstream: '_hosted', repo: 'alpine' }, 'no library/ for a hosted name');
  assert.deepEqual(routeRepo(opts, 'library/alpine', null), { kind: 'proxy', key: { upstream: 'docker.io', repo: 'library/alpine' } });
  assert.deepEqual(routeRepo(opts, 'ci/tool', null), { kind: 'hosted', key: { upstream: '_hosted', repo: 'ci/tool' }, pattern: 'ci/*', fallThrough: { upstream: 'docker.io', repo: 'ci/tool' } });
  assert.deepEqual(routeRepo(opts, 'ci/a/b', null), { kind: 'proxy', key: { upstream: 'docker.io', repo: 'ci/a/b' } }, '* stays within a component');
  assert.equal(routeRepo(opts, 'evilcorp/x', null).kind, 'hosted');
  assert.equal((routeRepo(opts, 'evilcorp/x', null) as { fallThrough?: unknown }).fallThrough, undefined, "the upstream's filter refuses it: no fall-through");
  assert.equal(code(() => routeRepo(opts, 'MyOrg/app', null)), 'NAME_INVALID');
  assert.deepEqual(routeRepo({ ...opts, hosted: [] }, 'myorg/app', null), { kind: 'proxy', key: { upstream: 'docker.io', repo: 'myorg/app' } }, 'no patterns: nothing hosted');
});
