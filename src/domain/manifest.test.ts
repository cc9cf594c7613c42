import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isManifestMediaType, manifestMediaType } from './manifest.js';
import { MediaTypes } from './media-types.js';

const json = (doc: unknown) => Buffer.from(JSON.stringify(doc));
const image = (mediaType?: string) => json({ schemaVersion: 2, ...(mediaType !== undefined ? { mediaType } : {}), config: { digest: 'sha256:' + 'a'.repeat(64), size: 1 }, layers: [] });
const index = (mediaType?: string) => json({ schemaVersion: 2, ...(mediaType !== undefined ? { mediaType } : {}), manifests: [] });
const schema1 = json({ schemaVersion: 1, name: 'old/app', tag: '1', fsLayers: [{ blobSum: 'sha256:' + 'b'.repeat(64) }], signatures: [] });

const accepted = (body: Buffer, contentType: string | undefined) => {
  const v = manifestMediaType(body, contentType);
  assert.ok(v.ok, `refused: ${v.ok ? '' : v.reason}`);
  return v.mediaType;
};
const refused = (body: Buffer, contentType: string | undefined, why: RegExp) => {
  const v = manifestMediaType(body, contentType);
  assert.equal(v.ok, false, `accepted as ${v.ok ? v.mediaType : ''}`);
  if (!v.ok) assert.match(v.reason, why);
};

describe('manifestMediaType: what hubcache accepts as a manifest', () => {
  it('a known Content-Type that the body agrees with (or leaves unsaid) is the media type; parameters and case are ignored', () => {
    assert.equal(accepted(image(MediaTypes.ociManifest), MediaTypes.ociManifest), MediaTypes.ociManifest);
    assert.equal(accepted(image(MediaTypes.dockerManifest), `${MediaTypes.dockerManifest}; charset=utf-8`), MediaTypes.dockerManifest);
    assert.equal(accepted(image(), MediaTypes.dockerManifest), MediaTypes.dockerManifest);
    assert.equal(accepted(index(MediaTypes.ociIndex), MediaTypes.ociIndex.toUpperCase()), MediaTypes.ociIndex);
    assert.equal(accepted(index(), MediaTypes.dockerManifestList), MediaTypes.dockerManifestList);
    assert.equal(accepted(index(''), MediaTypes.ociIndex), MediaTypes.ociIndex, 'an empty mediaType field is an absent one');
  });

  it('a generic Content-Type defers to the mediaType field, then to the shape', () => {
    for (const ct of [undefined, '', 'application/octet-stream', 'application/json; charset=utf-8', 'text/plain']) {
      assert.equal(accepted(image(MediaTypes.dockerManifest), ct), MediaTypes.dockerManifest);
      assert.equal(accepted(index(MediaTypes.dockerManifestList), ct), MediaTypes.dockerManifestList);
      assert.equal(accepted(image(), ct), MediaTypes.ociManifest);
      assert.equal(accepted(index(), ct), MediaTypes.ociIndex);
      assert.equal(accepted(schema1, ct), MediaTypes.dockerSchema1Signed);
    }
  });

  it('Docker schema 1 stays accepted (hubcache asks upstreams for it)', () => {
    assert.equal(accepted(schema1, MediaTypes.dockerSchema1Signed), MediaTypes.dockerSchema1Signed);
    assert.equal(accepted(schema1, MediaTypes.dockerSchema1), MediaTypes.dockerSchema1);
    assert.ok(isManifestMediaType(MediaTypes.dockerSchema1Signed));
  });

  it('a Content-Type that is not a manifest type is refused, even with a genuine manifest body (issue #11 point 4)', () => {
    refused(image(MediaTypes.ociManifest), 'text/html', /Content-Type "text\/html" is not a manifest media type/);
    refused(image(MediaTypes.ociManifest), 'application/vnd.oci.image.config.v1+json', /not a manifest media type/);
    refused(image(MediaTypes.ociManifest), 'nonsense', /not a manifest media type/);
  });

  it('a Content-Type the body contradicts is refused', () => {
    refused(image(MediaTypes.ociManifest), MediaTypes.dockerManifest, /disagrees with the mediaType field/);
    refused(index(MediaTypes.ociIndex), MediaTypes.dockerManifestList, /disagrees/);
    refused(image(), MediaTypes.ociIndex, /not shaped like application\/vnd.oci.image.index.v1\+json/);
    refused(index(), MediaTypes.dockerManifest, /not shaped like/);
    refused(schema1, MediaTypes.ociManifest, /not shaped like/);
  });

  it('what is not a manifest is refused: HTML, non-JSON, JSON that is no manifest (issue #11 point 5)', () => {
    refused(Buffer.from('<html><body>login</body></html>'), 'text/html', /not a manifest media type/);
    refused(Buffer.from('<html><body>login</body></html>'), MediaTypes.ociManifest, /not JSON/);
    refused(Buffer.from('<html>'), undefined, /not JSON/);
    refused(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a]), 'application/octet-stream', /not JSON/);
    refused(Buffer.from('[1,2]'), MediaTypes.ociManifest, /not a JSON object/);
    refused(Buffer.from('"x"'), 'application/json', /not a JSON object/);
    refused(json({ hello: 'world' }), 'application/json', /names no mediaType and has no manifest shape/);
    refused(json({ schemaVersion: 2, mediaType: MediaTypes.ociManifest }), MediaTypes.ociManifest, /not shaped like/);
    refused(json({ schemaVersion: 3, config: {}, layers: [] }), undefined, /no manifest shape/);
    refused(json({ schemaVersion: 2, config: {}, layers: [], manifests: [] }), undefined, /no manifest shape/);
  });

  it('a mediaType field with CR/LF or other non-token characters is refused, and the reason carries no control character', () => {
    for (const bad of [`${MediaTypes.ociManifest}\r\nX-Injected: 1`, `${MediaTypes.ociManifest}\n`, 'text/html', 'application/vnd.oci.image.manifest.v1+json; x=1', ' ', 42, null, {}]) {
      const v = manifestMediaType(image(bad as string), 'application/octet-stream');
      assert.equal(v.ok, false, JSON.stringify(bad));
      if (!v.ok) assert.doesNotMatch(v.reason, /[\r\n\0]/);
    }
    const v = manifestMediaType(json({ schemaVersion: 2, mediaType: `a/${'b'.repeat(500)}`, config: {}, layers: [] }), undefined);
    assert.ok(!v.ok && v.reason.length < 200);
  });

  it('a mediaType field naming a type hubcache does not serve is refused, whatever the Content-Type says', () => {
    refused(image('application/vnd.oci.artifact.manifest.v1+json'), 'application/octet-stream', /mediaType field "application\/vnd.oci.artifact.manifest.v1\+json" is not a manifest media type/);
    refused(image('text/html'), MediaTypes.ociManifest, /not a manifest media type/);
  });
});
