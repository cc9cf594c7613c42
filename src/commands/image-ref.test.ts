import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mirrorPath, parseImageRef } from './image-ref.js';

test('image references parse like docker parses them', () => {
  assert.deepEqual(parseImageRef('alpine'), { registry: 'docker.io', repo: 'alpine', reference: 'latest' });
  assert.deepEqual(parseImageRef('alpine:3.20'), { registry: 'docker.io', repo: 'alpine', reference: '3.20' });
  assert.deepEqual(parseImageRef('docker.io/library/nginx:1.27'), { registry: 'docker.io', repo: 'library/nginx', reference: '1.27' });
  assert.deepEqual(parseImageRef('localhost:5000/x/y'), { registry: 'localhost:5000', repo: 'x/y', reference: 'latest' });
  const d = `sha256:${'b'.repeat(64)}`;
  assert.deepEqual(parseImageRef(`ghcr.io/org/app@${d}`), { registry: 'ghcr.io', repo: 'org/app', reference: d });
  assert.throws(() => parseImageRef('UPPER/x'), /invalid repository name/);
  assert.throws(() => parseImageRef('x@sha256:zz'), /invalid digest/);
});

test("Docker Hub's aliases are docker.io; a registry that could never be configured is refused here (issue #12)", () => {
  assert.deepEqual(parseImageRef('index.docker.io/library/alpine'), { registry: 'docker.io', repo: 'library/alpine', reference: 'latest' });
  assert.deepEqual(parseImageRef('registry-1.docker.io/bitnami/redis:7'), { registry: 'docker.io', repo: 'bitnami/redis', reference: '7' });
  assert.throws(() => parseImageRef('registry.local:05000/app'), /invalid registry: "registry\.local:05000" is not a registry name: port 05000 has a leading zero/);
  assert.throws(() => parseImageRef('host.example:99999/app'), /port 99999 is out of range/);
  assert.throws(() => parseImageRef('Ghcr.io/org/app'), /registry names are lowercase/);
});

test('mirror paths: default registry plain, others by path prefix', () => {
  assert.equal(mirrorPath(parseImageRef('alpine:1')), '/v2/alpine');
  assert.equal(mirrorPath(parseImageRef('ghcr.io/org/app:1')), '/v2/ghcr.io/org/app');
});
