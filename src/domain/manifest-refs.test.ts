import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RegistryError } from './errors.js';
import { manifestRefs, pushedManifestRefs } from './manifest-refs.js';
import { MediaTypes } from './media-types.js';

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

test('referrers fields: subject, artifactType (else the config media type), annotations (strings only); non-distributable layers are external', () => {
  const body = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      config: { mediaType: 'application/vnd.example.sbom', digest: d('c'), size: 2 },
      layers: [{ digest: d('1'), size: 1 }, { digest: d('2'), size: 1, urls: ['https://example.com/2'] }],
      subject: { digest: d('e'), size: 3 },
      annotations: { a: 'b', n: 1 },
    }),
  );
  const expected = { manifests: [], blobs: [d('c'), d('1'), d('2')], external: [d('2')], subject: d('e'), artifactType: 'application/vnd.example.sbom', annotations: { a: 'b' } };
  assert.deepEqual(manifestRefs(body), expected);
  assert.deepEqual(pushedManifestRefs(body, MediaTypes.ociManifest), expected, 'one walk: a push reads the same references');
  const typed = Buffer.from(JSON.stringify({ schemaVersion: 2, artifactType: 'application/x-sig', config: { digest: d('c'), size: 2 }, layers: [] }));
  assert.equal(manifestRefs(typed).artifactType, 'application/x-sig');
  const twice = Buffer.from(JSON.stringify({ schemaVersion: 2, config: { digest: d('c'), size: 2 }, layers: [{ digest: d('1'), size: 1, urls: ['u'] }, { digest: d('1'), size: 1 }] }));
  assert.equal(manifestRefs(twice).external, undefined, 'listed once without urls: needed');
});

test('a pushed manifest is read strictly: not-a-descriptor, a missing layers/manifests array and schema 1 are MANIFEST_INVALID', () => {
  const invalid = (body: unknown, mediaType: string) => assert.throws(() => pushedManifestRefs(Buffer.from(JSON.stringify(body)), mediaType), (e: unknown) => e instanceof RegistryError && e.code === 'MANIFEST_INVALID');
  invalid({ schemaVersion: 2, config: { digest: d('c') }, layers: [] }, MediaTypes.ociManifest); // no size
  invalid({ schemaVersion: 2, config: { digest: 'md5:x', size: 1 }, layers: [] }, MediaTypes.ociManifest);
  invalid({ schemaVersion: 2, config: { digest: d('c'), size: 1 } }, MediaTypes.ociManifest);
  invalid({ schemaVersion: 2, manifests: [{ digest: d('a') }] }, MediaTypes.ociIndex);
  invalid({ schemaVersion: 2, manifests: {} }, MediaTypes.ociIndex);
  invalid({ schemaVersion: 1, fsLayers: [] }, MediaTypes.dockerSchema1Signed);
  // The same documents stored: nothing thrown, the malformed parts left out.
  assert.deepEqual(manifestRefs(Buffer.from(JSON.stringify({ schemaVersion: 2, config: { digest: 'md5:x' }, layers: [{ digest: d('1') }] }))), { manifests: [], blobs: [d('1')] });
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ digest: d('a'), size: 5, platform: { os: 'linux' } }] }));
  assert.deepEqual(pushedManifestRefs(index, MediaTypes.ociIndex), { manifests: [{ digest: d('a'), platform: { os: 'linux' } }], blobs: [] });
});
