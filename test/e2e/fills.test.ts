/**
 * Blob fills and failure modes against a real hubcache process: one upstream download shared by
 * every client while it streams, a fill that outlives its first client, broken and wrong upstream
 * bytes that are never committed, and a cache that keeps serving when the upstream fails.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { startHubcacheProcess, type HubcacheProcess } from '../support/hubcache-process.js';
import { digestOf, makeImage, MediaTypes, type TestImage } from '../support/images.js';
import { rawRequest, type RawResponse } from '../support/raw-http.js';
import { SkopeoError, skopeoCopy } from '../support/skopeo.js';
import { startUpstream, type Upstream } from '../support/upstream-harness.js';

const MiB = 1024 * 1024;
const ACCEPT = [MediaTypes.dockerManifest, MediaTypes.dockerManifestList, MediaTypes.ociManifest, MediaTypes.ociIndex].join(', ');

/** Pushes a one-layer image and returns it; its layer is the blob a test plays with. */
async function seeded(up: Upstream, repo: string, seed: string, layerSize = 4 * MiB): Promise<TestImage> {
  const img = await makeImage('oci', { seed, layerSize, layers: 1, filesPerLayer: 1 });
  await up.push(img, repo, 'v1');
  return img;
}

/** Committed blob files under the store (the layout is in docs/storage-layout.md). */
function committedBlobs(storagePath: string): string[] {
  const root = join(storagePath, 'blobs', 'sha256');
  const out: string[] = [];
  try {
    for (const d of readdirSync(root)) for (const f of readdirSync(join(root, d))) out.push(`sha256:${f}`);
  } catch {
    /* no blobs yet */
  }
  return out;
}

function tmpFiles(storagePath: string): string[] {
  try {
    return readdirSync(join(storagePath, 'tmp'), { recursive: true }).map(String);
  } catch {
    return [];
  }
}

describe('blob fills (one download, streamed to everyone, never committed wrong)', () => {
  let up: Upstream;
  let hc: HubcacheProcess;
  const images: TestImage[] = [];
  const blobUrl = (repo: string, digest: string) => `${hc.url}/v2/${repo}/blobs/${digest}`;

  before(async () => {
    up = await startUpstream();
    hc = await startHubcacheProcess({ upstream: up, args: ['--tag-ttl', '10m'] });
  });
  afterEach(() => up.front.clearFaults());
  after(async () => {
    await hc?.close();
    await up?.close();
    for (const i of images) i.dispose();
  });

  it('20 concurrent GETs of an uncached blob: 1 upstream GET, 20 correct bodies, every first byte before the upstream finished', async () => {
    const img = await seeded(up, 'library/fanout', 'fills-fanout', 8 * MiB);
    images.push(img);
    const layer = img.layers[0]!;
    up.front.reset();
    // Upstream sends 1 MiB and then holds the rest until the test lets go.
    const stall = up.front.inject({ type: 'stall', afterBytes: MiB, when: { kind: 'blob', digest: layer.digest } });
    const firstBytes: Array<Promise<void>> = [];
    const clients: Array<Promise<RawResponse>> = [];
    for (let i = 0; i < 20; i++) {
      let gotByte!: () => void;
      firstBytes.push(new Promise<void>((r) => (gotByte = r)));
      clients.push(rawRequest(blobUrl('library/fanout', layer.digest), { onData: () => gotByte(), timeoutMs: 60_000 }));
    }
    await Promise.all(firstBytes);
    const upstreamGet = await stall.hit();
    assert.equal(upstreamGet.outcome, undefined, 'every client had bytes while the upstream transfer was still open');
    stall.clear();
    const results = await Promise.all(clients);
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.equal(r.outcome, 'complete');
      assert.equal(digestOf(r.body), layer.digest);
    }
    const gets = up.front.filter({ kind: 'blob', method: 'GET', digest: layer.digest, status: [200, 206] });
    assert.equal(gets.length, 1, up.front.dump());
    // The final byte goes out once the bytes are verified, while the commit (fsync, rename) runs.
    await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === layer.digest);
    assert.ok(committedBlobs(hc.storagePath).includes(layer.digest));
  });

  it('concurrent misses of one manifest share one upstream GET and one token request', async () => {
    const img = await makeImage('docker', { seed: 'fills-manifest', layerSize: 64 * 1024, layers: 1 });
    images.push(img);
    await up.push(img, 'library/together', '1');
    up.front.reset();
    up.tokenServer.reset();
    const all = await Promise.all(Array.from({ length: 10 }, () => rawRequest(`${hc.url}/v2/library/together/manifests/1`, { headers: { accept: ACCEPT } })));
    for (const r of all) assert.ok(r.body.equals(img.manifest));
    assert.equal(up.front.count({ kind: 'manifest', method: 'GET', status: 200 }), 1, up.front.dump());
    assert.equal(up.tokenServer.stats.issued, 1, 'one token for the ten');
  });

  it('the fill belongs to the cache: the first client leaving does not stop it', async () => {
    const img = await seeded(up, 'library/leaver', 'fills-leaver');
    images.push(img);
    const layer = img.layers[0]!;
    up.front.reset();
    const stall = up.front.inject({ type: 'stall', afterBytes: 512 * 1024, when: { kind: 'blob', digest: layer.digest } });
    const partial = await rawRequest(blobUrl('library/leaver', layer.digest), { stopAfterBytes: 1 });
    assert.equal(partial.status, 200);
    await stall.hit();
    stall.clear();
    await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === layer.digest);
    up.front.reset();
    const again = await rawRequest(blobUrl('library/leaver', layer.digest));
    assert.equal(again.headers['x-hubcache-cache'], 'hit');
    assert.equal(digestOf(again.body), layer.digest);
    assert.equal(up.front.requests.length, 0);
  });

  it('an upstream connection cut mid-blob is resumed with Range: the client gets a complete, correct body', async () => {
    const img = await seeded(up, 'library/resume', 'fills-resume');
    images.push(img);
    const layer = img.layers[0]!;
    up.front.reset();
    up.front.inject({ type: 'truncate', afterBytes: MiB, times: 1, when: { kind: 'blob', digest: layer.digest } });
    const r = await rawRequest(blobUrl('library/resume', layer.digest), { timeoutMs: 60_000 });
    assert.equal(r.outcome, 'complete');
    assert.equal(digestOf(r.body), layer.digest);
    const gets = up.front.filter({ kind: 'blob', method: 'GET', digest: layer.digest, status: [200, 206] });
    assert.equal(gets.length, 2);
    assert.equal(gets[0]!.outcome, 'truncated');
    assert.match(gets[1]!.rangeHeader ?? '', /^bytes=\d+-$/);
    // The final byte goes out once the bytes are verified, while the commit (fsync, rename) runs.
    await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === layer.digest);
    assert.ok(committedBlobs(hc.storagePath).includes(layer.digest));
  });

  it('when resuming keeps failing, every client connection is aborted and nothing is committed', async () => {
    const img = await seeded(up, 'library/broken', 'fills-broken');
    images.push(img);
    const layer = img.layers[0]!;
    up.front.inject({ type: 'truncate', afterBytes: 64 * 1024, when: { kind: 'blob', digest: layer.digest } });
    const [a, b] = await Promise.all([rawRequest(blobUrl('library/broken', layer.digest), { timeoutMs: 60_000 }), rawRequest(blobUrl('library/broken', layer.digest), { timeoutMs: 60_000 })]);
    for (const r of [a, b]) {
      assert.equal(r.outcome, 'error', 'never a clean end with missing bytes');
      assert.ok(r.body.length < layer.size);
    }
    await hc.waitForLog((l) => l.message === 'fill failed' && l.digest === layer.digest);
    assert.ok(!committedBlobs(hc.storagePath).includes(layer.digest));
    up.front.clearFaults();
    const later = await rawRequest(blobUrl('library/broken', layer.digest));
    assert.equal(later.headers['x-hubcache-cache'], 'miss');
    assert.equal(digestOf(later.body), layer.digest);
  });

  it('wrong bytes from upstream: clients are aborted, nothing is committed, the next request fetches again', async () => {
    const img = await seeded(up, 'library/wrong', 'fills-wrong');
    images.push(img);
    const layer = img.layers[0]!;
    up.front.reset();
    up.front.inject({ type: 'wrongBytes', times: 1, when: { kind: 'blob', digest: layer.digest } });
    const r = await rawRequest(blobUrl('library/wrong', layer.digest), { timeoutMs: 60_000 });
    assert.equal(r.status, 200);
    assert.equal(r.outcome, 'error', 'the connection is aborted, not ended cleanly');
    assert.ok(r.body.length < layer.size, 'the final bytes were held back until verification');
    const failed = await hc.waitForLog((l) => l.message === 'fill failed' && l.digest === layer.digest);
    assert.equal(failed.reason, 'digest_mismatch');
    assert.ok(!committedBlobs(hc.storagePath).includes(layer.digest));
    const again = await rawRequest(blobUrl('library/wrong', layer.digest));
    assert.equal(again.outcome, 'complete');
    assert.equal(digestOf(again.body), layer.digest);
    assert.equal(up.front.count({ kind: 'blob', method: 'GET', digest: layer.digest, status: 200 }), 2, 'fetched again');
    // The final byte goes out once the bytes are verified, while the commit (fsync, rename) runs.
    await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === layer.digest);
    assert.ok(committedBlobs(hc.storagePath).includes(layer.digest));
  });
});

describe('an upstream that goes silent mid-blob', () => {
  let up: Upstream;
  let hc: HubcacheProcess;
  let img: TestImage;
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-e2e-idle-'));

  before(async () => {
    up = await startUpstream();
    img = await seeded(up, 'library/silent', 'fills-silent');
    const config = join(dir, 'hubcache.yaml');
    writeFileSync(config, 'upstreamClient:\n  bodyIdleTimeout: 500ms\n');
    hc = await startHubcacheProcess({ upstream: up, config });
  });
  after(async () => {
    await hc?.close();
    await up?.close();
    img?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is dropped after the body-idle timeout and the download resumes with Range', async () => {
    const layer = img.layers[0]!;
    const stall = up.front.inject({ type: 'stall', afterBytes: MiB, times: 1, when: { kind: 'blob', digest: layer.digest } });
    const r = await rawRequest(`${hc.url}/v2/library/silent/blobs/${layer.digest}`, { timeoutMs: 60_000 });
    assert.equal(r.outcome, 'complete');
    assert.equal(digestOf(r.body), layer.digest);
    assert.equal(stall.hits, 1);
    const resumed = await hc.waitForLog((l) => l.message === 'fill resumed' && l.digest === layer.digest);
    assert.ok(Number(resumed.offset) >= MiB);
    const gets = up.front.filter({ kind: 'blob', method: 'GET', digest: layer.digest, status: [200, 206] });
    assert.equal(gets.length, 2);
    assert.equal(gets[1]!.rangeHeader, `bytes=${resumed.offset}-`);
  });
});

describe('when the upstream fails', () => {
  let up: Upstream;
  let hc: HubcacheProcess;
  let cached: TestImage;
  let uncached: TestImage;
  const scratch = mkdtempSync(join(tmpdir(), 'hubcache-e2e-fail-'));
  let n = 0;
  const dest = () => join(scratch, `copy-${n++}`);

  before(async () => {
    up = await startUpstream({ rateLimit: true });
    [cached, uncached] = await Promise.all([
      makeImage('docker', { seed: 'fail-cached', layerSize: MiB / 2 }),
      makeImage('docker', { seed: 'fail-uncached', layerSize: MiB / 2 }),
    ]);
    await up.push(cached, 'library/cached', '1.0');
    await up.push(uncached, 'library/uncached', '1.0');
    // TTL 0: every pull by tag wants to revalidate, so each one meets the failing upstream.
    hc = await startHubcacheProcess({ upstream: up, args: ['--tag-ttl', '0s'] });
    await skopeoCopy(`docker://${hc.host}/library/cached:1.0`, `dir:${dest()}`);
  });
  let isDown = false;
  afterEach(async () => {
    up.front.clearFaults();
    if (isDown) await up.front.up();
    isDown = false;
  });
  after(async () => {
    await hc?.close();
    await up?.close();
    cached?.dispose();
    uncached?.dispose();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('upstream down: cached images still pull with skopeo (served stale), uncached ones fail with a clear error', async () => {
    await up.front.down();
    isDown = true;
    const d = dest();
    await skopeoCopy(`docker://${hc.host}/library/cached:1.0`, `dir:${d}`);
    assert.equal(digestOf(readFileSync(join(d, 'manifest.json'))), cached.digest);
    const r = await rawRequest(`${hc.url}/v2/library/cached/manifests/1.0`, { headers: { accept: ACCEPT } });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-hubcache-cache'], 'stale');
    assert.equal(r.headers['x-hubcache-stale'], 'unavailable');
    assert.match(String(r.headers.warning), /^110 /);
    await hc.waitForLog((l) => l.message === 'stale served' && l.repository === 'library/cached');

    await assert.rejects(skopeoCopy(`docker://${hc.host}/library/uncached:1.0`, `dir:${dest()}`), (err: SkopeoError) => {
      assert.match(err.message, /503|unavailable/i);
      return true;
    });
    const miss = await rawRequest(`${hc.url}/v2/library/uncached/manifests/1.0`, { headers: { accept: ACCEPT } });
    assert.equal(miss.status, 503);
    const body = JSON.parse(miss.body.toString());
    assert.equal(body.errors[0].code, 'UNAVAILABLE');
  });

  it('upstream 5xx: the cached copy is served stale', async () => {
    up.front.inject({ type: 'status', status: 503, when: { kind: 'manifest' } });
    const r = await rawRequest(`${hc.url}/v2/library/cached/manifests/1.0`, { headers: { accept: ACCEPT } });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-hubcache-cache'], 'stale');
    assert.ok(r.body.equals(cached.manifest));
  });

  it('429 with nothing cached reaches the client as 429 TOOMANYREQUESTS with the rate-limit headers; with a copy it is served stale', async () => {
    up.front.inject({ type: 'rateLimit', retryAfter: 60, when: { kind: 'manifest' } });
    up.front.reset();
    const r = await rawRequest(`${hc.url}/v2/library/uncached/manifests/1.0`, { headers: { accept: ACCEPT } });
    assert.equal(r.status, 429);
    assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'TOOMANYREQUESTS');
    assert.equal(r.headers['ratelimit-remaining'], '0;w=21600');
    assert.match(String(r.headers['ratelimit-limit']), /;w=21600$/);
    assert.equal(r.headers['retry-after'], '60');
    assert.equal(up.front.count({ kind: 'manifest', status: 429 }), 1, 'a 429 is never retried blindly');
    const stale = await rawRequest(`${hc.url}/v2/library/cached/manifests/1.0`, { headers: { accept: ACCEPT } });
    assert.equal(stale.status, 200);
    assert.equal(stale.headers['x-hubcache-stale'], 'rate-limited');
  });
});

describe('restarts and crashes', () => {
  let up: Upstream;
  let image: TestImage;
  const storagePath = mkdtempSync(join(tmpdir(), 'hubcache-e2e-restart-'));
  const scratch = mkdtempSync(join(tmpdir(), 'hubcache-e2e-restart-copy-'));

  before(async () => {
    up = await startUpstream();
    image = await makeImage('docker', { seed: 'restart', layerSize: MiB });
    await up.push(image, 'library/keep', '1.0');
  });
  after(async () => {
    await up?.close();
    image?.dispose();
    rmSync(storagePath, { recursive: true, force: true });
    rmSync(scratch, { recursive: true, force: true });
  });

  it('a restart keeps the cache; hubcache starts and serves it with the upstream unreachable', async () => {
    let hc = await startHubcacheProcess({ upstream: up, storagePath, args: ['--tag-ttl', '10m'] });
    await skopeoCopy(`docker://${hc.host}/library/keep:1.0`, `dir:${join(scratch, 'a')}`);
    assert.equal(await hc.stop(), 0);

    await up.front.down();
    hc = await startHubcacheProcess({ upstream: up, storagePath, args: ['--tag-ttl', '10m'] });
    try {
      up.front.reset();
      const d = join(scratch, 'b');
      await skopeoCopy(`docker://${hc.host}/library/keep:1.0`, `dir:${d}`);
      assert.equal(digestOf(readFileSync(join(d, 'manifest.json'))), image.digest);
      assert.equal(up.front.requests.length, 0, 'served from the store alone');
      const ready = await rawRequest(`${hc.url}/readyz`);
      assert.equal(ready.status, 200, 'ready without an upstream');
    } finally {
      await hc.stop();
      await up.front.up();
    }
  });

  it('a crash mid-fill leaves nothing partial visible; leftover temp files are removed at start', async () => {
    const big = await makeImage('oci', { seed: 'crash', layerSize: 4 * MiB, layers: 1, filesPerLayer: 1 });
    await up.push(big, 'library/crash', 'v1');
    const layer = big.layers[0]!;
    let hc = await startHubcacheProcess({ upstream: up, storagePath });
    const stall = up.front.inject({ type: 'stall', afterBytes: MiB, when: { kind: 'blob', digest: layer.digest } });
    const partial = rawRequest(`${hc.url}/v2/library/crash/blobs/${layer.digest}`, { timeoutMs: 30_000 });
    await stall.hit();
    await hc.waitForLog((l) => l.message === 'fill started' && l.digest === layer.digest);
    assert.ok(tmpFiles(storagePath).length > 0, 'the fill writes to a temp file');
    await hc.stop('SIGKILL');
    assert.equal((await partial).outcome, 'error');
    up.front.clearFaults();
    assert.ok(!committedBlobs(storagePath).includes(layer.digest));

    hc = await startHubcacheProcess({ upstream: up, storagePath });
    try {
      const swept = await hc.waitForLog((l) => l.message === 'leftover temp files removed');
      assert.ok(Number(swept.count) >= 1);
      assert.deepEqual(tmpFiles(storagePath), []);
      const r = await rawRequest(`${hc.url}/v2/library/crash/blobs/${layer.digest}`);
      assert.equal(r.headers['x-hubcache-cache'], 'miss');
      assert.equal(digestOf(r.body), layer.digest);
    } finally {
      await hc.stop();
      big.dispose();
    }
  });
});
