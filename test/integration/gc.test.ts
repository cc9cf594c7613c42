/**
 * `hubcache gc` (issue #13) in-process: the admin endpoint on the metrics listener (never on the
 * registry port) runs a pass and answers its report; against a stopped store, gc takes ownership
 * like serve, and is refused while a server owns the store.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { formatSummary, gcServer, gcStore } from '../../src/commands/gc.js';
import type { PassReport } from '../../src/cache/evictor.js';
import { loadConfig } from '../../src/config/load.js';
import { sha256Digest } from '../../src/domain/digest.js';
import { MediaTypes } from '../../src/domain/media-types.js';
import { silentLogger } from '../../src/lib/logger.js';
import { StoreOwnedError } from '../../src/storage/storage.js';
import { FakeRegistry, LoopbackServer } from '../../src/upstream/testing/fake-registry.js';
import { startHostileUpstream } from '../../src/upstream/testing/hostile-registry.js';
import { startInProcess } from '../support/in-process.js';
import { ALL_MANIFESTS, putIndex, seededBytes } from '../support/oci-fixtures.js';

const KiB = 1024;

describe('hubcache gc', () => {
  it('POST /admin/gc on the metrics listener runs a pass (dry run first); the registry port has no admin endpoint', async () => {
    const up = await startHostileUpstream();
    const digests = Array.from({ length: 10 }, (_, i) => up.registry.putBlob(seededBytes(`gc-${i}`, 100 * KiB)));
    // A cap of 1 MiB high enough that the pulls alone stay under the high watermark (95%).
    const hc = await startInProcess({ config: { storage: { maxSize: '1MiB', eviction: { highWatermark: 99, lowWatermark: 50 } } }, flags: { 'upstream-url': up.url, 'metrics-listen': '127.0.0.1:0' } });
    try {
      for (const d of digests) {
        assert.equal((await fetch(`${hc.url}/v2/library/app/blobs/${d}`).then(async (r) => (await r.arrayBuffer(), r.status))), 200);
        // The last byte goes out once verified, before the commit: wait for it, so the order of use is the order of pulls.
        await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === d);
      }
      assert.notEqual(hc.hub.metricsUrl, hc.url);
      const onRegistryPort = await fetch(`${hc.url}/admin/gc`, { method: 'POST' });
      assert.equal(onRegistryPort.status, 404);
      await onRegistryPort.arrayBuffer();

      const dry = await gcServer(hc.hub.metricsUrl, true);
      assert.equal(dry.dryRun, true);
      assert.equal(dry.removed.filter((r) => r.kind === 'blob').length, 5, '1000 KiB down to 512 KiB: the 5 least recently used');
      const wet = await gcServer(hc.hub.metricsUrl, false);
      const sorted = (r: PassReport) => r.removed.map((i) => i.digest).sort();
      assert.deepEqual(sorted(wet), sorted(dry), 'the dry run said what the pass did');
      assert.deepEqual(sorted(wet), digests.slice(0, 5).sort(), 'the first five pulled');
      const metrics = await fetch(`${hc.hub.metricsUrl}/metrics`).then((r) => r.text());
      assert.match(metrics, /hubcache_evictions_total\{kind="blob",reason="lru"\} 5/);
      assert.match(metrics, /hubcache_store_max_bytes 1048576/);
      assert.match(formatSummary(wet), /^gc: removed 5 blobs, 0 manifests, 0 tags, 512.0 KB; store 512.0 KB$/);
    } finally {
      await hc.close();
      await up.close();
    }
  });

  it('against a stopped store gc takes ownership like serve; while a server owns the store it is refused (StoreOwnedError)', async () => {
    const up = await startHostileUpstream();
    const d = up.registry.putBlob(seededBytes('stopped', 50 * KiB));
    const storagePath = mkdtempSync(join(tmpdir(), 'hubcache-gc-'));
    try {
      const hc = await startInProcess({ storagePath, flags: { 'upstream-url': up.url } });
      assert.equal((await fetch(`${hc.url}/v2/library/app/blobs/${d}`).then(async (r) => (await r.arrayBuffer(), r.status))), 200);
      await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === d);
      const config = loadConfig({ env: {}, flags: { 'storage-path': storagePath, 'storage-max-size': '10KiB' } });
      await assert.rejects(gcStore(config, { dryRun: false, logger: silentLogger() }), (err: unknown) => err instanceof StoreOwnedError);
      await hc.close();
      const seen: string[] = [];
      const report: PassReport = await gcStore(config, { dryRun: false, logger: silentLogger(), onRemoved: (i) => seen.push(i.digest!) });
      assert.deepEqual(seen, [d]);
      assert.deepEqual(report.removed.map((r) => r.digest), [d]);
      assert.equal(report.storeBytesAfter, 0);
      // The lock was given back: a server starts on the store again, and the blob is fetched again.
      const again = await startInProcess({ storagePath, flags: { 'upstream-url': up.url } });
      const res = await fetch(`${again.url}/v2/library/app/blobs/${d}`);
      assert.equal(res.headers.get('x-hubcache-cache'), 'miss');
      await res.arrayBuffer();
      await again.close();
    } finally {
      rmSync(storagePath, { recursive: true, force: true });
      await up.close();
    }
  });

  it('pushed (hosted) content survives gc on a stopped store under a tiny cap and an expired retention; the cached blob beside it goes', async () => {
    const up = await startHostileUpstream();
    const cached = up.registry.putBlob(seededBytes('cached-beside-hosted', 50 * KiB));
    const storagePath = mkdtempSync(join(tmpdir(), 'hubcache-gc-hosted-'));
    try {
      const hc = await startInProcess({ storagePath, config: { hosted: { repositories: ['myorg/**'] } }, flags: { 'upstream-url': up.url } });
      const layer = seededBytes('pushed-layer', 60 * KiB);
      const config = Buffer.from('{}');
      const push = async (bytes: Buffer) => {
        const start = await fetch(`${hc.url}/v2/myorg/app/blobs/uploads/`, { method: 'POST' });
        const location = new URL(start.headers.get('location')!, hc.url);
        location.searchParams.set('digest', sha256Digest(bytes));
        assert.equal((await fetch(location, { method: 'PUT', body: new Uint8Array(bytes) })).status, 201);
      };
      await push(layer);
      await push(config);
      const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest(config), size: config.length }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256Digest(layer), size: layer.length }] }));
      assert.equal((await fetch(`${hc.url}/v2/myorg/app/manifests/v1`, { method: 'PUT', body: new Uint8Array(manifest), headers: { 'content-type': MediaTypes.ociManifest } })).status, 201);
      assert.equal((await fetch(`${hc.url}/v2/library/app/blobs/${cached}`).then(async (r) => (await r.arrayBuffer(), r.status))), 200);
      await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === cached);
      await hc.close();

      const gcConfig = loadConfig({ env: {}, flags: { 'storage-path': storagePath, 'storage-max-size': '1KiB', 'tag-retention': '1m' } });
      const report = await gcStore(gcConfig, { dryRun: false, logger: silentLogger() });
      assert.deepEqual(report.removed.map((r) => r.digest), [cached], 'only the cached blob');

      const again = await startInProcess({ storagePath, config: { hosted: { repositories: ['myorg/**'] } }, flags: { 'upstream-url': up.url } });
      try {
        const pulled = await fetch(`${again.url}/v2/myorg/app/manifests/v1`, { headers: { accept: MediaTypes.ociManifest } });
        assert.equal(pulled.status, 200);
        assert.deepEqual(Buffer.from(await pulled.arrayBuffer()), manifest);
        assert.deepEqual(Buffer.from(await (await fetch(`${again.url}/v2/myorg/app/blobs/${sha256Digest(layer)}`)).arrayBuffer()), layer);
      } finally {
        await again.close();
      }
    } finally {
      rmSync(storagePath, { recursive: true, force: true });
      await up.close();
    }
  });

  it('pinned images (cache.pin) survive gc on a stopped store under a tiny cap, resolved from the store alone (no upstream); an unpinned image beside them goes', async () => {
    const registry = new FakeRegistry();
    const pinned = putIndex(registry, 'library/nginx', '1.27', { seed: 'gc-pinned' });
    const other = putIndex(registry, 'library/other', '1', { seed: 'gc-unpinned' });
    const upstream = await LoopbackServer.start(registry.handle);
    const storagePath = mkdtempSync(join(tmpdir(), 'hubcache-gc-pins-'));
    const digestsOf = (i: typeof pinned) => [i.digest, ...i.children.flatMap((c) => [c.digest, c.config.digest, ...c.layers.map((l) => l.digest)])];
    try {
      const hc = await startInProcess({ storagePath, flags: { 'upstream-url': upstream.url } });
      try {
        // Both images pulled whole by a client (tag, platform manifests, blobs).
        for (const [repo, tag, image] of [['nginx', '1.27', pinned], ['other', '1', other]] as const) {
          assert.equal((await fetch(`${hc.url}/v2/library/${repo}/manifests/${tag}`, { headers: { accept: ALL_MANIFESTS } }).then(async (r) => (await r.arrayBuffer(), r.status))), 200);
          for (const c of image.children) {
            assert.equal((await fetch(`${hc.url}/v2/library/${repo}/manifests/${c.digest}`, { headers: { accept: ALL_MANIFESTS } }).then(async (r) => (await r.arrayBuffer(), r.status))), 200);
            for (const b of [c.config, ...c.layers]) {
              assert.equal((await fetch(`${hc.url}/v2/library/${repo}/blobs/${b.digest}`).then(async (r) => (await r.arrayBuffer(), r.status))), 200);
              await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === b.digest);
            }
          }
        }
      } finally {
        await hc.close();
      }
      // gc runs offline: the upstream is gone.
      await upstream.close();
      const flags = { 'storage-path': storagePath, 'storage-max-size': '1KiB' };
      // Without the pin, the cap takes the nginx image's content too: what protects it below is the pin.
      const unpinned = await gcStore(loadConfig({ env: {}, flags }), { dryRun: true, logger: silentLogger() });
      const wouldGo = new Set(unpinned.removed.map((r) => r.digest));
      for (const d of pinned.children.flatMap((c) => [c.config.digest, ...c.layers.map((l) => l.digest)])) assert.ok(wouldGo.has(d), `unpinned, ${d} would be evicted`);

      const file = join(storagePath, '..', `${storagePath.split('/').at(-1)}-config.yaml`);
      writeFileSync(file, 'cache:\n  pin: ["nginx:1.27"]\n');
      try {
        const report = await gcStore(loadConfig({ env: {}, file, flags }), { dryRun: false, logger: silentLogger() });
        const removed = new Set(report.removed.map((r) => r.digest));
        for (const d of digestsOf(pinned)) assert.ok(!removed.has(d), `pinned ${d} kept`);
        assert.ok(!report.removed.some((r) => r.kind === 'tag' && r.repository === 'library/nginx'), 'the pinned tag kept');
        for (const d of other.children.flatMap((c) => [c.config.digest, ...c.layers.map((l) => l.digest)])) assert.ok(removed.has(d), `unpinned blob ${d} evicted`);
      } finally {
        rmSync(file, { force: true });
      }
      // What gc kept is served from the store, with the upstream still down.
      const again = await startInProcess({ storagePath, flags: { 'upstream-url': upstream.url }, config: { upstreamClient: { retries: 1 } } });
      try {
        const tag = await fetch(`${again.url}/v2/library/nginx/manifests/1.27`, { headers: { accept: ALL_MANIFESTS } });
        assert.equal(tag.status, 200);
        assert.equal(tag.headers.get('docker-content-digest'), pinned.digest);
        await tag.arrayBuffer();
        for (const b of pinned.children.flatMap((c) => [c.config, ...c.layers])) {
          const res = await fetch(`${again.url}/v2/library/nginx/blobs/${b.digest}`);
          assert.equal(res.status, 200);
          assert.ok(Buffer.from(await res.arrayBuffer()).equals(b.bytes));
        }
      } finally {
        await again.close();
      }
    } finally {
      rmSync(storagePath, { recursive: true, force: true });
    }
  });
});
