import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalRegistry, defaultRealmHosts, dockerHubAliasProblem, familiarRepoName, isDockerHub, normalizeDockerHubName, normalizeRepoName, parseRateLimitSnapshot, parseRateLimitValue, pickRateLimitHeaders } from './docker-hub.js';

test('official images live under library/', () => {
  assert.equal(normalizeDockerHubName('alpine'), 'library/alpine');
  assert.equal(normalizeDockerHubName('library/alpine'), 'library/alpine');
  assert.equal(normalizeDockerHubName('bitnami/redis'), 'bitnami/redis');
  assert.equal(normalizeRepoName('docker.io', 'alpine'), 'library/alpine');
  assert.equal(normalizeRepoName('ghcr.io', 'alpine'), 'alpine', "other registries' names are theirs");
  for (const [registry, name] of [['docker.io', 'alpine'], ['docker.io', 'bitnami/redis'], ['ghcr.io', 'library/x'], ['docker.io', 'library/a/b']] as const) {
    assert.equal(familiarRepoName(registry, normalizeRepoName(registry, name)), name, 'familiarRepoName undoes normalizeRepoName');
  }
});

test('Docker Hub has one name: its aliases are docker.io, and only docker.io can be configured (issue #12)', () => {
  assert.equal(canonicalRegistry('index.docker.io'), 'docker.io');
  assert.equal(canonicalRegistry('registry-1.docker.io'), 'docker.io');
  assert.equal(canonicalRegistry('ghcr.io'), 'ghcr.io');
  assert.equal(dockerHubAliasProblem('docker.io'), undefined);
  assert.equal(dockerHubAliasProblem('ghcr.io'), undefined);
  assert.match(dockerHubAliasProblem('index.docker.io') ?? '', /is Docker Hub: configure it as docker\.io/);
});

test('aliases and default realm hosts', () => {
  assert.ok(isDockerHub('index.docker.io') && isDockerHub('Docker.IO') && !isDockerHub('ghcr.io'));
  assert.deepEqual(defaultRealmHosts('docker.io', new URL('https://registry-1.docker.io')), ['https://registry-1.docker.io', 'https://auth.docker.io']);
  assert.deepEqual(defaultRealmHosts('ghcr.io', new URL('https://ghcr.io')), ['https://ghcr.io']);
  assert.deepEqual(defaultRealmHosts('registry.example:5000', new URL('http://registry.example:5000/v')), ['http://registry.example:5000']);
});

test('rate-limit values with and without a window', () => {
  assert.deepEqual(parseRateLimitValue('100;w=21600'), { value: 100, windowSeconds: 21600 });
  assert.deepEqual(parseRateLimitValue(' 76 ; w = 21600 '), { value: 76, windowSeconds: 21600 });
  assert.deepEqual(parseRateLimitValue('5'), { value: 5 });
  assert.equal(parseRateLimitValue('lots;w=1'), undefined);
  assert.equal(parseRateLimitValue(''), undefined);
  assert.equal(parseRateLimitValue(undefined), undefined);
});

test('a snapshot from headers, or none when the response carried none', () => {
  const h: Record<string, string> = { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '76;w=21600', 'docker-ratelimit-source': '192.0.2.1' };
  assert.deepEqual(parseRateLimitSnapshot((n) => h[n], 42), { limit: 100, remaining: 76, windowSeconds: 21600, source: '192.0.2.1', observedAt: 42 });
  assert.equal(parseRateLimitSnapshot(() => undefined, 42), undefined);
  assert.deepEqual(pickRateLimitHeaders((n) => ({ ...h, 'retry-after': '60' })[n]), { ...h, 'retry-after': '60' });
});
