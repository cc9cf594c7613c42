/**
 * The push side of the OCI distribution spec (v1.1) for hosted repositories, workflow by workflow
 * as the spec's text describes them ("Push", "Content Discovery", "Content Management"), against a
 * whole in-process hubcache with a filesystem store, in front of a fake upstream that must never
 * hear of a hosted name.
 */
import assert from 'node:assert/strict';
import { readdirSync, statSync, watch } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sha256Digest } from '../../src/domain/digest.js';
import { MediaTypes } from '../../src/domain/media-types.js';
import { FakeRegistry, LoopbackServer } from '../../src/upstream/testing/fake-registry.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';
import { ociError, seededBytes } from '../support/oci-fixtures.js';

const EMPTY_CONFIG = Buffer.from('{}');

type Init = Omit<RequestInit, 'body'> & { body?: Buffer | string };
/** fetch with a Buffer body (sent as is). */
const call = (url: string, init: Init = {}) => fetch(url, { ...init, body: Buffer.isBuffer(init.body) ? new Uint8Array(init.body) : init.body });

interface Image {
  config: Buffer;
  layers: Buffer[];
  manifest: Buffer;
  digest: string;
}

function image(seed: string, extra: Record<string, unknown> = {}): Image {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }));
  const layers = [seededBytes(`${seed}-l1`, 70_000), seededBytes(`${seed}-l2`, 1000)];
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256Digest(l), size: l.length })),
      ...extra,
    }),
  );
  return { config, layers, manifest, digest: sha256Digest(manifest) };
}

describe('push (OCI distribution spec, hosted repositories)', () => {
  let hc: InProcessHubcache;
  let upstream: LoopbackServer;
  let deletable: InProcessHubcache;

  const req = (path: string, init?: Init) => call(hc.url + path, init);
  const abs = (location: string | null) => {
    assert.ok(location, 'a Location header');
    return new URL(location, hc.url).pathname + new URL(location, hc.url).search;
  };
  const withParam = (location: string, k: string, v: string) => `${location}${location.includes('?') ? '&' : '?'}${k}=${encodeURIComponent(v)}`;

  async function pushBlob(name: string, bytes: Buffer, on: InProcessHubcache = hc): Promise<string> {
    const start = await call(`${on.url}/v2/${name}/blobs/uploads/`, { method: 'POST' });
    assert.equal(start.status, 202);
    const digest = sha256Digest(bytes);
    const put = await call(on.url + withParam(abs(start.headers.get('location')), 'digest', digest), { method: 'PUT', body: bytes, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(put.status, 201, await put.text());
    return digest;
  }

  async function pushImage(name: string, img: Image, tag: string, on: InProcessHubcache = hc): Promise<Response> {
    await pushBlob(name, img.config, on);
    for (const l of img.layers) await pushBlob(name, l, on);
    return call(`${on.url}/v2/${name}/manifests/${tag}`, { method: 'PUT', body: img.manifest, headers: { 'content-type': MediaTypes.ociManifest } });
  }

  let registry: FakeRegistry;

  before(async () => {
    registry = new FakeRegistry();
    upstream = await LoopbackServer.start(registry.handle);
    const config = { upstreams: { 'docker.io': { url: upstream.url } }, hosted: { repositories: ['myorg/**', 'ci/*'] } };
    hc = await startInProcess({ config });
    deletable = await startInProcess({ config: { ...config, hosted: { ...config.hosted, allowDelete: true } } });
  });
  after(async () => {
    await hc.close();
    await deletable.close();
    await upstream.close();
  });

  it('monolithic: POST then PUT ?digest= (202 with Location, Docker-Upload-UUID, Range 0-0; then 201); HEAD and GET serve the bytes', async () => {
    const bytes = seededBytes('mono', 100_000);
    const start = await req('/v2/myorg/app/blobs/uploads/', { method: 'POST' });
    assert.equal(start.status, 202);
    assert.match(start.headers.get('location') ?? '', /^\/v2\/myorg\/app\/blobs\/uploads\/[0-9a-f-]{36}$/);
    assert.equal(start.headers.get('docker-upload-uuid'), start.headers.get('location')!.split('/').pop());
    assert.equal(start.headers.get('range'), '0-0');
    const digest = sha256Digest(bytes);
    const put = await req(withParam(abs(start.headers.get('location')), 'digest', digest), { method: 'PUT', body: bytes, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(put.status, 201);
    assert.equal(put.headers.get('location'), `/v2/myorg/app/blobs/${digest}`);
    assert.equal(put.headers.get('docker-content-digest'), digest);
    const head = await req(`/v2/myorg/app/blobs/${digest}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(bytes.length));
    const get = await req(`/v2/myorg/app/blobs/${digest}`);
    assert.deepEqual(Buffer.from(await get.arrayBuffer()), bytes);
    // Only in the repository it was pushed to.
    assert.equal((await req(`/v2/myorg/other/blobs/${digest}`, { method: 'HEAD' })).status, 404);
  });

  it('a push keeps its connection: uploads read whole are answered without Connection: close; a refused one (body unread) closes it', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const send = (method: string, path: string, body?: Buffer) =>
      new Promise<{ status: number; connection: string | undefined; reused: boolean; location: string | undefined }>((resolve, reject) => {
        const r = http.request(hc.url + path, { method, agent, headers: body ? { 'content-type': 'application/octet-stream', 'content-length': body.length } : {} }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode!, connection: res.headers.connection, reused: r.reusedSocket, location: res.headers.location }));
        });
        r.on('error', reject);
        r.end(body);
      });
    try {
      const bytes = seededBytes('keep-alive', 3 * 1024 * 1024);
      const digest = sha256Digest(bytes);
      const start = await send('POST', '/v2/myorg/app/blobs/uploads/');
      const put = await send('PUT', withParam(new URL(start.location!, hc.url).pathname, 'digest', digest), bytes);
      assert.equal(put.status, 201);
      assert.notEqual(put.connection, 'close', 'an upload read whole keeps the connection');
      const single = await send('POST', `/v2/myorg/app/blobs/uploads/?digest=${sha256Digest(bytes.subarray(1))}`, bytes.subarray(1));
      assert.equal(single.status, 201);
      assert.ok(single.reused, 'the next upload went over the same connection');
      const refused = await send('POST', `/v2/library/nginx/blobs/uploads/?digest=${digest}`, bytes);
      assert.equal(refused.status, 403);
      assert.equal(refused.connection, 'close', 'a body left unread closes the connection');
    } finally {
      agent.destroy();
    }
  });

  it('single POST ?digest= with the body: 201', async () => {
    const bytes = seededBytes('single-post', 5000);
    const digest = sha256Digest(bytes);
    const res = await req(`/v2/myorg/app/blobs/uploads/?digest=${digest}`, { method: 'POST', body: bytes, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('location'), `/v2/myorg/app/blobs/${digest}`);
    assert.equal((await req(`/v2/myorg/app/blobs/${digest}`, { method: 'HEAD' })).status, 200);
  });

  it('a single POST ?digest= is streamed to the store as it arrives, as a PUT is: with 6 of 8 MiB sent, 4 MiB or more is in its temp file before the rest is sent', { timeout: 60_000 }, async () => {
    const MiB = 1024 * 1024;
    const bytes = seededBytes('single-post-streamed', 8 * MiB);
    const digest = sha256Digest(bytes);
    const tmp = join(hc.storagePath, 'tmp');
    const before = new Set(readdirSync(tmp));
    /** The largest upload temp file (tmp/blob-<uuid>) that wasn't there before this test. */
    const uploaded = () =>
      Math.max(0, ...readdirSync(tmp).filter((f) => f.startsWith('blob-') && !before.has(f)).map((f) => {
        try {
          return statSync(join(tmp, f)).size;
        } catch {
          return 0; // committed (renamed away) meanwhile
        }
      }));
    let post: http.ClientRequest | undefined;
    const answered = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const r = http.request(`${hc.url}/v2/myorg/streamed/blobs/uploads/?digest=${digest}`, { method: 'POST', agent: false, headers: { 'content-type': 'application/octet-stream', 'content-length': bytes.length } }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      r.on('error', reject);
      post = r;
    });
    post!.write(bytes.subarray(0, 6 * MiB));
    // The store's writes as they happen (inotify on tmp/), not a timer: a handler that read the
    // whole body before writing (or held more than the read-ahead and a write batch or two) would
    // leave the file short until the body ended, and this would wait until the test's timeout.
    const watcher = watch(tmp);
    try {
      const reached = new Promise<void>((resolve) => {
        const check = () => {
          if (uploaded() >= 4 * MiB) resolve();
        };
        watcher.on('change', check);
        check();
      });
      await reached;
    } finally {
      watcher.close();
    }
    post!.end(bytes.subarray(6 * MiB));
    const res = await answered;
    assert.equal(res.status, 201, res.body);
    assert.deepEqual(Buffer.from(await (await req(`/v2/myorg/streamed/blobs/${digest}`)).arrayBuffer()), bytes);
  });

  it('chunked: PATCHes with Content-Range, status GET (204 + Range) between them, the final PUT with the last chunk', async () => {
    const bytes = seededBytes('chunked', 30_000);
    const [a, b, c] = [bytes.subarray(0, 10_000), bytes.subarray(10_000, 25_000), bytes.subarray(25_000)];
    let loc = abs((await req('/v2/myorg/app/blobs/uploads/', { method: 'POST' })).headers.get('location'));
    const p1 = await req(loc, { method: 'PATCH', body: a, headers: { 'content-type': 'application/octet-stream', 'content-range': '0-9999' } });
    assert.equal(p1.status, 202);
    assert.equal(p1.headers.get('range'), '0-9999');
    loc = abs(p1.headers.get('location'));
    const status = await req(loc);
    assert.equal(status.status, 204);
    assert.equal(status.headers.get('range'), '0-9999');
    assert.ok(status.headers.get('docker-upload-uuid'));
    const p2 = await req(loc, { method: 'PATCH', body: b, headers: { 'content-type': 'application/octet-stream', 'content-range': '10000-24999' } });
    assert.equal(p2.status, 202);
    assert.equal(p2.headers.get('range'), '0-24999');
    const digest = sha256Digest(bytes);
    const put = await req(withParam(abs(p2.headers.get('location')), 'digest', digest), { method: 'PUT', body: c, headers: { 'content-type': 'application/octet-stream', 'content-range': '25000-29999' } });
    assert.equal(put.status, 201);
    assert.deepEqual(Buffer.from(await (await req(`/v2/myorg/app/blobs/${digest}`)).arrayBuffer()), bytes);
  });

  it('bodies larger than the read-ahead (1 MiB) and the write batches: a 5 MiB PATCH and a 3 MiB final PUT arrive whole and verify', async () => {
    const bytes = seededBytes('big-chunks', 8 * 1024 * 1024 + 12_345);
    const cut = 5 * 1024 * 1024 + 7;
    let loc = abs((await req('/v2/myorg/big/blobs/uploads/', { method: 'POST' })).headers.get('location'));
    const p1 = await req(loc, { method: 'PATCH', body: bytes.subarray(0, cut), headers: { 'content-type': 'application/octet-stream', 'content-range': `0-${cut - 1}` } });
    assert.equal(p1.status, 202);
    assert.equal(p1.headers.get('range'), `0-${cut - 1}`);
    loc = abs(p1.headers.get('location'));
    const digest = sha256Digest(bytes);
    const put = await req(withParam(loc, 'digest', digest), { method: 'PUT', body: bytes.subarray(cut), headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(put.status, 201, await put.text());
    assert.deepEqual(Buffer.from(await (await req(`/v2/myorg/big/blobs/${digest}`)).arrayBuffer()), bytes);
  });

  it('a chunk out of order is 416 with the current Range; the upload goes on from there', async () => {
    const bytes = seededBytes('ooo', 2000);
    const loc = abs((await req('/v2/myorg/app/blobs/uploads/', { method: 'POST' })).headers.get('location'));
    assert.equal((await req(loc, { method: 'PATCH', body: bytes.subarray(0, 1000), headers: { 'content-range': '0-999' } })).status, 202);
    const skip = await req(loc, { method: 'PATCH', body: bytes.subarray(1500), headers: { 'content-range': '1500-1999' } });
    assert.equal(skip.status, 416);
    assert.equal(skip.headers.get('range'), '0-999');
    assert.equal((await ociError(skip)).code, 'RANGE_INVALID');
    const again = await req(loc, { method: 'PATCH', body: bytes.subarray(0, 1000), headers: { 'content-range': '0-999' } });
    assert.equal(again.status, 416, 'a chunk already received is out of order too');
    assert.equal((await req(loc, { method: 'PATCH', body: bytes.subarray(1000), headers: { 'content-range': '1000-1999' } })).status, 202);
    assert.equal((await req(withParam(loc, 'digest', sha256Digest(bytes)), { method: 'PUT' })).status, 201);
  });

  it('the final PUT verifies the digest before anything is visible: DIGEST_INVALID, and the session is gone', async () => {
    const bytes = seededBytes('bad-digest', 3000);
    const loc = abs((await req('/v2/myorg/app/blobs/uploads/', { method: 'POST' })).headers.get('location'));
    const claimed = sha256Digest('something else');
    const put = await req(withParam(loc, 'digest', claimed), { method: 'PUT', body: bytes });
    assert.equal(put.status, 400);
    assert.equal((await ociError(put)).code, 'DIGEST_INVALID');
    assert.equal((await req(`/v2/myorg/app/blobs/${claimed}`, { method: 'HEAD' })).status, 404);
    assert.equal((await req(`/v2/myorg/app/blobs/${sha256Digest(bytes)}`, { method: 'HEAD' })).status, 404);
    const status = await req(loc);
    assert.equal(status.status, 404);
    assert.equal((await ociError(status)).code, 'BLOB_UPLOAD_UNKNOWN');
    const missing = await req(loc.replace(/\?.*$/, ''), { method: 'PUT' });
    assert.equal((await ociError(missing)).code, 'BLOB_UPLOAD_UNKNOWN');
  });

  it('a PUT without ?digest= is DIGEST_INVALID; an unknown session is BLOB_UPLOAD_UNKNOWN', async () => {
    const loc = abs((await req('/v2/myorg/app/blobs/uploads/', { method: 'POST' })).headers.get('location'));
    assert.equal((await ociError(await req(loc, { method: 'PUT' }))).code, 'DIGEST_INVALID');
    const unknown = await req('/v2/myorg/app/blobs/uploads/00000000-0000-0000-0000-000000000000');
    assert.equal(unknown.status, 404);
    assert.equal((await ociError(unknown)).code, 'BLOB_UPLOAD_UNKNOWN');
    // A session of another repository is unknown here.
    assert.equal((await req(loc.replace('myorg/app', 'myorg/other'))).status, 404);
  });

  it('DELETE cancels an upload (204) and removes its temp data; the session is unknown afterwards', async () => {
    const tmpFiles = () => readdirSync(join(hc.storagePath, 'tmp')).filter((f) => f.startsWith('blob-')).length;
    const before = tmpFiles();
    const loc = abs((await req('/v2/myorg/app/blobs/uploads/', { method: 'POST' })).headers.get('location'));
    await req(loc, { method: 'PATCH', body: seededBytes('cancel', 500) });
    assert.equal(tmpFiles(), before + 1);
    assert.equal((await req(loc, { method: 'DELETE' })).status, 204);
    assert.equal(tmpFiles(), before);
    assert.equal((await ociError(await req(loc))).code, 'BLOB_UPLOAD_UNKNOWN');
  });

  it('mount: 201 for a blob the store has, without an upload; 202 (a normal upload) for one it hasn’t', async () => {
    const bytes = seededBytes('mount', 4000);
    const digest = await pushBlob('myorg/base', bytes);
    const mounted = await req(`/v2/myorg/app2/blobs/uploads/?mount=${digest}&from=myorg/base`, { method: 'POST' });
    assert.equal(mounted.status, 201);
    assert.equal(mounted.headers.get('location'), `/v2/myorg/app2/blobs/${digest}`);
    assert.equal(mounted.headers.get('docker-content-digest'), digest);
    assert.equal((await req(`/v2/myorg/app2/blobs/${digest}`, { method: 'HEAD' })).status, 200);
    const absent = await req(`/v2/myorg/app2/blobs/uploads/?mount=${sha256Digest('nowhere')}&from=myorg/base`, { method: 'POST' });
    assert.equal(absent.status, 202);
    assert.ok(absent.headers.get('docker-upload-uuid'));
  });

  it('manifest PUT by tag: 201 with Location and Docker-Content-Digest; pulled back byte-exact by tag and by digest', async () => {
    const img = image('by-tag');
    const put = await pushImage('myorg/app', img, 'v1');
    assert.equal(put.status, 201, await put.clone().text());
    assert.equal(put.headers.get('location'), `/v2/myorg/app/manifests/${img.digest}`);
    assert.equal(put.headers.get('docker-content-digest'), img.digest);
    for (const ref of ['v1', img.digest]) {
      const get = await req(`/v2/myorg/app/manifests/${ref}`, { headers: { accept: MediaTypes.ociManifest } });
      assert.equal(get.status, 200);
      assert.equal(get.headers.get('content-type'), MediaTypes.ociManifest);
      assert.equal(get.headers.get('docker-content-digest'), img.digest);
      assert.deepEqual(Buffer.from(await get.arrayBuffer()), img.manifest);
    }
  });

  it('manifest PUT by digest: 201; a body that doesn’t hash to the digest is DIGEST_INVALID', async () => {
    const img = image('by-digest');
    const put = await pushImage('myorg/app', img, img.digest);
    assert.equal(put.status, 201);
    const wrong = await req(`/v2/myorg/app/manifests/${sha256Digest('x')}`, { method: 'PUT', body: img.manifest, headers: { 'content-type': MediaTypes.ociManifest } });
    assert.equal(wrong.status, 400);
    assert.equal((await ociError(wrong)).code, 'DIGEST_INVALID');
  });

  it('a manifest referencing a blob not pushed to the repository is MANIFEST_BLOB_UNKNOWN; an index with an unknown child MANIFEST_UNKNOWN', async () => {
    const img = image('missing-blob');
    await pushBlob('myorg/app', img.config);
    const put = await req('/v2/myorg/app/manifests/broken', { method: 'PUT', body: img.manifest, headers: { 'content-type': MediaTypes.ociManifest } });
    assert.equal(put.status, 404);
    const err = await ociError(put);
    assert.equal(err.code, 'MANIFEST_BLOB_UNKNOWN');
    assert.deepEqual((err.detail as { digests: string[] }).digests.sort(), img.layers.map((l) => sha256Digest(l)).sort());
    assert.equal((await req('/v2/myorg/app/manifests/broken')).status, 404);
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [{ mediaType: MediaTypes.ociManifest, digest: sha256Digest('nope'), size: 10 }] }));
    const putIndex = await req('/v2/myorg/app/manifests/idx', { method: 'PUT', body: index, headers: { 'content-type': MediaTypes.ociIndex } });
    assert.equal(putIndex.status, 404);
    assert.equal((await ociError(putIndex)).code, 'MANIFEST_UNKNOWN');
  });

  it('an index of pushed manifests is accepted; an invalid manifest or a wrong Content-Type is MANIFEST_INVALID', async () => {
    const img = image('child');
    assert.equal((await pushImage('myorg/multi', img, img.digest)).status, 201);
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [{ mediaType: MediaTypes.ociManifest, digest: img.digest, size: img.manifest.length, platform: { os: 'linux', architecture: 'amd64' } }] }));
    assert.equal((await req('/v2/myorg/multi/manifests/latest', { method: 'PUT', body: index, headers: { 'content-type': MediaTypes.ociIndex } })).status, 201);
    for (const [body, type] of [[Buffer.from('not json'), MediaTypes.ociManifest], [img.manifest, MediaTypes.ociIndex], [img.manifest, 'text/html']] as const) {
      const res = await req('/v2/myorg/multi/manifests/bad', { method: 'PUT', body, headers: { 'content-type': type } });
      assert.equal(res.status, 400);
      assert.equal((await ociError(res)).code, 'MANIFEST_INVALID');
    }
  });

  it('referrers: OCI-Subject on a PUT with a subject; GET referrers lists them as an index, filtered by artifactType with OCI-Filters-Applied', async () => {
    const img = image('subject');
    await pushImage('myorg/signed', img, 'v1');
    await pushBlob('myorg/signed', EMPTY_CONFIG);
    const subject = { mediaType: MediaTypes.ociManifest, digest: img.digest, size: img.manifest.length };
    const artifact = (type: string, note: string) => {
      const layer = Buffer.from(note);
      return {
        layer,
        body: Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: MediaTypes.ociManifest,
            artifactType: type,
            config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256Digest(EMPTY_CONFIG), size: 2 },
            layers: [{ mediaType: 'application/octet-stream', digest: sha256Digest(layer), size: layer.length }],
            subject,
            annotations: { 'org.example.note': note },
          }),
        ),
      };
    };
    const sig = artifact('application/vnd.example.signature', 'sig');
    const sbom = artifact('application/spdx+json', 'sbom');
    for (const a of [sig, sbom]) {
      await pushBlob('myorg/signed', a.layer);
      const put = await req(`/v2/myorg/signed/manifests/${sha256Digest(a.body)}`, { method: 'PUT', body: a.body, headers: { 'content-type': MediaTypes.ociManifest } });
      assert.equal(put.status, 201);
      assert.equal(put.headers.get('oci-subject'), img.digest);
    }
    const all = await req(`/v2/myorg/signed/referrers/${img.digest}`);
    assert.equal(all.status, 200);
    assert.equal(all.headers.get('content-type'), MediaTypes.ociIndex);
    assert.equal(all.headers.get('oci-filters-applied'), null);
    const index = (await all.json()) as { schemaVersion: number; mediaType: string; manifests: Array<{ digest: string; artifactType: string; size: number; annotations: Record<string, string> }> };
    assert.equal(index.schemaVersion, 2);
    assert.equal(index.mediaType, MediaTypes.ociIndex);
    assert.deepEqual(index.manifests.map((m) => m.digest).sort(), [sha256Digest(sig.body), sha256Digest(sbom.body)].sort());
    assert.deepEqual(index.manifests.find((m) => m.digest === sha256Digest(sig.body)), { mediaType: MediaTypes.ociManifest, digest: sha256Digest(sig.body), size: sig.body.length, artifactType: 'application/vnd.example.signature', annotations: { 'org.example.note': 'sig' } });
    const filtered = await req(`/v2/myorg/signed/referrers/${img.digest}?artifactType=application/spdx%2Bjson`);
    assert.equal(filtered.headers.get('oci-filters-applied'), 'artifactType');
    assert.deepEqual(((await filtered.json()) as typeof index).manifests.map((m) => m.digest), [sha256Digest(sbom.body)]);
    const none = await req(`/v2/myorg/signed/referrers/${sha256Digest('no subject')}`);
    assert.equal(none.status, 200);
    assert.deepEqual(((await none.json()) as typeof index).manifests, []);
  });

  it('tags/list: sorted, paginated with n/last and a Link to the next page; NAME_UNKNOWN for a repository never pushed', async () => {
    const img = image('tags');
    for (const tag of ['b', 'a', 'c', '1.0']) assert.equal((await pushImage('myorg/tagged', img, tag)).status, 201);
    assert.deepEqual(await (await req('/v2/myorg/tagged/tags/list')).json(), { name: 'myorg/tagged', tags: ['1.0', 'a', 'b', 'c'] });
    const first = await req('/v2/myorg/tagged/tags/list?n=2');
    assert.deepEqual(((await first.json()) as { tags: string[] }).tags, ['1.0', 'a']);
    assert.equal(first.headers.get('link'), '</v2/myorg/tagged/tags/list?n=2&last=a>; rel="next"');
    assert.deepEqual(((await (await req('/v2/myorg/tagged/tags/list?n=2&last=a')).json()) as { tags: string[] }).tags, ['b', 'c']);
    const unknown = await req('/v2/myorg/nothing/tags/list');
    assert.equal(unknown.status, 404);
    assert.equal((await ociError(unknown)).code, 'NAME_UNKNOWN');
  });

  it('deletes are refused with 405 UNSUPPORTED unless hosted.allowDelete', async () => {
    const img = image('nodelete');
    await pushImage('myorg/keep', img, 'v1');
    for (const path of [`/v2/myorg/keep/manifests/${img.digest}`, '/v2/myorg/keep/manifests/v1', `/v2/myorg/keep/blobs/${sha256Digest(img.config)}`]) {
      const res = await req(path, { method: 'DELETE' });
      assert.equal(res.status, 405, path);
      assert.match((await ociError(res)).message, /hosted\.allowDelete/);
    }
    assert.equal((await req('/v2/myorg/keep/manifests/v1')).status, 200);
  });

  it('with hosted.allowDelete: DELETE by tag removes the tag only; by digest the manifest and its tags; blobs leave the repository (202)', async () => {
    const img = image('delete');
    const d = (path: string, init?: Init) => call(deletable.url + path, init);
    assert.equal((await pushImage('myorg/gone', img, 'v1', deletable)).status, 201);
    await call(`${deletable.url}/v2/myorg/gone/manifests/v2`, { method: 'PUT', body: img.manifest, headers: { 'content-type': MediaTypes.ociManifest } });
    assert.equal((await d('/v2/myorg/gone/manifests/v1', { method: 'DELETE' })).status, 202);
    assert.equal((await d('/v2/myorg/gone/manifests/v1')).status, 404);
    assert.equal((await d(`/v2/myorg/gone/manifests/${img.digest}`)).status, 200, 'by tag: the manifest stays');
    assert.equal((await d(`/v2/myorg/gone/manifests/${img.digest}`, { method: 'DELETE' })).status, 202);
    assert.equal((await d(`/v2/myorg/gone/manifests/${img.digest}`)).status, 404);
    assert.equal((await d('/v2/myorg/gone/manifests/v2')).status, 404, 'by digest: its tags go too');
    assert.equal((await ociError(await d(`/v2/myorg/gone/manifests/${img.digest}`, { method: 'DELETE' }))).code, 'MANIFEST_UNKNOWN');
    const layer = sha256Digest(img.layers[0]!);
    assert.equal((await d(`/v2/myorg/gone/blobs/${layer}`, { method: 'DELETE' })).status, 202);
    assert.equal((await d(`/v2/myorg/gone/blobs/${layer}`, { method: 'HEAD' })).status, 404);
    assert.equal((await ociError(await d(`/v2/myorg/gone/blobs/${layer}`, { method: 'DELETE' }))).code, 'BLOB_UNKNOWN');
  });

  it('a name outside hosted.repositories: a push is 403 DENIED naming the setting; a delete 405', async () => {
    const res = await req('/v2/library/alpine/blobs/uploads/', { method: 'POST' });
    assert.equal(res.status, 403);
    const err = await ociError(res);
    assert.equal(err.code, 'DENIED');
    assert.match(err.message, /hosted\.repositories/);
    const manifest = await req('/v2/otherorg/app/manifests/v1', { method: 'PUT', body: '{}', headers: { 'content-type': MediaTypes.ociManifest } });
    assert.equal(manifest.status, 403);
    assert.equal((await req('/v2/otherorg/app/manifests/v1', { method: 'DELETE' })).status, 405);
    // ci/* covers one component only.
    assert.equal((await req('/v2/ci/a/b/blobs/uploads/', { method: 'POST' })).status, 403);
  });

  it('fallThrough: pushed tags win, the rest comes from the upstream; tags are the union', async () => {
    const registry = new FakeRegistry();
    const theirs = image('upstream-side');
    registry.putManifest('team/tool', 'upstream-only', theirs.manifest, MediaTypes.ociManifest);
    registry.putManifest('team/tool', 'v1', theirs.manifest, MediaTypes.ociManifest);
    registry.tags.set('team/tool', ['upstream-only', 'v1']);
    const server = await LoopbackServer.start(registry.handle);
    const ft = await startInProcess({ config: { upstreams: { 'docker.io': { url: server.url } }, hosted: { repositories: [{ pattern: 'team/*', fallThrough: 'docker.io' }] } } });
    try {
      const mine = image('pushed-side');
      assert.equal((await pushImage('team/tool', mine, 'v1', ft)).status, 201);
      const pushed = await call(`${ft.url}/v2/team/tool/manifests/v1`, { headers: { accept: MediaTypes.ociManifest } });
      assert.equal(pushed.headers.get('docker-content-digest'), mine.digest, 'the pushed tag wins');
      const fallen = await call(`${ft.url}/v2/team/tool/manifests/upstream-only`, { headers: { accept: MediaTypes.ociManifest } });
      assert.equal(fallen.status, 200);
      assert.equal(fallen.headers.get('docker-content-digest'), theirs.digest, 'the rest from the upstream');
      assert.deepEqual(await (await call(`${ft.url}/v2/team/tool/tags/list`)).json(), { name: 'team/tool', tags: ['upstream-only', 'v1'] });
    } finally {
      await ft.close();
      await server.close();
    }
  });

  it('a pushed blob is not readable through a mirrored name unless that name\'s upstream has it too (one HEAD, remembered)', async () => {
    const secret = seededBytes('private-layer', 5000);
    const secretDigest = await pushBlob('myorg/private', secret);
    const blobRequests = () => upstream.requests.filter((r) => r.url.includes('/blobs/')).length;
    let before = blobRequests();
    for (const method of ['GET', 'HEAD']) {
      const res = await req(`/v2/library/alpine/blobs/${secretDigest}`, { method });
      assert.equal(res.status, 404, `${method}: the private layer must not leak through a mirrored name`);
    }
    assert.ok(blobRequests() > before, 'the upstream was asked');
    // A layer both pushed and on the upstream (a public base layer) is served after one HEAD.
    const shared = seededBytes('public-base-layer', 4000);
    registry.putBlob(shared);
    const sharedDigest = await pushBlob('myorg/app2', shared);
    before = blobRequests();
    assert.deepEqual(Buffer.from(await (await req(`/v2/library/alpine/blobs/${sharedDigest}`)).arrayBuffer()), shared);
    assert.deepEqual(Buffer.from(await (await req(`/v2/library/alpine/blobs/${sharedDigest}`)).arrayBuffer()), shared);
    assert.deepEqual(
      upstream.requests.slice(-(blobRequests() - before)).filter((r) => r.url.includes('/blobs/')).map((r) => r.method),
      ['HEAD'],
      'one HEAD, no download: the bytes come from the store',
    );
  });

  it('a hosted name is never looked up upstream: the fake upstream sees no request at all', async () => {
    const before = upstream.requests.length;
    for (const path of ['/v2/myorg/unknown/manifests/latest', `/v2/myorg/unknown/manifests/${sha256Digest('m')}`, `/v2/myorg/unknown/blobs/${sha256Digest('b')}`, '/v2/myorg/unknown/tags/list', '/v2/ci/tool/manifests/v1']) {
      const res = await req(path);
      assert.equal(res.status, 404, path);
    }
    assert.equal(upstream.requests.length, before);
    // …while a name outside the patterns is pulled through.
    await req('/v2/otherorg/app/manifests/latest');
    assert.ok(upstream.requests.length > before);
  });
});
