import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError } from '../../config/load.js';
import type { StorageConfig } from '../../config/schema.js';
import { silentLogger } from '../../lib/logger.js';
import { openStorage } from '../open-storage.js';
import { describeStorage } from '../testing/storage.conformance.js';
import { FsStorage } from './fs-storage.js';
import { StoreLockedError } from './store-lock.js';

const fsConfig = (path: string): StorageConfig => ({ driver: 'filesystem', path, lockStaleAfter: 30_000, accessFlushInterval: 10_000, eviction: { highWatermark: 95, lowWatermark: 85, interval: 60_000, concurrency: 4 } });

describeStorage('FsStorage (driver: filesystem)', async () => {
  const root = await mkdtemp(join(tmpdir(), 'hubcache-storage-'));
  return { open: () => openStorage(fsConfig(root), { logger: silentLogger() }), cleanup: () => rm(root, { recursive: true, force: true }) };
});

describe('openStorage', () => {
  it('builds the filesystem driver from the storage config', () => {
    const storage = openStorage(fsConfig('/srv/hubcache'), { logger: silentLogger() });
    assert.ok(storage instanceof FsStorage);
    assert.deepEqual(storage.describe(), { driver: 'filesystem', location: '/srv/hubcache' });
    assert.equal(storage.spoolDir, '/srv/hubcache/tmp');
  });

  it('refuses a driver it does not know with a ConfigError naming the drivers there are', () => {
    assert.throws(
      () => openStorage({ driver: 'gcs', bucket: 'b' } as unknown as StorageConfig, { logger: silentLogger() }),
      (err: unknown) => err instanceof ConfigError && /storage\.driver: unknown storage driver "gcs" \(drivers: filesystem, s3\)/.test(err.message),
    );
  });
});

describe('FsStorage', () => {
  it('init() sweeps tmp/ and resolves without waiting for the usage count (which close() stops)', async () => {
    const root = await mkdtemp(join(tmpdir(), 'hubcache-storage-'));
    try {
      const previous = new FsStorage({ root, lockStaleMs: 30_000, logger: silentLogger() });
      await (await previous.acquireOwnership({ failFast: true })).release();
      await previous.init();
      await writeFile(join(root, 'tmp', 'blob-leftover'), 'x'); // a crash left it
      const next = new FsStorage({ root, lockStaleMs: 30_000, logger: silentLogger() });
      const ownership = await next.acquireOwnership({ failFast: true });
      let counted = false;
      // A walk that ends only when stopped:
      next.blobs.countUsage = (signal) => new Promise((_, reject) => signal!.addEventListener('abort', () => reject(signal!.reason)));
      const ready = await next.init();
      void ready.usage.then(() => (counted = true));
      assert.equal(ready.leftovers, 1);
      assert.deepEqual(await readdir(join(root, 'tmp')), []);
      assert.equal(counted, false);
      await next.close();
      assert.equal(await ready.usage, undefined, 'stopped by close: unknown, not an error');
      await ownership.release();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('ownership is hubcache.lock: a second owner gets StoreLockedError naming this process', async () => {
    const root = await mkdtemp(join(tmpdir(), 'hubcache-storage-'));
    try {
      const one = new FsStorage({ root, lockStaleMs: 30_000, logger: silentLogger() });
      const ownership = await one.acquireOwnership();
      assert.ok((await readdir(root)).includes('hubcache.lock'));
      await assert.rejects(new FsStorage({ root, lockStaleMs: 30_000, logger: silentLogger() }).acquireOwnership({ failFast: true }), (err: unknown) => err instanceof StoreLockedError && /already open in this process/.test(err.message));
      await ownership.release();
      assert.ok(!(await readdir(root)).includes('hubcache.lock'));
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
