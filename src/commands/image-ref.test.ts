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

test('mirror paths: default registry plain, others by path prefix', () => {
  assert.equal(mirrorPath(parseImageRef('alpine:1')), '/v2/alpine');
  assert.equal(mirrorPath(parseImageRef('ghcr.io/org/app:1')), '/v2/ghcr.io/org/app');
});
