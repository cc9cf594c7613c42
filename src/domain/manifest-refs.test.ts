import { test } from 'node:test';
import assert from 'node:assert/strict';
import { manifestRefs } from './manifest-refs.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;

test('an index refers to its child manifests with their platforms', () => {
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ digest: d('a'), platform: { os: 'linux', architecture: 'arm', variant: 'v7', features: ['x'] } }, { digest: d('b') }, { digest: 'nope' }] }));
  assert.deepEqual(manifestRefs(body), { manifests: [{ digest: d('a'), platform: { os: 'linux', architecture: 'arm', variant: 'v7' } }, { digest: d('b') }], blobs: [] });
});

test('an image manifest refers to its config then its layers, each once; schema 1 to its fsLayers', () => {
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, config: { digest: d('c') }, layers: [{ digest: d('1') }, { digest: d('2') }, { digest: d('1') }] }));
  assert.deepEqual(manifestRefs(body), { manifests: [], blobs: [d('c'), d('1'), d('2')] });
  const v1 = Buffer.from(JSON.stringify({ schemaVersion: 1, fsLayers: [{ blobSum: d('3') }, { blobSum: d('3') }, { blobSum: 'x' }] }));
  assert.deepEqual(manifestRefs(v1), { manifests: [], blobs: [d('3')] });
  assert.deepEqual(manifestRefs(Buffer.from('not json')), { manifests: [], blobs: [] });
});
