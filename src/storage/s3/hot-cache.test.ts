/**
 * The hot cache's miss path (storage.hotCache): one read of the bucket, teed to the client and into
 * the local directory; the local copy published only once verified, dropped (and cleaned up) when it
 * can't complete, and never slowing the client. The bucket here is a memory store that counts its
 * `open` calls (the S3 store itself is tested on RGW in test/integration/s3-storage.test.ts).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, it } from 'node:test';
import { sha256Digest, type Digest } from '../../domain/digest.js';
import { silentLogger } from '../../lib/logger.js';
import type { BlobStore } from '../blob-store.js';
import { MemoryBlobStore } from '../memory/memory-blob-store.js';
import { readAll } from '../testing/helpers.js';
import { HotCachedBlobStore, type HotCacheOptions } from './hot-cache.js';

const MiB = 1024 * 1024;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A bucket over a memory store that counts reads; `corrupt` makes it answer other bytes than stored. */
function countingBucket(): { bucket: BlobStore; opens: Digest[]; inner: MemoryBlobStore; corrupt: Set<Digest> } {
  const inner = new MemoryBlobStore();
  const opens: Digest[] = [];
  const corrupt = new Set<Digest>();
  const bucket: BlobStore = {
    stat: (d) => inner.stat(d),
    open: async (d, o) => {
      opens.push(d);
      const body = await inner.open(d, o);
      if (!corrupt.has(d)) return body;
      const bytes = await readAll(body);
      bytes[0]! ^= 0xff;
      return Readable.from([bytes]);
    },
    create: (o) => inner.create(o),
    delete: (d) => inner.delete(d),
    list: () => inner.list(),
  };
  return { bucket, opens, inner, corrupt };
}

async function hotCache(bucket: BlobStore, over: Partial<HotCacheOptions> = {}): Promise<{ hot: HotCachedBlobStore; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-hot-unit-'));
  dirs.push(dir);
  const hot = new HotCachedBlobStore(bucket, { path: dir, maxSize: 16 * MiB, logger: silentLogger(), ...over });
  await hot.init();
  return { hot, dir };
}

async function put(store: BlobStore, data: Buffer): Promise<Digest> {
  const digest = sha256Digest(data);
  const w = await store.create({ digest });
  await w.write(data);
  await w.commit(digest, data.length);
  return digest;
}

/** Files in the local store's tmp/ (a dropped copy must leave none). */
const tmpFiles = (dir: string) => readdirSync(join(dir, 'tmp'));

describe('HotCachedBlobStore: a miss reads the bucket once', () => {
  it('the client gets the bytes of one bucket GET, the same bytes become the local copy, and the next read does not touch the bucket', async () => {
    const b = countingBucket();
    const { hot, dir } = await hotCache(b.bucket);
    const data = randomBytes(3 * MiB + 17);
    const digest = await put(b.inner, data);
    assert.ok(data.equals(await readAll(await hot.open(digest))));
    await hot.settled();
    assert.deepEqual(b.opens, [digest], 'one read of the bucket');
    assert.equal(hot.localBytes, data.length);
    assert.deepEqual(tmpFiles(dir), []);
    assert.ok(data.equals(await readAll(await hot.open(digest))));
    assert.deepEqual(b.opens, [digest], 'served locally');
  });

  it('bytes from the bucket that do not hash to the digest are never published locally; the next read goes to the bucket again', async () => {
    const b = countingBucket();
    const { hot, dir } = await hotCache(b.bucket);
    const data = randomBytes(MiB);
    const digest = await put(b.inner, data);
    b.corrupt.add(digest);
    await readAll(await hot.open(digest));
    await hot.settled();
    assert.equal(hot.localBytes, 0);
    assert.deepEqual(tmpFiles(dir), [], 'the rejected copy is removed');
    b.corrupt.delete(digest);
    assert.ok(data.equals(await readAll(await hot.open(digest))));
    await hot.settled();
    assert.equal(b.opens.length, 2);
    assert.equal(hot.localBytes, data.length, 'a good read makes the copy');
  });

  it('a client that goes away mid-blob drops the copy: nothing published, nothing left in tmp/', async () => {
    const b = countingBucket();
    const { hot, dir } = await hotCache(b.bucket);
    const data = randomBytes(4 * MiB);
    const digest = await put(b.inner, data);
    const body = await hot.open(digest);
    let got = 0;
    for await (const chunk of body as AsyncIterable<Buffer>) {
      got += chunk.length;
      if (got >= MiB) break; // destroys the stream
    }
    await hot.settled();
    assert.equal(hot.localBytes, 0);
    assert.deepEqual(tmpFiles(dir), []);
    assert.ok(data.equals(await readAll(await hot.open(digest))), 'a later whole read is served and copied');
    await hot.settled();
    assert.equal(hot.localBytes, data.length);
  });

  it('with the copy bounded to one chunk ahead of the disk (maxCopyLag 0), the stream waits for each local write: every byte reaches both', async () => {
    const b = countingBucket();
    const { hot, dir } = await hotCache(b.bucket, { maxCopyLag: 0 });
    const data = randomBytes(2 * MiB + 5);
    const digest = await put(b.inner, data);
    assert.ok(data.equals(await readAll(await hot.open(digest))));
    await hot.settled();
    assert.equal(hot.localBytes, data.length);
    assert.deepEqual(b.opens, [digest]);
    assert.deepEqual(tmpFiles(dir), []);
  });

  it('a blob bigger than the whole cache and a range read are served from the bucket without a copy', async () => {
    const b = countingBucket();
    const { hot, dir } = await hotCache(b.bucket, { maxSize: MiB });
    const big = randomBytes(2 * MiB);
    const small = randomBytes(100_000);
    const [bigDigest, smallDigest] = [await put(b.inner, big), await put(b.inner, small)];
    assert.ok(big.equals(await readAll(await hot.open(bigDigest))));
    assert.deepEqual(await readAll(await hot.open(smallDigest, { range: { start: 10, end: 99 } })), small.subarray(10, 100));
    await hot.settled();
    assert.equal(hot.localBytes, 0);
    assert.deepEqual(tmpFiles(dir), []);
  });
});
