/**
 * Issue #12: a manifest reference that is neither a tag nor a digest (the OCI conformance suite's
 * "nonexistent manifest", `.INVALID_MANIFEST_NAME`) is a manifest that doesn't exist: 404
 * MANIFEST_UNKNOWN for GET and HEAD, as distribution answers, without asking the upstream (there is
 * nothing it could have) and without storing anything. A reference that claims to be a digest but
 * isn't one stays a 400 DIGEST_INVALID.
 */
import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MediaTypes } from '../../src/domain/media-types.js';
import { FakeRegistry, LoopbackServer } from '../../src/upstream/testing/fake-registry.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';

interface OciErrors {
  errors: Array<{ code: string; message: string; detail: unknown }>;
}

describe('manifest references that name no manifest (issue #12)', () => {
  const reg = new FakeRegistry();
  let up: LoopbackServer;
  let hc: InProcessHubcache;
  const base = () => `${hc.url}/v2/library/x/manifests`;

  before(async () => {
    reg.putManifest('library/x', 'v1', { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: {}, layers: [] }, MediaTypes.ociManifest);
    up = await LoopbackServer.start(reg.handle);
    hc = await startInProcess({ flags: { 'upstream-url': up.url } });
  });

  after(async () => {
    await hc?.close();
    await up?.close();
  });

  it('GET and HEAD of .INVALID_MANIFEST_NAME: 404 MANIFEST_UNKNOWN with an OCI error body (none for HEAD); the upstream sees no request and nothing is stored', async () => {
    const seen = up.requests.length;
    const get = await fetch(`${base()}/.INVALID_MANIFEST_NAME`, { headers: { accept: MediaTypes.ociManifest } });
    assert.equal(get.status, 404);
    assert.match(get.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(get.headers.get('docker-distribution-api-version'), 'registry/2.0');
    const doc = (await get.json()) as OciErrors;
    assert.deepEqual(doc, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown to registry', detail: { reference: '.INVALID_MANIFEST_NAME' } }] });

    const head = await fetch(`${base()}/.INVALID_MANIFEST_NAME`, { method: 'HEAD' });
    assert.equal(head.status, 404);
    assert.equal(await head.text(), '', 'a HEAD answer has no body');

    // Other non-tags without the form of a digest are the same.
    for (const ref of ['-bad', 'Foo:bar', 'x'.repeat(129)]) {
      const res = await fetch(`${base()}/${ref}`);
      assert.equal(res.status, 404, ref);
      assert.equal(((await res.json()) as OciErrors).errors[0]!.code, 'MANIFEST_UNKNOWN', ref);
    }
    assert.equal(up.requests.length, seen, `no upstream request: ${JSON.stringify(up.requests.slice(seen).map((r) => r.url))}`);
    for (const dir of ['repositories', 'manifests'].map((d) => join(hc.storagePath, d))) {
      assert.deepEqual(readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((p) => statSync(join(dir, p)).isFile()), [], `nothing stored in ${dir}`);
    }
  });

  it('a reference that claims to be a digest but is not one: 400 DIGEST_INVALID (GET and HEAD), no upstream request', async () => {
    const seen = up.requests.length;
    for (const ref of ['sha256:zzz', 'md5:abc']) {
      const get = await fetch(`${base()}/${ref}`);
      assert.equal(get.status, 400, ref);
      assert.equal(((await get.json()) as OciErrors).errors[0]!.code, 'DIGEST_INVALID', ref);
      const head = await fetch(`${base()}/${ref}`, { method: 'HEAD' });
      assert.equal(head.status, 400, ref);
      assert.equal(await head.text(), '');
    }
    assert.equal(up.requests.length, seen);
  });

  it('the repository name is still checked first, and the method: NAME_INVALID, then DENIED for a push to a mirrored name', async () => {
    const name = await fetch(`${hc.url}/v2/Upper/manifests/.INVALID_MANIFEST_NAME`);
    assert.equal(name.status, 400);
    assert.equal(((await name.json()) as OciErrors).errors[0]!.code, 'NAME_INVALID');
    const put = await fetch(`${base()}/.INVALID_MANIFEST_NAME`, { method: 'PUT', body: '{}' });
    assert.equal(put.status, 403);
    assert.equal(((await put.json()) as OciErrors).errors[0]!.code, 'DENIED');
  });

  it('a valid tag in the same repository is fetched from the upstream as usual (the request count above means something)', async () => {
    const seen = up.requests.length;
    const ok = await fetch(`${base()}/v1`, { headers: { accept: MediaTypes.ociManifest } });
    assert.equal(ok.status, 200);
    await ok.arrayBuffer();
    assert.ok(up.requests.length > seen, 'the upstream was asked');
    const tags = join(hc.storagePath, 'repositories');
    assert.ok(readdirSync(tags, { recursive: true, encoding: 'utf8' }).some((p) => statSync(join(tags, p)).isFile()), 'and its answer stored (what "nothing stored" above looks for)');
  });
});
