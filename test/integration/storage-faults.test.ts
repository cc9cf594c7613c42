/**
 * Storage faults (disk full, quota, read-only, I/O errors, permissions) through the HTTP layer,
 * driven by the fault-injection decorator (src/storage/testing/storage-faults.ts) over the memory
 * stores (and the filesystem store where its temp file matters): a fill that can't be written
 * counts as `storage_error`, the store turns degraded (hubcache_store_writable 0, logged once with
 * errno and path); blobs and manifests not cached are passed through from upstream, verified and
 * not cached (a blob's last byte waits for its digest: wrong bytes abort the connection); a fill
 * whose store fails mid-way goes on for its clients; a stored copy that can't be read is served
 * from upstream; cached content is still served, and everything comes back without a restart once
 * the store takes writes again. The same with a real full tmpfs and a real process:
 * test/e2e/disk-full.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { Digest } from '../../src/domain/digest.js';
import type { BlobStore } from '../../src/storage/blob-store.js';
import { FsBlobStore } from '../../src/storage/fs/fs-blob-store.js';
import { MemoryBlobStore } from '../../src/storage/memory/memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../../src/storage/memory/memory-manifest-store.js';
import type { StorageFaultErrno } from '../../src/storage/storage-fault.js';
import { StoreHealth } from '../../src/storage/store-health.js';
import { StorageFaults, storageErrnoError } from '../../src/storage/testing/storage-faults.js';
import { startApp, type AppHarness } from '../support/app-harness.js';
import { ERROR_CODES } from '../../src/domain/errors.js';
import { parseOciError, putImage, seededBytes } from '../support/oci-fixtures.js';

interface Rig {
  readonly hc: AppHarness;
  readonly faults: StorageFaults;
  readonly health: StoreHealth;
  readonly stores: { blobs: BlobStore; manifests: MemoryManifestStore; metadata: MemoryMetadataStore };
  readonly faultsSeen: Array<{ errno: string; path?: string }>;
  /** The store's probe fails with this errno while set (the disk is full), works when undefined. */
  full: StorageFaultErrno | undefined;
}

async function withRig(fn: (rig: Rig) => Promise<void>, blobs: BlobStore = new MemoryBlobStore()): Promise<void> {
  const faults = new StorageFaults();
  const stores = { blobs, manifests: new MemoryManifestStore(), metadata: new MemoryMetadataStore() };
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
const passThrough = (hc: AppHarness, kind: 'blob' | 'blob_range' | 'manifest') => hc.metrics.value('hubcache_passthrough_requests_total', { kind });
const blobGets = (hc: AppHarness, digest: string) => hc.upstreamServer.count((r) => r.method === 'GET' && r.url.includes(`/blobs/${digest}`));
const unhandled = (hc: AppHarness) => hc.logs.filter((l) => l.message === 'unhandled error');

/** A blob only upstream has (no image needed: blobs are fetched by digest). */
function upstreamBlob(hc: AppHarness, seed: string, size: number): { digest: Digest; bytes: Buffer } {
  const bytes = seededBytes(seed, size);
  return { digest: hc.registry.putBlob(bytes), bytes };
}

/**
 * The upstream answers the next GET of `digest` with its first `at` bytes, then holds the rest
 * until `open()`: a download in flight, at a known point, while the test changes the store.
 */
function gateBlob(hc: AppHarness, digest: Digest, at: number) {
  const bytes = hc.registry.blobs.get(digest)!;
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  let armed = true;
  const previous = hc.registry.hook;
  hc.registry.hook = (req, res) => {
    if (previous?.(req, res)) return true;
    if (!armed || req.method !== 'GET' || !req.url?.includes(`/blobs/${digest}`) || req.headers.range) return false;
    armed = false;
    res.writeHead(200, { 'content-length': bytes.length, 'content-type': 'application/octet-stream' });
    res.write(bytes.subarray(0, at));
    void opened.then(() => res.end(bytes.subarray(at)));
    return true;
  };
  return { open };
}

/**
 * A client reading a blob as it comes: `until(n)` resolves once it has `n` bytes; `rest()` reads to
 * the end (rejects on a broken transfer); `received()` counts the bytes it got.
 */
async function streamingClient(hc: AppHarness, path: string) {
  const res = await fetch(`${hc.url}${path}`);
  const reader = res.body!.getReader();
  const chunks: Buffer[] = [];
  let got = 0;
  const until = async (n: number) => {
    while (got < n) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(Buffer.from(value));
      got += value.length;
    }
    return got;
  };
  return { status: res.status, until, rest: async () => (await until(Infinity), Buffer.concat(chunks)), received: () => got };
}

describe('storage faults', () => {
  it('a fill whose writes fail (ENOSPC) is a storage_error and its client still gets the blob; the store turns degraded; blobs not cached are passed through verified, not cached; cached ones still served; recovery without restart', async () => {
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
      // The fill that hits the full disk: its client gets the bytes (pass-through, see below).
      const first = await hc.pull(`/v2/library/app/blobs/${newLayer!.digest}`);
      assert.equal(first.status, 200);
      assert.deepEqual(first.body, newLayer!.bytes);
      await hc.settle();
      assert.equal(await hc.metrics.value('hubcache_fills_failed_total', { reason: 'storage_error' }), failedBefore + 1, 'counted as storage_error, not upstream_error');
      assert.equal(await hc.metrics.value('hubcache_fills_failed_total', { reason: 'upstream_error' }), 0);
      assert.equal(await writable(hc), 0);
      assert.deepEqual(rig.faultsSeen, [{ errno: 'ENOSPC', path: '/injected/store' }], 'reported once, with errno and path');

      // Degraded: a blob not cached is passed through from upstream, verified, and not cached.
      const before = blobGets(hc, newLayer!.digest);
      const passedBefore = await passThrough(hc, 'blob');
      const res = await hc.pull(`/v2/library/app/blobs/${newLayer!.digest}`);
      assert.equal(res.status, 200);
      assert.deepEqual(res.body, newLayer!.bytes);
      assert.equal(res.cache, 'miss');
      assert.equal(blobGets(hc, newLayer!.digest), before + 1, 'its own upstream request');
      assert.equal(await passThrough(hc, 'blob'), passedBefore + 1);
      assert.equal(await hc.metrics.value('hubcache_passthrough_bytes_total', { kind: 'blob' }) >= newLayer!.bytes.length, true);
      assert.equal(await rig.stores.blobs.stat(newLayer!.digest), undefined, 'not cached');
      assert.ok(hc.logs.some((l) => l.message === 'blob passed through, not cached' && l.digest === newLayer!.digest && l.reason === 'degraded'));
      // Cached content is still served, and /readyz stays 200, degraded.
      const cached = await hc.pull(`/v2/library/app/blobs/${cachedLayer!.digest}`);
      assert.equal(cached.status, 200);
      assert.deepEqual(cached.body, cachedLayer!.bytes);
      const ready = await hc.fetch('/readyz');
      assert.equal(ready.status, 200);
      assert.deepEqual(await ready.json(), { status: 'degraded', checks: { config: true, storeWritable: false } });
      assert.equal(unhandled(hc).length, 0, 'never a 500 UNKNOWN');

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
    it(`a fill that can't create its temp file (${errno}) is counted as storage_error; its client gets the blob passed through, verified`, async () => {
      await withRig(async (rig) => {
        const { hc, faults } = rig;
        const image = putImage(hc.registry, 'library/app', '1', { seed: errno, layerSizes: [1000] });
        faults.fail('blobs.create', errno, 1);
        const res = await hc.pull(`/v2/library/app/blobs/${image.layers[0]!.digest}`);
        assert.equal(res.status, 200, res.body.toString());
        assert.deepEqual(res.body, image.layers[0]!.bytes);
        assert.equal(await passThrough(hc, 'blob'), 1);
        assert.deepEqual(rig.faultsSeen.map((f) => f.errno), [errno]);
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

describe('storage faults: blob pass-through', () => {
  const MiB = 1024 * 1024;
  const degrade = async (rig: Rig) => {
    rig.full = 'ENOSPC';
    assert.equal(await rig.health.check(), false);
  };

  it('while degraded, wrong bytes from upstream: the client gets all but the last byte, then a broken transfer; nothing stored', async () => {
    await withRig(async (rig) => {
      const { hc } = rig;
      const blob = upstreamBlob(hc, 'mismatch', 300 * 1024);
      const wrong = Buffer.from(blob.bytes);
      wrong[1000] ^= 0xff;
      hc.registry.blobs.set(blob.digest, wrong);
      await degrade(rig);
      const client = await streamingClient(hc, `/v2/library/app/blobs/${blob.digest}`);
      assert.equal(client.status, 200);
      await assert.rejects(client.rest());
      assert.equal(client.received(), blob.bytes.length - 1, 'the last byte waits for the digest and never comes');
      const aborted = await hc.waitForLog((l) => l.message === 'blob pass-through aborted');
      assert.match(String(aborted.error), /digest did not match/);
      assert.equal(await rig.stores.blobs.stat(blob.digest), undefined);
      assert.equal(unhandled(hc).length, 0);
    });
  });

  it('while degraded, a Range is served by an upstream Range (206, not verifiable), counted as blob_range', async () => {
    await withRig(async (rig) => {
      const { hc } = rig;
      const blob = upstreamBlob(hc, 'range', 64 * 1024);
      await degrade(rig);
      const res = await hc.pull(`/v2/library/app/blobs/${blob.digest}`, { headers: { range: 'bytes=1000-1999' } });
      assert.equal(res.status, 206);
      assert.equal(res.headers.get('content-range'), `bytes 1000-1999/${blob.bytes.length}`);
      assert.deepEqual(res.body, blob.bytes.subarray(1000, 2000));
      assert.ok(hc.upstreamServer.requests.some((r) => r.method === 'GET' && r.url.includes(blob.digest) && r.headers.range === 'bytes=1000-'), 'asked upstream for a Range');
      assert.equal(await passThrough(hc, 'blob_range'), 1);
      assert.equal(await hc.metrics.value('hubcache_passthrough_bytes_total', { kind: 'blob_range' }), 1000);
      assert.equal(await passThrough(hc, 'blob'), 0);
    });
  });

  it('a fill whose store write fails mid-way (ENOSPC, filesystem store): its leader and its follower keep receiving, verified; storage_error once; no temp file; a later client passes through on its own', async () => {
    const root = await mkdtemp(join(tmpdir(), 'hubcache-faults-'));
    try {
      await withRig(async (rig) => {
        const { hc, faults } = rig;
        const blob = upstreamBlob(hc, 'midway', 12 * MiB);
        const at = Math.floor(blob.bytes.length * 0.6);
        const gate = gateBlob(hc, blob.digest, at);
        const path = `/v2/library/app/blobs/${blob.digest}`;
        const leader = await streamingClient(hc, path);
        await leader.until(at);
        const follower = await streamingClient(hc, path);
        await follower.until(MiB);
        assert.equal(await hc.metrics.value('hubcache_coalesced_requests_total', { kind: 'blob' }), 1, 'the follower joined the fill');
        // The disk fills up at 60 %: the next write of the fill fails.
        faults.fail('writer.write', 'ENOSPC');
        rig.full = 'ENOSPC';
        gate.open();
        const lost = await hc.waitForLog((l) => l.message === 'fill lost its store: its clients go on from upstream, not cached');
        assert.equal(lost.errno, 'ENOSPC');
        assert.equal(lost.readers, 2);
        assert.equal(await writable(hc), 0, 'degraded at once');
        // Nobody joins a fill that lost its store: a new client gets a pass-through of its own.
        const late = await hc.pull(path);
        assert.equal(late.status, 200);
        assert.deepEqual(late.body, blob.bytes);
        assert.equal(blobGets(hc, blob.digest), 2);
        const [a, b] = await Promise.all([leader.rest(), follower.rest()]);
        assert.ok(a.equals(blob.bytes), 'the leader got every byte, verified');
        assert.ok(b.equals(blob.bytes), 'the follower too');
        await hc.settle();
        assert.equal(await hc.metrics.value('hubcache_fills_failed_total', { reason: 'storage_error' }), 1);
        assert.equal(await hc.metrics.value('hubcache_fills_in_flight'), 0);
        assert.equal(await passThrough(hc, 'blob'), 3, 'the two readers of the fill, and the late client');
        assert.ok(hc.logs.some((l) => l.message === 'fill passed through, not cached' && l.digest === blob.digest));
        assert.equal(await rig.stores.blobs.stat(blob.digest), undefined, 'not cached');
        assert.deepEqual(await readdir(join(root, 'tmp')), [], 'no temp file left');
        assert.equal(unhandled(hc).length, 0);

        // Space returns: the next pull fills and commits.
        faults.heal();
        rig.full = undefined;
        assert.deepEqual((await hc.pull(path)).body, blob.bytes);
        await hc.settle();
        assert.ok(await rig.stores.blobs.stat(blob.digest));
      }, new FsBlobStore({ root }));
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('a fill that lost its store mid-way and then gets wrong bytes: its readers are aborted before the last byte; nothing stored', async () => {
    await withRig(async (rig) => {
      const { hc, faults } = rig;
      const blob = upstreamBlob(hc, 'midway-wrong', 2 * MiB);
      const wrong = Buffer.from(blob.bytes);
      wrong[wrong.length - 10] ^= 0xff;
      hc.registry.blobs.set(blob.digest, wrong);
      const at = Math.floor(blob.bytes.length * 0.6);
      const gate = gateBlob(hc, blob.digest, at);
      const leader = await streamingClient(hc, `/v2/library/app/blobs/${blob.digest}`);
      await leader.until(at);
      faults.fail('writer.write', 'ENOSPC');
      gate.open();
      await assert.rejects(leader.rest());
      assert.ok(leader.received() < blob.bytes.length);
      await hc.settle();
      assert.ok(hc.logs.some((l) => l.message === 'fill lost its store: its clients go on from upstream, not cached'));
      assert.equal(await hc.metrics.value('hubcache_fills_failed_total', { reason: 'storage_error' }), 1);
      assert.equal(await hc.metrics.value('hubcache_fills_failed_total', { reason: 'digest_mismatch' }), 0, 'counted once, as what it was first');
      assert.equal(await rig.stores.blobs.stat(blob.digest), undefined);
    });
  });
});

describe('storage faults: reads', () => {
  for (const point of ['blobs.stat', 'blobs.open'] as const) {
    it(`a stored blob that can't be read (${point} EIO) before the response: served from upstream, verified; logged with errno and path, counted`, async () => {
      await withRig(async (rig) => {
        const { hc, faults } = rig;
        const blob = upstreamBlob(hc, point, 100 * 1024);
        const path = `/v2/library/app/blobs/${blob.digest}`;
        await hc.pull(path);
        await hc.settle();
        faults.fail(point, 'EIO', 1);
        const res = await hc.pull(path);
        assert.equal(res.status, 200);
        assert.deepEqual(res.body, blob.bytes);
        assert.equal(res.cache, 'miss');
        assert.equal(blobGets(hc, blob.digest), 2);
        assert.equal(await hc.metrics.value('hubcache_store_read_errors_total', { kind: 'blob' }), 1);
        assert.equal(await passThrough(hc, 'blob'), 1);
        const line = hc.logs.find((l) => l.message === 'store read failed')!;
        assert.deepEqual([line.level, line.errno, line.path, line.digest, line.then], ['error', 'EIO', '/injected/store', blob.digest, 'served from upstream']);
        assert.equal(await writable(hc), 1, 'a read fault does not stop writes');
        assert.equal((await hc.pull(path)).cache, 'hit', 'the next read works again');
      });
    });
  }

  it('a stored blob that can\'t be read (EIO) while the upstream can\'t serve it either: 503 STORAGE_UNAVAILABLE, errno and the upstream\'s answer in the detail', async () => {
    await withRig(async (rig) => {
      const { hc, faults } = rig;
      const blob = upstreamBlob(hc, 'both-gone', 10 * 1024);
      const path = `/v2/library/app/blobs/${blob.digest}`;
      await hc.pull(path);
      await hc.settle();
      hc.registry.blobs.delete(blob.digest);
      faults.fail('blobs.open', 'EIO', 1);
      const res = await hc.pull(path);
      assert.equal(res.status, 503);
      const err = parseOciError(res.body.toString());
      assert.equal(err.code, 'STORAGE_UNAVAILABLE');
      assert.equal(ERROR_CODES.STORAGE_UNAVAILABLE.status, 503);
      assert.equal((err.detail as { errno: string }).errno, 'EIO');
      assert.match((err.detail as { upstream: string }).upstream, /404|unknown|not found/i);
      assert.equal(await hc.metrics.value('hubcache_store_read_errors_total', { kind: 'blob' }), 1);
      assert.equal(unhandled(hc).length, 0);
    });
  });

  it('a stored blob whose read fails (EIO) after the body started: the connection is aborted, logged once with errno and path, counted', async () => {
    await withRig(async (rig) => {
      const { hc, faults } = rig;
      const blob = upstreamBlob(hc, 'body-eio', 200 * 1024);
      const path = `/v2/library/app/blobs/${blob.digest}`;
      await hc.pull(path);
      await hc.settle();
      faults.failBody('EIO', 50 * 1024, 1);
      const client = await streamingClient(hc, path);
      assert.equal(client.status, 200);
      await assert.rejects(client.rest());
      assert.ok(client.received() < blob.bytes.length);
      const line = await hc.waitForLog((l) => l.message === 'store read failed');
      assert.deepEqual([line.errno, line.path, line.digest, line.then], ['EIO', '/injected/store', blob.digest, 'connection aborted']);
      assert.equal(hc.logs.filter((l) => l.message === 'store read failed').length, 1);
      assert.equal(await hc.metrics.value('hubcache_store_read_errors_total', { kind: 'blob' }), 1);
      assert.equal(unhandled(hc).length, 0, 'never a 500 UNKNOWN');
    });
  });

  for (const [point, kind] of [['manifests.get', 'manifest'], ['metadata.getTag', 'metadata'], ['metadata.hasManifest', 'metadata']] as const) {
    it(`a stored manifest that can't be read (${point} EIO): served from upstream, verified; counted as ${kind}`, async () => {
      await withRig(async (rig) => {
        const { hc, faults } = rig;
        const image = putImage(hc.registry, 'library/app', '1', { seed: point });
        const path = point === 'metadata.getTag' ? '/v2/library/app/manifests/1' : `/v2/library/app/manifests/${image.digest}`;
        assert.equal((await hc.pull(path)).status, 200);
        faults.fail(point, 'EIO', 1);
        const res = await hc.pull(path);
        assert.equal(res.status, 200, res.body.toString());
        assert.deepEqual(res.body, image.manifest);
        assert.equal(res.digest, image.digest);
        assert.equal(await hc.metrics.value('hubcache_store_read_errors_total', { kind }), 1);
        assert.ok(hc.logs.some((l) => l.message === 'store read failed' && l.errno === 'EIO' && l.then === 'served from upstream'));
        assert.equal(unhandled(hc).length, 0);
      });
    });
  }
});
