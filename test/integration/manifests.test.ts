/**
 * Manifests through the HTTP layer: byte-exact bodies of every format with their stored media
 * type, Accept negotiation (an index a client can't read → its linux/amd64 image), repository
 * name routing (Docker Hub's `library/`, other registries by path prefix or containerd's `?ns=`),
 * what a pull by digest costs, and one upstream request for many concurrent misses.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MediaTypes } from '../../src/domain/media-types.js';
import { FakeRegistry } from '../../src/upstream/testing/fake-registry.js';
import { pullTogether, startApp, type AppHarness } from '../support/app-harness.js';
import { manifestRequests, ociError, parseOciError, putImage, putIndex, type FakeImage, type FakeIndex } from '../support/oci-fixtures.js';

describe('manifests', () => {
  let hc: AppHarness;
  let oci: FakeImage;
  let docker: FakeImage;
  let ociIndex: FakeIndex;
  let dockerList: FakeIndex;

  before(async () => {
    hc = await startApp();
    oci = putImage(hc.registry, 'library/oci', 'v1', { seed: 'oci' });
    docker = putImage(hc.registry, 'library/docker', 'v1', { seed: 'docker', format: 'docker' });
    ociIndex = putIndex(hc.registry, 'library/multi', 'oci', { seed: 'oci-index' });
    dockerList = putIndex(hc.registry, 'library/multi', 'docker', { seed: 'docker-list', format: 'docker' });
  });
  after(() => hc.close());

  it('every format is served byte-exact with its media type, digest and length; a second GET is a hit', async () => {
    const cases: Array<[string, { digest: string; manifest: Buffer; mediaType: string }]> = [
      ['library/oci/manifests/v1', oci],
      ['library/docker/manifests/v1', docker],
      ['library/multi/manifests/oci', ociIndex],
      ['library/multi/manifests/docker', dockerList],
      [`library/multi/manifests/${dockerList.children[1]!.digest}`, dockerList.children[1]!],
    ];
    for (const [path, m] of cases) {
      const first = await hc.pull(`/v2/${path}`);
      assert.equal(first.status, 200, path);
      assert.ok(first.body.equals(m.manifest), `${path}: byte-exact`);
      assert.equal(first.headers.get('content-type'), m.mediaType, path);
      assert.equal(first.digest, m.digest, path);
      assert.equal(first.headers.get('etag'), `"${m.digest}"`, path);
      assert.equal(Number(first.headers.get('content-length')), m.manifest.length, path);
      assert.equal(first.cache, 'miss', path);
      const upstreamBefore = hc.upstreamServer.requests.length;
      const second = await hc.pull(`/v2/${path}`);
      assert.ok(second.body.equals(m.manifest), `${path}: byte-exact from the cache`);
      assert.equal(second.cache, 'hit', path);
      assert.equal(hc.upstreamServer.requests.length, upstreamBefore, `${path}: a hit costs no upstream request`);
    }
  });

  it('a client that reads only image manifests gets the linux/amd64 image of an index, byte-exact', async () => {
    for (const [index, accept] of [
      [dockerList, MediaTypes.dockerManifest],
      [ociIndex, `${MediaTypes.ociManifest}, application/json;q=0.5`],
    ] as const) {
      const amd64 = index.children.find((c) => c.platform?.architecture === 'amd64')!;
      const tag = index === dockerList ? 'docker' : 'oci';
      for (const method of ['GET', 'HEAD']) {
        const res = await hc.pull(`/v2/library/multi/manifests/${tag}`, { method, headers: { accept } });
        assert.equal(res.status, 200, `${tag} ${method}`);
        assert.equal(res.digest, amd64.digest);
        assert.equal(res.headers.get('content-type'), amd64.mediaType);
        assert.equal(Number(res.headers.get('content-length')), amd64.manifest.length);
        assert.ok(res.body.equals(method === 'GET' ? amd64.manifest : Buffer.alloc(0)));
      }
    }
  });

  it('a manifest in no type the client accepts is MANIFEST_UNKNOWN; wildcards and non-manifest Accepts get the stored type', async () => {
    const none = await hc.fetch('/v2/library/oci/manifests/v1', { headers: { accept: MediaTypes.dockerManifest } });
    assert.equal(none.status, 404);
    const err = await ociError(none);
    assert.equal(err.code, 'MANIFEST_UNKNOWN');
    assert.deepEqual(err.detail, { mediaType: MediaTypes.ociManifest, accepted: [MediaTypes.dockerManifest] });
    // q=0 means "not acceptable" (RFC 9110 §12.4.2).
    const refused = await hc.pull('/v2/library/oci/manifests/v1', { headers: { accept: `${MediaTypes.dockerManifest}, ${MediaTypes.ociManifest};q=0` } });
    assert.equal(refused.status, 404);
    for (const accept of ['*/*', 'application/json', `${MediaTypes.dockerManifest}, application/*`]) {
      const res = await hc.pull('/v2/library/oci/manifests/v1', { headers: { accept } });
      assert.equal(res.status, 200, accept);
      assert.equal(res.headers.get('content-type'), MediaTypes.ociManifest, accept);
    }
    const noAccept = await hc.pull('/v2/library/multi/manifests/oci', { headers: { accept: '' } });
    assert.equal(noAccept.headers.get('content-type'), MediaTypes.ociIndex);
  });

  it('an index without a linux/amd64 image is MANIFEST_UNKNOWN for a client that reads only images', async () => {
    const armOnly = putIndex(hc.registry, 'library/armonly', '1', { seed: 'arm-only', platforms: [{ os: 'linux', architecture: 'arm64' }] });
    const res = await hc.fetch('/v2/library/armonly/manifests/1', { headers: { accept: MediaTypes.ociManifest } });
    assert.equal(res.status, 404);
    assert.equal((await ociError(res)).code, 'MANIFEST_UNKNOWN');
    const index = await hc.pull('/v2/library/armonly/manifests/1');
    assert.equal(index.digest, armOnly.digest, 'the index itself is still served to those who read it');
  });

  it('a single-component name means library/<name> on Docker Hub, and both spellings share one cache entry', async () => {
    const image = putImage(hc.registry, 'library/short', 'v1', { seed: 'short' });
    const short = await hc.pull('/v2/short/manifests/v1');
    assert.equal(short.digest, image.digest);
    assert.equal(short.cache, 'miss');
    assert.equal(hc.upstreamServer.count((r) => r.url === '/v2/library/short/manifests/v1'), 1, 'upstream was asked for library/short');
    assert.equal((await hc.pull('/v2/library/short/manifests/v1')).cache, 'hit');
  });

  it('concurrent misses for one tag make one upstream request, and every client gets the bytes', async () => {
    const image = putImage(hc.registry, 'library/popular', 'latest', { seed: 'popular' });
    const pulls = await pullTogether(hc, '/v2/library/popular/manifests/latest', 5, 'manifest_tag', (req) => req.url === '/v2/library/popular/manifests/latest');
    for (const res of pulls) {
      assert.equal(res.status, 200);
      assert.ok(res.body.equals(image.manifest));
    }
    assert.equal(hc.upstreamServer.count((r) => r.url === '/v2/library/popular/manifests/latest'), 1);
  });

  it('a manifest known by digest in one repository is confirmed upstream (one HEAD) before another repository serves it', async () => {
    const image = putImage(hc.registry, 'library/first', 'v1', { seed: 'shared' });
    hc.registry.putManifest('library/second', undefined, image.manifest, image.mediaType);
    assert.equal((await hc.pull(`/v2/library/first/manifests/${image.digest}`)).cache, 'miss');
    const before = hc.upstreamServer.requests.length;
    const second = await hc.pull(`/v2/library/second/manifests/${image.digest}`);
    assert.equal(second.status, 200);
    assert.equal(second.cache, 'revalidated');
    assert.ok(second.body.equals(image.manifest));
    assert.deepEqual(hc.upstreamServer.requests.slice(before).map((r) => `${r.method} ${r.url}`), [`HEAD /v2/library/second/manifests/${image.digest}`]);
    // A repository the upstream doesn't have it in never gets it from the shared store.
    const third = await hc.pull(`/v2/library/third/manifests/${image.digest}`);
    assert.equal(third.status, 404);
    assert.equal(parseOciError(third.body.toString()).code, 'MANIFEST_UNKNOWN');
  });
});

describe('routing between upstreams', () => {
  let hc: AppHarness;
  let hub: FakeImage;
  let ghcr: FakeImage;
  let ghcrShort: FakeImage;

  before(async () => {
    hc = await startApp({ upstreams: { 'docker.io': {}, 'ghcr.io': { registry: new FakeRegistry() } } });
    const ghcrRegistry = hc.upstreams.get('ghcr.io')!.registry!;
    hub = putImage(hc.registry, 'org/app', '1', { seed: 'hub' });
    ghcr = putImage(ghcrRegistry, 'org/app', '1', { seed: 'ghcr' });
    ghcrShort = putImage(ghcrRegistry, 'app', '1', { seed: 'ghcr-short' });
  });
  after(() => hc.close());

  const digestAt = async (path: string) => {
    const res = await hc.pull(path);
    assert.equal(res.status, 200, `${path}: ${res.status}`);
    return res.digest;
  };

  it('a registry host as first path component, or containerd’s ?ns=, picks the upstream; the same name elsewhere is another repository', async () => {
    assert.equal(await digestAt('/v2/org/app/manifests/1'), hub.digest);
    assert.equal(await digestAt('/v2/ghcr.io/org/app/manifests/1'), ghcr.digest);
    assert.equal(await digestAt('/v2/org/app/manifests/1?ns=ghcr.io'), ghcr.digest);
    assert.equal(await digestAt('/v2/org/app/manifests/1?ns=registry-1.docker.io'), hub.digest);
    assert.equal(await digestAt('/v2/org/app/manifests/1?ns=docker.io'), hub.digest);
  });

  it('library/ normalisation is Docker Hub’s alone', async () => {
    assert.equal(await digestAt('/v2/ghcr.io/app/manifests/1'), ghcrShort.digest);
    const ghcrServer = hc.upstreams.get('ghcr.io')!.server!;
    assert.equal(ghcrServer.count((r) => r.url === '/v2/app/manifests/1'), 1);
    assert.equal(ghcrServer.count((r) => r.url.startsWith('/v2/library/')), 0);
  });

  it('cache entries are per upstream: a hit on one never answers for the other', async () => {
    const ghcrServer = hc.upstreams.get('ghcr.io')!.server!;
    const before = ghcrServer.count(manifestRequests());
    assert.equal(await digestAt('/v2/ghcr.io/org/app/manifests/1'), ghcr.digest);
    assert.equal(ghcrServer.count(manifestRequests()), before, 'already cached for ghcr.io');
    assert.equal(await digestAt('/v2/org/app/manifests/1'), hub.digest);
  });
});
