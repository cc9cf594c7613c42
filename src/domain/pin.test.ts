import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileTagPattern, isPlatformName, matchTagPattern, parsePin, platformWanted } from './pin.js';
import { imageName } from '../upstream/docker-hub.js';

const D = `sha256:${'c'.repeat(64)}`;

test('pins parse like docker references: tag (latest by default), digest, tag pattern; registry and path as written', () => {
  assert.deepEqual(parsePin('nginx:1.27'), { source: 'nginx:1.27', registry: undefined, path: 'nginx', selector: { kind: 'tag', tag: '1.27' } });
  assert.deepEqual(parsePin(' alpine '), { source: 'alpine', registry: undefined, path: 'alpine', selector: { kind: 'tag', tag: 'latest' } });
  assert.deepEqual(parsePin('ghcr.io/org/app:v1'), { source: 'ghcr.io/org/app:v1', registry: 'ghcr.io', path: 'org/app', selector: { kind: 'tag', tag: 'v1' } });
  assert.deepEqual(parsePin(`alpine@${D}`), { source: `alpine@${D}`, registry: undefined, path: 'alpine', selector: { kind: 'digest', digest: D } });
  assert.deepEqual(parsePin('redis:7.*'), { source: 'redis:7.*', registry: undefined, path: 'redis', selector: { kind: 'pattern', pattern: '7.*' } });
  assert.deepEqual(parsePin('localhost:5000/myorg/base:*'), { source: 'localhost:5000/myorg/base:*', registry: 'localhost:5000', path: 'myorg/base', selector: { kind: 'pattern', pattern: '*' } });
});

test('bad pins are refused with the reason', () => {
  const err = (s: string) => {
    const p = parsePin(s);
    assert.ok('error' in p, `${s} parsed`);
    return p.error;
  };
  assert.match(err(''), /empty image reference/);
  assert.match(err('nginx:1.27@' + D), /a tag or a digest, not both/);
  assert.match(err('nginx@sha256:abc'), /invalid digest/);
  assert.match(err('nginx:-x'), /invalid tag/);
  assert.match(err('nginx:7.[0-9]'), /invalid tag \(.*a tag pattern may add \* and \?, nothing else\)/);
  assert.match(err('nginx:7.[0-9]*'), /invalid tag pattern/);
  assert.match(err('nginx:' + '*'.repeat(129)), /invalid tag pattern/);
  assert.match(err('Nginx'), /invalid repository name/);
  assert.match(err('registry.local:05000/app:1'), /invalid registry: .*leading zero/);
  assert.match(err('nginx/**:1'), /invalid repository name/);
});

test('imageName: Docker Hub by default and for its aliases, with library/ for official images', () => {
  assert.deepEqual(imageName(undefined, 'nginx'), { upstream: 'docker.io', repo: 'library/nginx' });
  assert.deepEqual(imageName('index.docker.io', 'library/nginx'), { upstream: 'docker.io', repo: 'library/nginx' });
  assert.deepEqual(imageName(undefined, 'myorg/base'), { upstream: 'docker.io', repo: 'myorg/base' });
  assert.deepEqual(imageName('ghcr.io', 'app'), { upstream: 'ghcr.io', repo: 'app' });
});

test('tag patterns: * any run (none included), ? one character, the whole tag, dots literal', () => {
  assert.ok(matchTagPattern('7.*', '7.2'));
  assert.ok(matchTagPattern('7.*', '7.2.4-alpine'));
  assert.ok(matchTagPattern('7.*', '7.'));
  assert.ok(!matchTagPattern('7.*', '7'));
  assert.ok(!matchTagPattern('7.*', '17.2'));
  assert.ok(!matchTagPattern('7.*', '7x2'), 'a dot is a dot');
  assert.ok(matchTagPattern('*', 'latest'));
  assert.ok(matchTagPattern('1.2?', '1.25'));
  assert.ok(!matchTagPattern('1.2?', '1.2'));
  assert.ok(!matchTagPattern('1.2?', '1.256'));
  assert.ok(matchTagPattern('*-alpine', '3.20-alpine'));
  assert.ok(!matchTagPattern('*-alpine', '3.20-alpine3.19'));
  const m = compileTagPattern('v?.*');
  assert.deepEqual(['v1.0', 'v2.1.3', 'v10.0', 'v1', 'x1.0'].filter(m), ['v1.0', 'v2.1.3']);
});

test('platforms: os/architecture[/variant]; a wanted platform takes its variants; none wanted takes all', () => {
  assert.ok(isPlatformName('linux/amd64') && isPlatformName('linux/arm/v7'));
  assert.ok(!isPlatformName('amd64') && !isPlatformName('linux/arm/v7/x') && !isPlatformName('Linux/amd64'));
  assert.ok(platformWanted([], undefined));
  assert.ok(platformWanted(['linux/arm64'], { os: 'linux', architecture: 'arm64', variant: 'v8' }));
  assert.ok(!platformWanted(['linux/arm/v7'], { os: 'linux', architecture: 'arm', variant: 'v6' }));
  assert.ok(!platformWanted(['linux/amd64'], { os: 'unknown', architecture: 'unknown' }));
  assert.ok(!platformWanted(['linux/amd64'], undefined));
});
