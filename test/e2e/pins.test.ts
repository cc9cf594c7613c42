/**
 * Pins end to end (issue #13): a real hubcache process started with `--pin`, in front of the real
 * distribution registry (behind the token server and the recording front). The pinned
 * multi-platform image is fetched after start without any client, and skopeo copies it through
 * hubcache with every platform after the upstream was stopped.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { metricValue, startHubcacheProcess, type HubcacheProcess } from '../support/hubcache-process.js';
import { digestOf, makeIndex, type TestImage } from '../support/images.js';
import { skopeoCopy } from '../support/skopeo.js';
import { startUpstream, type Upstream } from '../support/upstream-harness.js';

describe('pins (a real hubcache in front of distribution)', () => {
  let up: Upstream;
  let hc: HubcacheProcess;
  let image: TestImage;
  const scratch = mkdtempSync(join(tmpdir(), 'hubcache-e2e-pins-'));

  before(async () => {
    image = await makeIndex('oci', { seed: 'e2e-pins', layerSize: 256 * 1024, layers: 2 });
    up = await startUpstream();
    await up.push(image, 'library/pinned', '1.0');
    up.front.reset();
  });

  after(async () => {
    await hc?.close();
    await up?.close();
    rmSync(scratch, { recursive: true, force: true });
    image?.dispose();
  });

  it('a pinned image is warm after start, before any client, and served with the upstream stopped', async () => {
    hc = await startHubcacheProcess({ upstream: up, args: ['--pin', 'pinned:1.0', '--pin-concurrency', '2'] });
    const refreshed = await hc.waitForLog((l) => l.message === 'pins refreshed');
    assert.equal(refreshed.warm, 1, JSON.stringify(refreshed));
    assert.equal(refreshed.failed, 0);
    assert.equal(up.front.count({ kind: 'blob', method: 'GET' }), image.blobs.size, 'every blob of every platform fetched once, by hubcache alone');
    const metrics = await hc.metrics();
    assert.equal(metricValue(metrics, 'hubcache_pins', { state: 'warm' }), 1);
    assert.equal(metricValue(metrics, 'hubcache_fills_committed_total'), image.blobs.size);

    await up.close();
    const dest = join(scratch, 'all');
    await skopeoCopy(`docker://${hc.host}/library/pinned:1.0`, `dir:${dest}`, { all: true });
    assert.equal(digestOf(readFileSync(join(dest, 'manifest.json'))), image.digest);
    for (const blob of image.blobs.values()) assert.equal(digestOf(readFileSync(join(dest, blob.digest.slice(7)))), blob.digest);
    assert.equal(metricValue(await hc.metrics(), 'hubcache_cache_requests_total', { kind: 'blob', outcome: 'miss' }), 0, 'every blob a hit');
  });
});
