/**
 * The core promise, end to end: a real hubcache process in front of a fake Docker Hub (token
 * server + distribution 2.8 + recording front + CDN), pulled through by skopeo and curl-like raw
 * requests. Counts upstream requests to show what a hit costs (nothing) and what a tag costs
 * after its TTL (one HEAD).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { startHubcacheProcess, type HubcacheProcess } from '../support/hubcache-process.js';
import { digestOf, makeImage, makeIndex, MediaTypes, type TestImage } from '../support/images.js';
import { rawRequest } from '../support/raw-http.js';
import { skopeoCopy, skopeoInspectRaw } from '../support/skopeo.js';
import { startUpstream, type Upstream } from '../support/upstream-harness.js';

const MiB = 1024 * 1024;
const ALL_MANIFESTS = [MediaTypes.dockerManifest, MediaTypes.dockerManifestList, MediaTypes.ociManifest, MediaTypes.ociIndex].join(', ');

describe('pull-through cache (skopeo and raw HTTP through a real hubcache)', () => {
  let up: Upstream;
  let hc: HubcacheProcess;
  let docker: TestImage;
  let oci: TestImage;
  let ociIndex: TestImage;
  let dockerList: TestImage;
  const scratch = mkdtempSync(join(tmpdir(), 'hubcache-e2e-pull-'));
  let n = 0;
  const dest = () => join(scratch, `copy-${n++}`);

  before(async () => {
    [docker, oci, ociIndex, dockerList] = await Promise.all([
      makeImage('docker', { seed: 'e2e-docker', layerSize: MiB }),
      makeImage('oci', { seed: 'e2e-oci', layerSize: MiB }),
      makeIndex('oci', { seed: 'e2e-oci-index', layerSize: MiB / 2, layers: 1 }),
      makeIndex('docker', { seed: 'e2e-docker-list', layerSize: MiB / 2, layers: 1 }),
    ]);
    up = await startUpstream({ cdn: true, rateLimit: true });
    await up.push(docker, 'library/small', '1.0');
    await up.push(oci, 'library/ocimage', 'v1');
    await up.push(ociIndex, 'library/multi', 'oci');
    await up.push(dockerList, 'library/multi', 'docker');
    await up.push(docker, 'team/app', 'stable');
    for (const t of ['a', 'b', 'c', 'd', 'e']) await up.push(oci, 'library/paged', t);
    // The fake CDN is on loopback: hubcache refuses redirects to private addresses unless allowed.
    hc = await startHubcacheProcess({ upstream: up, args: ['--tag-ttl', '10m', '--upstream-allowed-redirect-hosts', new URL(up.cdn!.url).host] });
  });

  afterEach(() => up.front.clearFaults());

  after(async () => {
    await hc?.close();
    await up?.close();
    rmSync(scratch, { recursive: true, force: true });
    for (const i of [docker, oci, ociIndex, dockerList]) i?.dispose();
  });

  it('skopeo copies a Docker schema2 image through hubcache with the upstream digest; a second pull costs nothing upstream', async () => {
    up.front.reset();
    const first = dest();
    await skopeoCopy(`docker://${hc.host}/library/small:1.0`, `dir:${first}`);
    assert.equal(digestOf(readFileSync(join(first, 'manifest.json'))), docker.digest);
    for (const blob of docker.blobs.values()) assert.equal(digestOf(readFileSync(join(first, blob.digest.slice(7)))), blob.digest);
    assert.ok(up.front.count({ kind: 'blob', method: 'GET', via: 'front' }) >= docker.blobs.size, 'the first pull fetched the blobs');

    up.front.reset();
    const second = dest();
    await skopeoCopy(`docker://${hc.host}/library/small:1.0`, `dir:${second}`);
    assert.equal(digestOf(readFileSync(join(second, 'manifest.json'))), docker.digest);
    assert.equal(up.front.count({ kind: 'blob', method: 'GET' }), 0, 'no upstream blob GET');
    assert.equal(up.front.count({ kind: 'manifest', method: 'GET' }), 0, 'no upstream manifest GET');
    assert.equal(up.front.requests.length, 0, up.front.dump());
  });

  it('the CDN never sees Authorization, and the token stays with the registry', async () => {
    assert.ok(up.cdn, 'the CDN is on');
    // A fresh image so this test owns its blob traffic.
    const img = await makeImage('docker', { seed: 'e2e-cdn', layerSize: MiB / 2, layers: 1 });
    await up.push(img, 'library/cdn', '1');
    up.front.reset();
    await skopeoCopy(`docker://${hc.host}/library/cdn:1`, `dir:${dest()}`);
    const redirects = up.front.filter({ kind: 'blob', via: 'front', status: 307 });
    const fromCdn = up.front.filter({ via: 'cdn' });
    assert.equal(redirects.length, img.blobs.size, 'every blob was redirected');
    assert.equal(fromCdn.length, img.blobs.size, 'and fetched from the CDN');
    assert.ok(redirects.every((r) => r.hadAuthorization), 'the registry got the token');
    assert.ok(fromCdn.every((r) => !r.hadAuthorization && r.status === 200), 'the CDN never got it');
    assert.equal(up.cdn!.rejectedAuthorization.length, 0);
    img.dispose();
  });

  it('single-component names mean library/<name> and share one cache entry', async () => {
    await skopeoCopy(`docker://${hc.host}/ocimage:v1`, `dir:${dest()}`);
    up.front.reset();
    const raw = await skopeoInspectRaw(`docker://${hc.host}/library/ocimage:v1`);
    assert.ok(raw.equals(oci.manifest));
    const short = await rawRequest(`${hc.url}/v2/ocimage/manifests/v1`, { headers: { accept: ALL_MANIFESTS } });
    assert.equal(short.status, 200);
    assert.equal(short.headers['x-hubcache-cache'], 'hit');
    assert.equal(up.front.requests.length, 0, 'both forms were hits');
  });

  it('multi-component names pass through unchanged', async () => {
    const raw = await skopeoInspectRaw(`docker://${hc.host}/team/app:stable`);
    assert.equal(digestOf(raw), docker.digest);
    assert.ok(up.front.count({ repo: 'team/app', kind: 'manifest' }) >= 1);
  });

  for (const [tag, which] of [
    ['oci', () => ociIndex],
    ['docker', () => dockerList],
  ] as const) {
    it(`skopeo copy --all of a ${tag} index keeps the index bytes and every platform`, async () => {
      const image = which();
      const d = dest();
      await skopeoCopy(`docker://${hc.host}/library/multi:${tag}`, `dir:${d}`, { all: true });
      assert.equal(digestOf(readFileSync(join(d, 'manifest.json'))), image.digest);
      for (const blob of image.blobs.values()) assert.equal(digestOf(readFileSync(join(d, blob.digest.slice(7)))), blob.digest);
    });
  }

  it('a multi-platform index is stored whole; only the platform a client pulls is downloaded', async () => {
    const index = await makeIndex('oci', { seed: 'e2e-one-platform', layerSize: MiB / 4, layers: 1 });
    await up.push(index, 'library/plat', '1');
    up.front.reset();
    const d = dest();
    await skopeoCopy(`docker://${hc.host}/library/plat:1`, `dir:${d}`, { extraArgs: ['--override-arch', 'arm64', '--override-variant', 'v8'] });
    const arm = index.children.find((c) => c.platform?.architecture === 'arm64')!;
    const amd = index.children.find((c) => c.platform?.architecture === 'amd64')!;
    assert.equal(digestOf(readFileSync(join(d, 'manifest.json'))), arm.digest);
    const fetched = new Set(up.front.filter({ kind: 'blob', via: 'front' }).map((r) => r.digest));
    for (const b of arm.blobs.values()) assert.ok(fetched.has(b.digest), `arm64 blob ${b.digest} fetched`);
    for (const b of amd.blobs.values()) assert.ok(!fetched.has(b.digest), `amd64 blob ${b.digest} not fetched`);
    const raw = await rawRequest(`${hc.url}/v2/library/plat/manifests/1`, { headers: { accept: ALL_MANIFESTS } });
    assert.ok(raw.body.equals(index.manifest), 'index served byte-exact');
    index.dispose();
  });

  it('manifests: byte-exact body, stored media type, Docker-Content-Digest, Content-Length; HEAD has no body', async () => {
    for (const [path, image] of [
      ['library/small/manifests/1.0', docker],
      ['library/ocimage/manifests/v1', oci],
      ['library/multi/manifests/oci', ociIndex],
      ['library/multi/manifests/docker', dockerList],
      [`library/multi/manifests/${dockerList.children[0]!.digest}`, dockerList.children[0]!],
    ] as const) {
      const get = await rawRequest(`${hc.url}/v2/${path}`, { headers: { accept: ALL_MANIFESTS } });
      assert.equal(get.status, 200, path);
      assert.ok(get.body.equals(image.manifest), path);
      assert.equal(get.headers['content-type'], image.mediaType, path);
      assert.equal(get.headers['docker-content-digest'], image.digest, path);
      assert.equal(Number(get.headers['content-length']), image.manifest.length, path);
      assert.equal(get.headers['docker-distribution-api-version'], 'registry/2.0');
      const head = await rawRequest(`${hc.url}/v2/${path}`, { method: 'HEAD', headers: { accept: ALL_MANIFESTS } });
      assert.equal(head.status, 200);
      assert.equal(head.body.length, 0);
      assert.equal(head.headers['docker-content-digest'], image.digest);
      assert.equal(Number(head.headers['content-length']), image.manifest.length);
      assert.equal(head.headers['content-type'], image.mediaType);
    }
  });

  it('Accept negotiation: a client that only reads schema2 gets the linux/amd64 image of a list; unacceptable types are MANIFEST_UNKNOWN', async () => {
    const amd = dockerList.children.find((c) => c.platform?.architecture === 'amd64')!;
    const r = await rawRequest(`${hc.url}/v2/library/multi/manifests/docker`, { headers: { accept: MediaTypes.dockerManifest } });
    assert.equal(r.status, 200);
    assert.equal(r.headers['docker-content-digest'], amd.digest);
    assert.equal(r.headers['content-type'], MediaTypes.dockerManifest);
    assert.ok(r.body.equals(amd.manifest));
    const none = await rawRequest(`${hc.url}/v2/library/ocimage/manifests/v1`, { headers: { accept: MediaTypes.dockerManifest } });
    assert.equal(none.status, 404);
    assert.equal(JSON.parse(none.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN');
    const any = await rawRequest(`${hc.url}/v2/library/ocimage/manifests/v1`, { headers: { accept: '*/*' } });
    assert.equal(any.headers['content-type'], MediaTypes.ociManifest);
  });

  it('blobs: GET, HEAD and Range (206, suffix, 416) with Accept-Ranges and the digest header', async () => {
    const layer = docker.layers[0]!;
    const bytes = layer.bytes();
    const url = `${hc.url}/v2/library/small/blobs/${layer.digest}`;
    const get = await rawRequest(url);
    assert.equal(get.status, 200);
    assert.equal(digestOf(get.body), layer.digest);
    assert.equal(get.headers['docker-content-digest'], layer.digest);
    assert.equal(get.headers['accept-ranges'], 'bytes');
    const head = await rawRequest(url, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(Number(head.headers['content-length']), layer.size);
    assert.equal(head.body.length, 0);
    const part = await rawRequest(url, { headers: { range: 'bytes=100-1099' } });
    assert.equal(part.status, 206);
    assert.equal(part.headers['content-range'], `bytes 100-1099/${layer.size}`);
    assert.ok(part.body.equals(bytes.subarray(100, 1100)));
    const suffix = await rawRequest(url, { headers: { range: 'bytes=-10' } });
    assert.equal(suffix.status, 206);
    assert.ok(suffix.body.equals(bytes.subarray(layer.size - 10)));
    const open = await rawRequest(url, { headers: { range: `bytes=${layer.size - 5}-` } });
    assert.ok(open.body.equals(bytes.subarray(layer.size - 5)));
    const beyond = await rawRequest(url, { headers: { range: `bytes=${layer.size}-` } });
    assert.equal(beyond.status, 416);
    assert.equal(beyond.headers['content-range'], `bytes */${layer.size}`);
    const junk = await rawRequest(url, { headers: { range: 'bytes=1-x' } });
    assert.equal(junk.status, 416);
    // RFC 9110 §14.2: a range unit the server does not understand is ignored.
    const lines = await rawRequest(url, { headers: { range: 'lines=1-2' } });
    assert.equal(lines.status, 200);
    assert.ok(lines.body.equals(bytes));
  });

  it('a client that leaves in the middle of a stored blob: its connection is aborted and the file handle closed', async () => {
    const big = await makeImage('docker', { seed: 'e2e-leaving', layerSize: 24 * MiB, inMemoryMaxBytes: 4 * MiB });
    try {
      await up.push(big, 'library/leaving', '1.0');
      const layer = big.layers[0]!;
      const url = `${hc.url}/v2/library/leaving/blobs/${layer.digest}`;
      assert.equal(digestOf((await rawRequest(url)).body), layer.digest, 'cached by a first, complete GET');
      const blobFile = join(hc.storagePath, 'blobs', 'sha256', layer.digest.slice(7, 9), layer.digest.slice(7));
      assert.ok(existsSync(blobFile), blobFile);
      const openHandles = () => fdTargets(hc.child.pid!).filter((t) => t === blobFile).length;
      const left = await rawRequest(url, { stopAfterBytes: 64 * 1024, headers: { 'x-request-id': 'leaves-early' } });
      assert.equal(left.status, 200);
      const line = await hc.waitForLog((l) => l.message === 'request' && l.requestId === 'leaves-early');
      assert.equal(line.aborted, true);
      assert.ok((line.bytes as number) < layer.size);
      // The handle is closed as the write loop notices the closed socket: wait for it (bounded).
      for (let i = 0; i < 100 && openHandles() > 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(openHandles(), 0, 'no file handle of the blob left open');
      assert.equal(digestOf((await rawRequest(url)).body), layer.digest, 'and the blob is served whole again');
    } finally {
      big.dispose();
    }
  });

  it('a Range request for an uncached blob is answered from the download in flight', async () => {
    const img = await makeImage('oci', { seed: 'e2e-range-miss', layerSize: 2 * MiB, layers: 1 });
    await up.push(img, 'library/rangemiss', '1');
    const layer = img.layers[0]!;
    const stall = up.front.inject({ type: 'stall', afterBytes: 256 * 1024, when: { kind: 'blob', digest: layer.digest }, times: 1 });
    const pending = rawRequest(`${hc.url}/v2/library/rangemiss/blobs/${layer.digest}`, { headers: { range: 'bytes=0-1023' }, timeoutMs: 30_000 });
    const r = await pending;
    // Answered while the upstream is still stalled after 256 KiB: no wait for the whole blob.
    assert.equal(r.status, 206);
    assert.ok(r.body.equals(layer.bytes().subarray(0, 1024)));
    assert.equal((await stall.hit()).outcome, undefined, 'upstream transfer still open');
    stall.clear();
    img.dispose();
  });

  it('a Range far beyond the bytes downloaded so far is fetched from upstream on its own; the fill goes on', async () => {
    const img = await makeImage('oci', { seed: 'e2e-range-far', layerSize: 8 * MiB, layers: 1, filesPerLayer: 1 });
    await up.push(img, 'library/rangefar', '1');
    const layer = img.layers[0]!;
    up.front.reset();
    const stall = up.front.inject({ type: 'stall', afterBytes: 256 * 1024, when: { kind: 'blob', digest: layer.digest }, times: 1 });
    const url = `${hc.url}/v2/library/rangefar/blobs/${layer.digest}`;
    const full = rawRequest(url, { timeoutMs: 30_000 });
    await stall.hit();
    const start = layer.size - 5000;
    const r = await rawRequest(url, { headers: { range: `bytes=${start}-${start + 999}` } });
    assert.equal(r.status, 206);
    assert.equal(r.headers['content-range'], `bytes ${start}-${start + 999}/${layer.size}`);
    assert.ok(r.body.equals(layer.bytes().subarray(start, start + 1000)));
    assert.equal(stall.requests[0]!.outcome, undefined, 'the fill is still stalled');
    assert.ok(up.front.filter({ kind: 'blob', hasRange: true }).some((x) => x.rangeHeader === `bytes=${start}-`));
    stall.clear();
    const whole = await full;
    assert.equal(digestOf(whole.body), layer.digest);
    img.dispose();
  });

  it('tags/list comes from upstream with n/last pagination and a Link header', async () => {
    const all = await rawRequest(`${hc.url}/v2/paged/tags/list`);
    assert.equal(all.status, 200);
    const body = JSON.parse(all.body.toString()) as { name: string; tags: string[] };
    assert.equal(body.name, 'library/paged');
    assert.deepEqual(body.tags.sort(), ['a', 'b', 'c', 'd', 'e']);
    const page = await rawRequest(`${hc.url}/v2/library/paged/tags/list?n=2&last=a`);
    assert.deepEqual(JSON.parse(page.body.toString()).tags, ['b', 'c']);
    const link = String(page.headers.link);
    assert.match(link, /^<\/v2\/library\/paged\/tags\/list\?.*n=2.*>; rel="next"$/);
    assert.match(link, /last=c/);
  });

  it('bad input gets a 4xx with an OCI error body and never a 5xx', async () => {
    const d = docker.layers[0]!.digest;
    const cases: Array<[string, string, number, string]> = [
      ['GET', '/v2/Library/Small/manifests/1.0', 400, 'NAME_INVALID'],
      // Neither a tag nor a digest: no such manifest (issue #12, as distribution answers).
      ['GET', '/v2/library/small/manifests/-bad', 404, 'MANIFEST_UNKNOWN'],
      ['GET', `/v2/library/small/manifests/${'a'.repeat(129)}`, 404, 'MANIFEST_UNKNOWN'],
      ['GET', '/v2/library/small/manifests/sha256:abc', 400, 'DIGEST_INVALID'],
      ['GET', '/v2/library/small/blobs/sha256:abc', 400, 'DIGEST_INVALID'],
      ['GET', '/v2/library/small/blobs/md5:0123', 400, 'DIGEST_INVALID'],
      ['GET', `/v2/library/small/blobs/${d.toUpperCase()}`, 400, 'DIGEST_INVALID'],
      ['GET', '/v2/library/%2e%2e/small/manifests/1.0', 400, 'NAME_INVALID'],
      ['GET', '/v2/library%2Fsmall/manifests/1.0', 400, 'NAME_INVALID'],
      ['GET', '/v2/library/../../etc/manifests/passwd', 400, 'NAME_INVALID'],
      ['GET', '/v2/library//small/manifests/1.0', 400, 'NAME_INVALID'],
      ['GET', '/v2/library/./small/blobs/' + d, 400, 'NAME_INVALID'],
      ['GET', '/v2/library/paged/tags/list?n=abc', 400, 'PAGINATION_NUMBER_INVALID'],
      ['GET', '/v2/library/nope/manifests/1.0', 404, 'MANIFEST_UNKNOWN'],
      ['GET', `/v2/library/small/blobs/sha256:${'0'.repeat(64)}`, 404, 'BLOB_UNKNOWN'],
      ['DELETE', '/v2/library/small/manifests/1.0', 405, 'UNSUPPORTED'],
      ['GET', '/v2/library/small/whatever', 404, 'NOT_FOUND'],
    ];
    for (const [method, path, status, code] of cases) {
      // rawPath: URL parsers would resolve `%2e%2e` and `..` before the request is sent.
      const r = await rawRequest(hc.url, { method, rawPath: path });
      assert.equal(r.status, status, `${method} ${path}: ${r.body.toString()}`);
      const body = JSON.parse(r.body.toString()) as { errors: Array<{ code: string; message: string }> };
      assert.equal(body.errors[0]!.code, code, `${method} ${path}`);
      assert.equal(typeof body.errors[0]!.message, 'string');
      assert.match(String(r.headers['content-type']), /^application\/json/);
    }
    // Raw request targets that URL parsers would normalise: send them byte for byte.
    for (const target of ['/v2/library/small/blobs/../../../../etc/passwd', '/v2/..%2f..%2fetc/manifests/x', '/v2/library\\small/manifests/1.0']) {
      const r = await rawRequest(`${hc.url}/`, { method: 'GET', rawPath: target });
      assert.ok(r.status !== undefined && r.status >= 400 && r.status < 500, `${target} → ${r.status}`);
    }
    const huge = await rawRequest(`${hc.url}/v2/${'a/'.repeat(200)}x/manifests/1`);
    assert.equal(huge.status, 400);
  });

  it('GET /v2/ answers the version check', async () => {
    const r = await rawRequest(`${hc.url}/v2/`);
    assert.equal(r.status, 200);
    assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
    assert.deepEqual(JSON.parse(r.body.toString()), {});
  });
});

describe('tag freshness after the TTL', () => {
  let up: Upstream;
  let hc: HubcacheProcess;
  let image: TestImage;
  let moved: TestImage;

  before(async () => {
    image = await makeImage('oci', { seed: 'e2e-ttl', layerSize: MiB / 4, layers: 1 });
    moved = await makeImage('oci', { seed: 'e2e-ttl-moved', layerSize: MiB / 4, layers: 1 });
    up = await startUpstream({ rateLimit: true });
    await up.push(image, 'library/ttl', 'latest');
    // A zero TTL: every pull by tag is "after the TTL", without waiting for a clock.
    hc = await startHubcacheProcess({ upstream: up, args: ['--tag-ttl', '0s'] });
  });

  after(async () => {
    await hc?.close();
    await up?.close();
    image?.dispose();
    moved?.dispose();
  });

  it('an expired tag costs exactly one manifest HEAD when the digest did not move', async () => {
    const url = `${hc.url}/v2/library/ttl/manifests/latest`;
    assert.equal((await rawRequest(url, { headers: { accept: ALL_MANIFESTS } })).headers['x-hubcache-cache'], 'miss');
    up.front.reset();
    const again = await rawRequest(url, { headers: { accept: ALL_MANIFESTS } });
    assert.equal(again.status, 200);
    assert.equal(again.headers['x-hubcache-cache'], 'revalidated');
    assert.ok(again.body.equals(image.manifest));
    const manifestRequests = up.front.filter({ kind: 'manifest', status: [200, 404] });
    assert.deepEqual(
      manifestRequests.map((r) => `${r.method} ${r.reference}`),
      ['HEAD latest'],
      up.front.dump(),
    );
  });

  it('when the tag moved, the HEAD is followed by one GET of the new manifest', async () => {
    await up.push(moved, 'library/ttl', 'latest');
    up.front.reset();
    const r = await rawRequest(`${hc.url}/v2/library/ttl/manifests/latest`, { headers: { accept: ALL_MANIFESTS } });
    assert.equal(r.headers['docker-content-digest'], moved.digest);
    assert.ok(r.body.equals(moved.manifest));
    assert.deepEqual(
      up.front.filter({ kind: 'manifest', status: 200 }).map((x) => `${x.method} ${x.reference}`),
      ['HEAD latest', `GET ${moved.digest}`],
    );
  });

  it('pulls by digest never ask upstream', async () => {
    up.front.reset();
    const r = await rawRequest(`${hc.url}/v2/library/ttl/manifests/${moved.digest}`, { headers: { accept: ALL_MANIFESTS } });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-hubcache-cache'], 'hit');
    assert.equal(up.front.requests.length, 0);
  });
});

describe('upstream credentials (a private upstream, no anonymous pulls)', () => {
  let up: Upstream;
  let image: TestImage;
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-e2e-creds-'));

  before(async () => {
    image = await makeImage('oci', { seed: 'e2e-creds', layerSize: MiB / 4, layers: 1 });
    up = await startUpstream({ anonymousPull: false, users: [{ username: 'pusher', password: 'secret', canPush: true }, { username: 'reader', password: 'r3ad', canPush: false }] });
    await up.push(image, 'acme/private', '1');
  });
  after(async () => {
    await up?.close();
    image?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it('pulls with the configured account (password from a file); only the token realm sees the credentials', async () => {
    const pw = join(dir, 'password');
    writeFileSync(pw, 'r3ad\n');
    const hc = await startHubcacheProcess({ upstream: up, args: ['--upstream-username', 'reader', '--upstream-password-file', pw] });
    try {
      up.tokenServer.reset();
      up.front.reset();
      const raw = await skopeoInspectRaw(`docker://${hc.host}/acme/private:1`);
      assert.ok(raw.equals(image.manifest));
      assert.ok(up.tokenServer.requests.length >= 1);
      assert.ok(up.tokenServer.requests.every((r) => r.account === 'reader'), 'the token requests carried the account');
      assert.ok(up.front.requests.every((r) => !/^Basic /i.test(r.authorization ?? '')), 'Basic credentials never went to the registry');
    } finally {
      await hc.close();
    }
  });

  it('wrong credentials get a clear 403 DENIED, not a 401 loop', async () => {
    const hc = await startHubcacheProcess({ upstream: up, env: { HUBCACHE_UPSTREAM_USERNAME: 'reader', HUBCACHE_UPSTREAM_PASSWORD: 'wrong' } });
    try {
      const r = await rawRequest(`${hc.url}/v2/acme/private/manifests/1`, { headers: { accept: ALL_MANIFESTS } });
      assert.equal(r.status, 403, r.body.toString());
      assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'DENIED');
      assert.equal(r.headers['www-authenticate'], undefined, 'no challenge: the client cannot fix the mirror\'s credentials');
    } finally {
      await hc.close();
    }
  });
});

/** Where a process's open file descriptors point (Linux /proc). */
function fdTargets(pid: number): string[] {
  const dir = `/proc/${pid}/fd`;
  return readdirSync(dir).flatMap((fd) => {
    try {
      return [readlinkSync(join(dir, fd))];
    } catch {
      return []; // closed meanwhile
    }
  });
}
