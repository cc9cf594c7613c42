/**
 * `hubcache serve` with `storage.driver: s3` on a real Ceph RGW (test/support/rgw.ts): skopeo pulls
 * an image through it; after a restart (a new process, nothing local kept) the pull is served from
 * the bucket: no upstream blob or manifest GET.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { startHubcacheProcess, type HubcacheProcess } from '../support/hubcache-process.js';
import { digestOf, makeImage, type TestImage } from '../support/images.js';
import { startRgw, type Rgw } from '../support/rgw.js';
import { skopeoCopy } from '../support/skopeo.js';
import { startUpstream, type Upstream } from '../support/upstream-harness.js';

const MiB = 1024 * 1024;

describe('hubcache serve on S3 (storage.driver: s3, Ceph RGW)', () => {
  let rgw: Rgw;
  let up: Upstream;
  let img: TestImage;
  let bucket: string;
  const running: HubcacheProcess[] = [];
  const scratch = mkdtempSync(join(tmpdir(), 'hubcache-e2e-s3-'));

  before(async () => {
    [rgw, up, img] = await Promise.all([startRgw(), startUpstream(), makeImage('docker', { seed: 'e2e-s3', layerSize: 6 * MiB, layers: 2 })]);
    await up.push(img, 'library/ons3', '1.0');
    bucket = await rgw.createBucket();
  });
  after(async () => {
    for (const p of running) await p.close();
    await rgw?.stop();
    await up?.close();
    img?.dispose();
    rmSync(scratch, { recursive: true, force: true });
  });

  const start = async () => {
    const hc = await startHubcacheProcess({
      upstream: up,
      storageArgs: ['--storage-driver', 's3', '--storage-bucket', bucket, '--storage-endpoint', rgw.endpoint, '--storage-force-path-style', 'true', '--storage-prefix', 'mirror/', '--storage-part-size', '5MiB'],
      // Credentials from the AWS SDK's default chain, as a Kubernetes Secret mapped to env would give them.
      env: { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey },
    });
    running.push(hc);
    return hc;
  };

  it('skopeo pulls through it; the blobs land in the bucket; after a restart the pull costs no upstream GET', async () => {
    const first = await start();
    up.front.reset();
    await skopeoCopy(`docker://${first.host}/library/ons3:1.0`, `dir:${join(scratch, 'a')}`);
    assert.equal(digestOf(readFileSync(join(scratch, 'a', 'manifest.json'))), img.digest);
    for (const blob of img.blobs.values()) assert.equal(digestOf(readFileSync(join(scratch, 'a', blob.digest.slice(7)))), blob.digest);
    assert.ok(up.front.count({ kind: 'blob', method: 'GET' }) >= img.blobs.size);
    // A client gets a blob's last byte once it is verified; the commit (multipart completion and
    // copy to the blob's key) follows: wait for each before looking into the bucket.
    for (const d of img.blobs.keys()) await first.waitForLog((l) => l.message === 'fill committed' && l.digest === d);
    const listed = await rgw.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'mirror/blobs/' }));
    assert.deepEqual((listed.Contents ?? []).map((c) => `sha256:${c.Key!.split('/').pop()}`).sort(), [...img.blobs.keys()].sort());
    await first.stop();

    const second = await start();
    up.front.reset();
    await skopeoCopy(`docker://${second.host}/library/ons3:1.0`, `dir:${join(scratch, 'b')}`);
    assert.equal(digestOf(readFileSync(join(scratch, 'b', 'manifest.json'))), img.digest);
    for (const blob of img.blobs.values()) assert.equal(digestOf(readFileSync(join(scratch, 'b', blob.digest.slice(7)))), blob.digest);
    assert.equal(up.front.count({ kind: 'blob', method: 'GET' }), 0, 'no upstream blob GET');
    assert.equal(up.front.count({ kind: 'manifest', method: 'GET' }), 0, 'no upstream manifest GET');
  });

  it('a start with wrong credentials fails at once, naming the bucket and S3\'s refusal', async () => {
    await assert.rejects(
      startHubcacheProcess({
        upstream: up,
        storageArgs: ['--storage-driver', 's3', '--storage-bucket', bucket, '--storage-endpoint', rgw.endpoint, '--storage-force-path-style', 'true'],
        env: { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: 'wrong' },
      }),
      (err: unknown) => /exited with 1 before starting: .*bucket ".*" at http:\/\/127\.0\.0\.1:\d+ is not usable: S3 HeadBucket failed/s.test(String((err as Error).message)),
    );
  });

  it('S3 unreachable (radosgw stopped): a cached blob is passed through from upstream, and with upstream failing too it is a clear 503 STORAGE_UNAVAILABLE', async () => {
    const hc = running.at(-1)!;
    const layer = [...img.blobs.values()].find((b) => b.digest !== img.config?.digest)!;
    await rgw.stopGateway();
    const passed = await fetch(`${hc.url}/v2/library/ons3/blobs/${layer.digest}`);
    assert.equal(passed.status, 200);
    assert.equal(digestOf(Buffer.from(await passed.arrayBuffer())), layer.digest, 'verified bytes from upstream');
    const fault = up.front.inject({ type: 'status', status: 503, when: { kind: 'blob' } });
    try {
      const res = await fetch(`${hc.url}/v2/library/ons3/blobs/${layer.digest}`);
      const body = (await res.json()) as { errors: { code: string; detail?: { errno?: string } }[] };
      assert.equal(res.status, 503, JSON.stringify(body));
      assert.equal(body.errors[0]!.code, 'STORAGE_UNAVAILABLE');
      assert.equal(body.errors[0]!.detail?.errno, 'EIO');
    } finally {
      fault.clear();
    }
  });
});
