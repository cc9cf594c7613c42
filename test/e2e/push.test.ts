/**
 * The private registry with a real client (issue #14, part 1): skopeo pushes an image INTO a real
 * `hubcache serve` under a hosted name and pulls it back byte-identical; a push to a name outside
 * `hosted.repositories` is refused. No upstream is reachable: the Docker Hub URL points at a closed
 * port, so anything that worked was served by hubcache itself.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort } from '../support/distribution.js';
import { startHubcacheProcess, type HubcacheProcess } from '../support/hubcache-process.js';
import { makeImage, makeIndex, type TestImage } from '../support/images.js';
import { skopeoCopy, skopeoInspectRaw, SkopeoError } from '../support/skopeo.js';

const MiB = 1024 * 1024;

/** skopeo's `dir:` transport: the manifest's exact bytes, each blob under its hex, a version file. */
function writeDirLayout(dir: string, image: TestImage): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'version'), 'Directory Transport Version: 1.1\n');
  writeFileSync(join(dir, 'manifest.json'), image.manifest);
  for (const [digest, blob] of image.blobs) writeFileSync(join(dir, digest.slice('sha256:'.length)), blob.bytes());
}

describe('push with skopeo into a real hubcache (hosted repositories)', () => {
  let hc: HubcacheProcess;
  let docker: TestImage;
  let oci: TestImage;
  let index: TestImage;
  const scratch = mkdtempSync(join(tmpdir(), 'hubcache-e2e-push-'));
  let n = 0;
  const dir = () => join(scratch, `d${n++}`);

  before(async () => {
    [docker, oci, index] = await Promise.all([
      makeImage('docker', { seed: 'e2e-push-docker', layerSize: 2 * MiB }),
      makeImage('oci', { seed: 'e2e-push-oci', layerSize: MiB }),
      makeIndex('oci', { seed: 'e2e-push-index', layerSize: MiB / 4, layers: 1 }),
    ]);
    const deadUpstream = `http://127.0.0.1:${await freePort()}`;
    hc = await startHubcacheProcess({ upstreamUrl: deadUpstream, args: ['--hosted-repositories', 'myorg/**'] });
  });

  after(async () => {
    await hc?.close();
    rmSync(scratch, { recursive: true, force: true });
    for (const i of [docker, oci, index]) i?.dispose();
  });

  for (const which of ['docker', 'oci'] as const) {
    it(`skopeo copy of a ${which} image into myorg/…, then back out: the same manifest bytes and blobs`, async () => {
      const image = which === 'docker' ? docker : oci;
      const src = dir();
      writeDirLayout(src, image);
      await skopeoCopy(`dir:${src}`, `docker://${hc.host}/myorg/${which}:1.0`);
      const raw = await skopeoInspectRaw(`docker://${hc.host}/myorg/${which}:1.0`);
      assert.deepEqual(raw, image.manifest, 'the manifest is stored byte-exact');
      const back = dir();
      await skopeoCopy(`docker://${hc.host}/myorg/${which}@${image.digest}`, `dir:${back}`);
      assert.deepEqual(readFileSync(join(back, 'manifest.json')), image.manifest);
      for (const [digest, blob] of image.blobs) assert.deepEqual(readFileSync(join(back, digest.slice('sha256:'.length))), blob.bytes(), digest);
      assert.equal(readdirSync(join(hc.storagePath, 'tmp')).filter((f) => f.startsWith('blob-')).length, 0, 'no upload left open');
    });
  }

  it('skopeo copy --all of an OCI index: every platform manifest and blob, pulled back by digest', async () => {
    // skopeo's dir: transport holds one manifest: the platform images go in by digest with skopeo,
    // the index by a raw PUT (as crane or oras would send it).
    for (const child of index.children) {
      const d = dir();
      writeDirLayout(d, child);
      await skopeoCopy(`dir:${d}`, `docker://${hc.host}/myorg/multi@${child.digest}`);
    }
    const put = await fetch(`${hc.url}/v2/myorg/multi/manifests/latest`, { method: 'PUT', body: new Uint8Array(index.manifest), headers: { 'content-type': index.mediaType } });
    assert.equal(put.status, 201, await put.text());
    const back = dir();
    await skopeoCopy(`docker://${hc.host}/myorg/multi:latest`, `dir:${back}`, { all: true });
    assert.deepEqual(readFileSync(join(back, 'manifest.json')), index.manifest);
    for (const [digest, blob] of index.blobs) assert.deepEqual(readFileSync(join(back, digest.slice('sha256:'.length))), blob.bytes(), digest);
  });

  it('a push to a name outside hosted.repositories is refused (403 DENIED), and nothing is stored under it', async () => {
    const other = await makeImage('oci', { seed: 'e2e-push-not-hosted', layerSize: MiB / 4 });
    try {
      const src = dir();
      writeDirLayout(src, other);
      // skopeo first asks whether the destination has each blob: a mirrored name asks its
      // upstream, which is down here (503), so skopeo stops there; the upload itself is refused.
      await assert.rejects(skopeoCopy(`dir:${src}`, `docker://${hc.host}/otherorg/app:1.0`), (err: unknown) => err instanceof SkopeoError);
      const upload = await fetch(`${hc.url}/v2/otherorg/app/blobs/uploads/`, { method: 'POST' });
      assert.equal(upload.status, 403);
      assert.match(await upload.text(), /"code":"DENIED".*otherorg\/app is not a hosted repository: only names matching hosted\.repositories/);
      assert.deepEqual(readdirSync(join(hc.storagePath, 'repositories')), ['_hosted'], 'nothing stored under a mirrored name');
    } finally {
      other.dispose();
    }
  });

  it('a pushed blob is not served under a mirrored name its upstream can\'t confirm (here: the upstream is down)', async () => {
    const [digest] = [...oci.blobs.keys()];
    for (const method of ['GET', 'HEAD']) {
      const res = await fetch(`${hc.url}/v2/otherorg/app/blobs/${digest}`, { method });
      assert.notEqual(res.status, 200, method);
      await res.arrayBuffer();
    }
    assert.equal((await fetch(`${hc.url}/v2/myorg/oci/blobs/${digest}`, { method: 'HEAD' })).status, 200, 'under the hosted name it is served');
  });
});
