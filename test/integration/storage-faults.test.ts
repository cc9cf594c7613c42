/**
 * Storage faults (disk full, quota, read-only, I/O errors, permissions) through the HTTP layer,
 * driven by the fault-injection decorator (src/storage/testing/storage-faults.ts) over the memory
 * stores: a fill that can't be written counts as `storage_error`, the store turns degraded
 * (hubcache_store_writable 0, logged once with errno and path), blobs not cached get 503
 * STORAGE_UNAVAILABLE, manifests pass through verified and uncached, cached content is still
 * served, and everything comes back without a restart once the store takes writes again.
 * The same with a real full tmpfs and a real process: test/e2e/disk-full.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ERROR_CODES } from '../../src/domain/errors.js';
import { MemoryBlobStore } from '../../src/storage/memory/memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../../src/storage/memory/memory-manifest-store.js';
import type { StorageFaultErrno } from '../../src/storage/storage-fault.js';
import { StoreHealth } from '../../src/storage/store-health.js';
import { StorageFaults, storageErrnoError } from '../../src/storage/testing/storage-faults.js';
import { startApp, type AppHarness } from '../support/app-harness.js';
import { parseOciError, putImage } from '../support/oci-fixtures.js';

interface Rig {
  readonly hc: AppHarness;
  readonly faults: StorageFaults;
  readonly health: StoreHealth;
  readonly stores: { blobs: MemoryBlobStore; manifests: MemoryManifestStore; metadata: MemoryMetadataStore };
  readonly faultsSeen: Array<{ errno: string; path?: string }>;
  /** The store's probe fails with this errno while set (the disk is full), works when undefined. */
  full: StorageFaultErrno | undefined;
}

async function withRig(fn: (rig: Rig) => Promise<void>): Promise<void> {
  const faults = new StorageFaults();
  const stores = { blobs: new MemoryBlobStore(), manifests: new MemoryManifestStore(), metadata: new MemoryMetadataStore() };
  const faultsSeen: Rig['faultsSeen'] = [];
  let hc: AppHarness | undefined;
  const rig = { faults, stores, faultsSeen, full: undefined } as unknown as Rig & { full: StorageFaultErrno | undefined };
  const health = new StoreHealth({
    probe: async () => {
      if (rig.full) throw storageErrnoError(rig.full, 'write', '/store/tmp/.ready');
    },
    onChange: (w) => hc?.metrics.storeWritable(w),
    onStorageFull: (f) => faultsSeen.push(f),
    recheckMs: 0,
  });
  hc = await startApp({
    stores: { blobs: faults.blobs(stores.blobs), manifests: faults.manifests(stores.manifests), metadata: faults.metadata(stores.metadata) },
    storeHealth: health,
    readiness: async () => ({ checks: { config: true }, degraded: { storeWritable: await health.check() } }),
  });
  Object.assign(rig, { hc, health });
  try {
    await fn(rig);
  } finally {
    await hc.close();
  }
}

const writable = (hc: AppHarness) => hc.metrics.value('hubcache_store_writable');

describe('storage faults', () => {
  it('a fill whose writes fail (ENOSPC) is a storage_error; the store turns degraded; blobs not cached are 503 STORAGE_UNAVAILABLE, cached ones still served; recovery without restart', async () => {
    await withRig(async (rig) => {
      const { hc, faults } = rig;
      const image = putImage(hc.registry, 'library/app', '1', { seed: 'full', layerSizes: [4096, 4096] });
      const [cachedLayer, newLayer] = image.layers;
      assert.equal((await hc.pull(`/v2/library/app/blobs/${cachedLayer!.digest}`)).status, 200);
      await hc.settle();
      assert.equal(await writable(hc), 1);

      faults.fail('writer.write', 'ENOSPC');
      rig.full = 'ENOSPC';
      const failedBefore = await hc.metrics.value('hubcache_fills_failed_total', { reason: 'storage_error' });
      // The first client of the fill that hits the full disk: its body breaks (headers were out).
      await hc.pull(`/v2/library/app/blobs/${newLayer!.digest}`).catch(() => undefined);
      await hc.settle();
      assert.equal(await hc.metrics.value('hubcache_fills_failed_total', { reason: 'storage_error' }), failedBefore + 1, 'counted as storage_error, not upstream_error');
      assert.equal(await hc.metrics.value('hubcache_fills_failed_total', { reason: 'upstream_error' }), 0);
      assert.equal(await writable(hc), 0);
      assert.deepEqual(rig.faultsSeen, [{ errno: 'ENOSPC', path: '/injected/store' }], 'reported once, with errno and path');

      // Degraded: a blob not cached is a documented 503, without asking the upstream.
      const before = hc.upstreamServer.requests.length;
      const res = await hc.pull(`/v2/library/app/blobs/${newLayer!.digest}`);
      assert.equal(res.status, 503);
      assert.equal(parseOciError(res.body.toString()).code, 'STORAGE_UNAVAILABLE');
      assert.equal(ERROR_CODES.STORAGE_UNAVAILABLE.status, 503);
      assert.equal(hc.upstreamServer.requests.length, before);
      // Cached content is still served, and /readyz stays 200, degraded.
      const cached = await hc.pull(`/v2/library/app/blobs/${cachedLayer!.digest}`);
      assert.equal(cached.status, 200);
      assert.deepEqual(cached.body, cachedLayer!.bytes);
      const ready = await hc.fetch('/readyz');
      assert.equal(ready.status, 200);
      assert.deepEqual(await ready.json(), { status: 'degraded', checks: { config: true, storeWritable: false } });
      assert.equal(hc.logs.filter((l) => l.message === 'unhandled error').length, 0, 'never a 500 UNKNOWN');

      // Space comes back: the next miss probes, works, and the store is writable again.
      faults.heal();
      rig.full = undefined;
      const again = await hc.pull(`/v2/library/app/blobs/${newLayer!.digest}`);
      assert.equal(again.status, 200);
      assert.deepEqual(again.body, newLayer!.bytes);
      await hc.settle();
      assert.ok(await rig.stores.blobs.stat(newLayer!.digest), 'cached this time');
      assert.equal(await writable(hc), 1);
      assert.equal((await (await hc.fetch('/readyz')).json()).status, 'ready');
    });
  });

  for (const errno of ['EROFS', 'EIO', 'EACCES', 'EDQUOT'] as const) {
    it(`a fill that can't create its temp file (${errno}) is 503 STORAGE_UNAVAILABLE with the errno in the detail, counted as storage_error`, async () => {
      await withRig(async (rig) => {
        const { hc, faults } = rig;
        const image = putImage(hc.registry, 'library/app', '1', { seed: errno, layerSizes: [1000] });
        faults.fail('blobs.create', errno, 1);
        const res = await hc.pull(`/v2/library/app/blobs/${image.layers[0]!.digest}`);
        assert.equal(res.status, 503, res.body.toString());
        assert.deepEqual(parseOciError(res.body.toString()), { code: 'STORAGE_UNAVAILABLE', message: ERROR_CODES.STORAGE_UNAVAILABLE.message, detail: { errno } });
        await hc.settle();
        assert.equal(await hc.metrics.value('hubcache_fills_failed_total', { reason: 'storage_error' }), 1);
        assert.equal(await writable(hc), 0);
        assert.equal(hc.logs.filter((l) => l.message === 'unhandled error').length, 0);
      });
    });
  }

  it('the final write (commit: fsync, rename) failing with EIO is a storage_error too', async () => {
    await withRig(async (rig) => {
      const { hc, faults } = rig;
      const image = putImage(hc.registry, 'library/app', '1', { seed: 'eio', layerSizes: [1000] });
      faults.fail('writer.commit', 'EIO', 1);
      await hc.pull(`/v2/library/app/blobs/${image.layers[0]!.digest}`).catch(() => undefined);
      await hc.settle();
      assert.equal(await hc.metrics.value('hubcache_fills_failed_total', { reason: 'storage_error' }), 1);
      assert.equal(rig.health.writable, false);
    });
  });

  for (const [point, errno] of [['manifests.put', 'ENOSPC'], ['metadata.setTag', 'EDQUOT'], ['metadata.linkManifest', 'EROFS']] as const) {
    it(`a manifest the store can't take (${point} ${errno}) is passed through verified and not cached; the store turns degraded`, async () => {
      await withRig(async (rig) => {
        const { hc, faults } = rig;
        const image = putImage(hc.registry, 'library/app', '1', { seed: point });
        faults.fail(point, errno);
        for (const path of ['/v2/library/app/manifests/1', `/v2/library/app/manifests/${image.digest}`]) {
          const res = await hc.pull(path);
          assert.equal(res.status, 200, `${path}: ${res.body.toString()}`);
          assert.deepEqual(res.body, image.manifest);
          assert.equal(res.digest, image.digest);
        }
        assert.ok(faults.injected.get(point)! >= 1);
        assert.equal(await writable(hc), 0);
        assert.deepEqual(rig.faultsSeen.map((f) => f.errno), [errno]);
        if (point === 'manifests.put') assert.equal(await rig.stores.manifests.get(image.digest), undefined, 'not cached');
        assert.equal(hc.logs.filter((l) => l.message === 'unhandled error').length, 0);
      });
    });
  }
});
