/**
 * A full disk, for real: hubcache runs on a small tmpfs mounted for this test (root only; skipped
 * with a message otherwise), the test fills it with a file of its own, then pulls through it. What
 * must hold (issue #13, "Disk full and other storage faults"):
 * - the fill that runs into ENOSPC is counted as `storage_error`, and the store turns degraded
 *   (hubcache_store_writable 0, one "store degraded" log line with the errno and the path);
 * - its client still gets the whole blob, verified (a real client: curl, then sha256): the
 *   download goes on from upstream without the store (pass-through);
 * - content not cached is passed through from upstream, verified, not stored: a real client
 *   (skopeo) pulls a whole image through the full store; never 500 UNKNOWN; cached content is
 *   still served;
 * - the store stays consistent: no temp file left, nothing half-written under blobs/;
 * - /readyz stays 200 with `"status":"degraded"` (the only replica stays in its Service);
 * - once space returns (the test deletes its file) the next pull is cached and the metric clears,
 *   with no restart.
 * The alert on the metric is unit-tested with promtool (deploy/prometheus/alerts.test.yaml).
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, rmdirSync, statSync, truncateSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { metricValue, startHubcacheProcess, type HubcacheProcess } from '../support/hubcache-process.js';
import { makeImage, MediaTypes, type TestImage } from '../support/images.js';
import { rawRequest } from '../support/raw-http.js';
import { skopeoCopy } from '../support/skopeo.js';
import { startUpstream, type Upstream } from '../support/upstream-harness.js';

const MiB = 1024 * 1024;
const DEGRADED = 'store degraded: writes fail, content not cached is passed through from upstream, not stored';
const ACCEPT = [MediaTypes.dockerManifest, MediaTypes.dockerManifestList, MediaTypes.ociManifest, MediaTypes.ociIndex].join(', ');
const isRoot = process.getuid?.() === 0;

/** A real client: curl writes the blob to a file (failing on a broken transfer); returns its sha256. */
function curlSha256(url: string, dir: string): Promise<string> {
  const out = join(dir, 'curl-blob');
  return new Promise((resolve, reject) =>
    execFile('curl', ['-sSf', '--max-time', '60', '-o', out, url], (err, _stdout, stderr) => {
      if (err) return reject(new Error(`curl failed: ${stderr || err.message}`));
      const hex = createHash('sha256').update(readFileSync(out)).digest('hex');
      rmSync(out);
      resolve(`sha256:${hex}`);
    }),
  );
}

/** Writes `path` until the filesystem is full (ENOSPC); returns its size. */
function fillUp(path: string): number {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(64 * 1024, 0xab);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
  return statSync(path).size;
}

describe('disk full (a real tmpfs)', () => {
  let up: Upstream;
  let hc: HubcacheProcess | undefined;
  let mountPoint: string | undefined;
  let mounted = false;
  const images: TestImage[] = [];

  const unmount = () => {
    if (mounted) execFileSync('umount', [mountPoint!]);
    mounted = false;
    if (mountPoint) rmdirSync(mountPoint);
    mountPoint = undefined;
  };

  before(async () => {
    // Not a skip: a test that doesn't run proves nothing. The e2e tier runs as root (CI does).
    assert.ok(isRoot, 'mounting a tmpfs needs root: run the e2e tests as root (.ci/run does)');
    mountPoint = mkdtempSync(join(tmpdir(), 'hubcache-tmpfs-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mountPoint]);
      mounted = true;
      up = await startUpstream();
      // A cap far above what the test stores: the emergency eviction a full disk triggers frees down
      // to the cap's low watermark, which is nothing here, so the space the test's own file takes
      // stays taken and the degraded state can be observed (the healing is test/e2e/eviction.test.ts's).
      hc = await startHubcacheProcess({ upstream: up, storagePath: mountPoint, args: ['--storage-max-size', '1GiB'] });
    } catch (err) {
      await hc?.close();
      await up?.close();
      unmount();
      throw err;
    }
  });
  after(async () => {
    try {
      await hc?.close();
      await up?.close();
      for (const i of images) i.dispose();
    } finally {
      unmount();
    }
  });

  const get = (path: string, headers: Record<string, string> = {}) => rawRequest(`${hc!.url}${path}`, { headers: { accept: ACCEPT, ...headers }, timeoutMs: 30_000 });
  const metric = async (name: string, labels?: Record<string, string>) => metricValue(await hc!.metrics(), name, labels);
  const readyz = async () => {
    const r = await get('/readyz');
    return { status: r.status, body: JSON.parse(r.body.toString()) as { status: string; checks: Record<string, boolean> } };
  };

  const blobPath = (digest: string) => join(mountPoint!, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));

  it('fills into ENOSPC: storage_error, degraded but ready, the client of the fill and a real pull passed through verified, cached content served, no temp file; recovers when space returns', async () => {
    const image = async (seed: string, repo: string, layerSize: number) => {
      const img = await makeImage('oci', { seed, layerSize, layers: 1, filesPerLayer: 1 });
      images.push(img);
      await up.push(img, repo, '1');
      return img;
    };
    const cached = await image('diskfull-cached', 'library/cached', 512 * 1024);
    const big = await image('diskfull-big', 'library/big', 2 * MiB);
    const late = await image('diskfull-late', 'library/late', 256 * 1024);

    // Cache one image whole while there is room.
    assert.equal((await get('/v2/library/cached/manifests/1')).status, 200);
    for (const d of [cached.config!.digest, cached.layers[0]!.digest]) assert.equal((await get(`/v2/library/cached/blobs/${d}`)).status, 200);
    assert.equal(await metric('hubcache_store_writable'), 1);
    assert.equal((await readyz()).body.status, 'ready');

    // Fill the volume, then leave 1 MiB: less than the big layer.
    const filler = join(mountPoint!, 'filler');
    const size = fillUp(filler);
    truncateSync(filler, size - MiB);

    // The big manifest fits; its layer's download runs into ENOSPC halfway, and its client (curl)
    // still gets every byte, verified: the download goes on without the store.
    assert.equal((await get('/v2/library/big/manifests/1')).status, 200);
    const work = mkdtempSync(join(tmpdir(), 'hubcache-diskfull-client-'));
    try {
      assert.equal(await curlSha256(`${hc!.url}/v2/library/big/blobs/${big.layers[0]!.digest}`, work), big.layers[0]!.digest, 'the whole blob, bigger than the free space, verified');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
    const degraded = await hc!.waitForLog((l) => l.message === DEGRADED);
    assert.equal(degraded.errno, 'ENOSPC');
    assert.equal(degraded.level, 'error');
    // Usually the write fails while the client is still reading: the fill turns into a pass-through.
    // On a loaded machine every byte may have arrived, been verified and sent (the final byte goes
    // out once the digest matches, before the store's writes end) before the write fails: then the
    // client is already served and the fill just fails with a storage error.
    const ended = await hc!.waitForLog((l) => l.digest === big.layers[0]!.digest && (l.message === 'fill passed through, not cached' || (l.message === 'fill failed' && l.reason === 'storage_error')));
    const bigPassedThrough = ended.message === 'fill passed through, not cached' ? 1 : 0;
    assert.equal(await metric('hubcache_fills_failed_total', { reason: 'storage_error' }), 1, 'counted as storage_error');
    assert.equal(await metric('hubcache_fills_failed_total', { reason: 'upstream_error' }), 0);
    assert.equal(await metric('hubcache_store_writable'), 0);
    assert.equal(await metric('hubcache_passthrough_requests_total', { kind: 'blob' }), bigPassedThrough);

    // Now full to the last byte: a real client pulls a whole image not cached through the full store.
    fillUp(join(mountPoint!, 'filler-2'));
    const dest = mkdtempSync(join(tmpdir(), 'hubcache-diskfull-pull-'));
    try {
      await skopeoCopy(`docker://${hc!.host}/library/late:1`, `dir:${dest}`);
      assert.equal(`sha256:${createHash('sha256').update(readFileSync(join(dest, late.layers[0]!.digest.slice(7)))).digest('hex')}`, late.layers[0]!.digest, 'skopeo got the layer, verified');
    } finally {
      rmSync(dest, { recursive: true, force: true });
    }
    assert.ok((await metric('hubcache_passthrough_requests_total', { kind: 'blob' })) >= 2 + bigPassedThrough, 'the late layer and config passed through');
    assert.ok((await metric('hubcache_passthrough_requests_total', { kind: 'manifest' })) >= 1);
    const manifest = await get('/v2/library/late/manifests/1');
    assert.equal(manifest.status, 200, manifest.body.toString());
    assert.deepEqual(manifest.body, late.manifest, 'passed through, verified');
    assert.equal(manifest.headers['docker-content-digest'], late.digest);
    // Cached content is still served.
    const layer = await get(`/v2/library/cached/blobs/${cached.layers[0]!.digest}`);
    assert.equal(layer.status, 200);
    assert.equal(layer.body.length, cached.layers[0]!.size);
    assert.equal((await get('/v2/library/cached/manifests/1')).status, 200);
    // Ready (stays in its Service), but says degraded.
    assert.deepEqual(await readyz(), { status: 200, body: { status: 'degraded', checks: { config: true, accepting: true, storeReadable: true, storeWritable: false } } });
    assert.equal(await metric('hubcache_store_writable'), 0);
    assert.deepEqual(hc!.logs.filter((l) => l.message === 'unhandled error'), [], 'never 500 UNKNOWN');
    assert.equal(hc!.logs.filter((l) => l.message === DEGRADED).length, 1, 'logged once');
    // Consistent: no temp file left, nothing of the passed-through blobs stored.
    assert.deepEqual(readdirSync(join(mountPoint!, 'tmp')).filter((f) => f.startsWith('blob-')), [], 'no temp file left');
    for (const d of [big.layers[0]!.digest, late.layers[0]!.digest]) assert.throws(() => statSync(blobPath(d)), /ENOENT/, `${d} not stored`);

    // Space returns: no restart; the next probe clears the metric, the next pull is cached.
    rmSync(filler);
    rmSync(join(mountPoint!, 'filler-2'));
    assert.deepEqual((await readyz()).body.status, 'ready');
    assert.equal(await metric('hubcache_store_writable'), 1);
    const again = await get(`/v2/library/big/blobs/${big.layers[0]!.digest}`);
    assert.equal(again.status, 200);
    assert.equal(again.outcome, 'complete');
    assert.equal(again.body.length, big.layers[0]!.size);
    await hc!.waitForLog((l) => l.message === 'fill committed' && l.digest === big.layers[0]!.digest);
    const late2 = await get(`/v2/library/late/blobs/${late.layers[0]!.digest}`);
    assert.equal(late2.status, 200);
    assert.ok(statSync(blobPath(big.layers[0]!.digest)).isFile(), 'committed to the store');
  });
});
