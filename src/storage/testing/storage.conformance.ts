import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { sha256Digest } from '../../domain/digest.js';
import { MediaTypes } from '../../domain/media-types.js';
import type { RepoName, Tag } from '../../domain/reference.js';
import type { BlobStore } from '../blob-store.js';
import { StoreOwnedError, type Storage } from '../storage.js';
import { readAll } from './helpers.js';

/** What a driver's test hands the suite: one fresh, empty store, which `open` opens (again and again, like successive processes). */
export interface StorageFixture {
  open(): Storage;
  /** Removes everything the store created. */
  cleanup(): Promise<void>;
  /**
   * A store every process may write at once (S3: content-addressed objects, idempotent commits):
   * `acquireOwnership` grants every caller a harmless ownership instead of refusing a second one.
   */
  readonly sharedOwnership?: boolean;
}

async function put(blobs: BlobStore, data: Buffer): Promise<void> {
  const w = await blobs.create();
  await w.write(data);
  await w.commit(sha256Digest(data), data.length);
}

/**
 * The behaviour every `Storage` (a driver as a whole: ownership, init, the stores behind it) must
 * have; the stores themselves have their own suites (blob-store, manifest-store, tag-store).
 */
export function describeStorage(name: string, makeFixture: () => Promise<StorageFixture>): void {
  const test = (title: string, fn: (fx: StorageFixture) => Promise<void>) =>
    it(title, async () => {
      const fx = await makeFixture();
      try {
        await fn(fx);
      } finally {
        await fx.cleanup();
      }
    });

  describe(`Storage conformance: ${name}`, () => {
    test('one owner at a time: a second acquireOwnership is StoreOwnedError until the first is released (a shared store: both own it)', async (fx) => {
      if (fx.sharedOwnership) {
        const [a, b] = [await fx.open().acquireOwnership({ failFast: true }), await fx.open().acquireOwnership({ failFast: true })];
        await a.release();
        await a.release();
        await b.release();
        return;
      }
      const first = await fx.open().acquireOwnership({ failFast: true });
      await assert.rejects(fx.open().acquireOwnership({ failFast: true }), (err: unknown) => err instanceof StoreOwnedError);
      await first.release();
      await first.release(); // idempotent
      const again = await fx.open().acquireOwnership({ failFast: true });
      await again.release();
    });

    test('the owner serves after init: blobs, manifests and tags round-trip; describe() names the driver; writable', async (fx) => {
      const storage = fx.open();
      const ownership = await storage.acquireOwnership({ failFast: true });
      try {
        const ready = await storage.init();
        assert.equal(ready.leftovers, 0);
        const data = randomBytes(10_000);
        await put(storage.blobs, data);
        assert.ok(data.equals(await readAll(await storage.blobs.open(sha256Digest(data)))));
        const body = Buffer.from(`{"schemaVersion":2,"mediaType":"${MediaTypes.ociIndex}","manifests":[]}`);
        const { digest } = await storage.manifests.put(body, MediaTypes.ociIndex);
        const key = { upstream: 'docker.io', repo: 'library/x' as RepoName };
        await storage.metadata.setTag(key, 'v1' as Tag, { digest, mediaType: MediaTypes.ociIndex, size: body.length, validatedAt: 1 });
        assert.equal((await storage.metadata.getTag(key, 'v1' as Tag))?.digest, digest);
        assert.equal(typeof storage.describe().driver, 'string');
        assert.ok(storage.describe().location.length > 0);
        await storage.probeWrite();
        assert.equal(await storage.readable(), true);
      } finally {
        await storage.close();
        await storage.close();
        await ownership.release();
      }
    });

    test('init neither lists the blobs nor waits for them to be counted; `usage` resolves with what the store holds', async (fx) => {
      const before = fx.open();
      const o1 = await before.acquireOwnership({ failFast: true });
      await before.init();
      for (const n of [1, 1000, 70_000]) await put(before.blobs, randomBytes(n));
      await before.close();
      await o1.release();

      const storage = fx.open();
      storage.blobs.list = () => {
        throw new Error('list() called at start');
      };
      const o2 = await storage.acquireOwnership({ failFast: true });
      try {
        const ready = await storage.init();
        const usage = await ready.usage;
        if (usage === undefined) return; // a driver that can't tell (then blobs.usage is undefined too)
        assert.deepEqual(usage, { bytes: 71_001, objects: 3 });
        assert.deepEqual(storage.blobs.usage?.(), usage);
      } finally {
        await storage.close();
        await o2.release();
      }
    });

    test('a reader needs neither ownership nor init: it reads while another process owns the store', async (fx) => {
      const owner = fx.open();
      const o = await owner.acquireOwnership({ failFast: true });
      try {
        await owner.init();
        const data = randomBytes(500);
        await put(owner.blobs, data);
        const reader = fx.open();
        assert.deepEqual(await reader.blobs.stat(sha256Digest(data)), { digest: sha256Digest(data), size: 500 });
      } finally {
        await owner.close();
        await o.release();
      }
    });
  });
}
