import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { sha256Digest, type Digest } from '../../domain/digest.js';
import type { BlobStore, BlobWriter } from '../blob-store.js';
import { readAll, rejectsWithCode } from './helpers.js';

/** What a backend's test hands the suite: a fresh, empty store per test. */
export interface BlobStoreFixture {
  readonly store: BlobStore;
  /** Removes everything the store created (temp directories, …). */
  cleanup(): Promise<void>;
  /**
   * How many uncommitted writes the backend still holds (files in tmp/, buffers, multipart
   * uploads). Checked after every test, where each writer has ended in commit or abort: it must be 0.
   */
  leftovers?(): Promise<number>;
  /**
   * For a store that offers `usage()` only after counting (the filesystem counts in the background
   * after start): starts the count and resolves when it is done.
   */
  countUsage?(): Promise<unknown>;
}

/**
 * The behaviour every `BlobStore` must have (cf. distribution's storage driver testsuites and
 * spegel's storetest). Run it from a backend's test file:
 * `describeBlobStore('FsBlobStore', async () => ({ store, cleanup, leftovers }))`.
 */
export function describeBlobStore(name: string, makeStore: () => Promise<BlobStoreFixture>): void {
  const test = (title: string, fn: (store: BlobStore, fx: BlobStoreFixture) => Promise<void>) =>
    it(title, async () => {
      const fx = await makeStore();
      try {
        await fn(fx.store, fx);
        if (fx.leftovers) assert.equal(await fx.leftovers(), 0, 'uncommitted data left behind');
      } finally {
        await fx.cleanup();
      }
    });

  describe(`BlobStore conformance: ${name}`, () => {
    test('stat of a missing blob is undefined and open throws BLOB_UNKNOWN', async (store) => {
      const missing = sha256Digest('nothing here');
      assert.equal(await store.stat(missing), undefined);
      await rejectsWithCode(store.open(missing), 'BLOB_UNKNOWN');
    });

    test('round trip of a few MB written in uneven chunks', async (store) => {
      const data = randomBytes(3 * 1024 * 1024 + 123);
      const digest = sha256Digest(data);
      const writer = await store.create();
      await writeChunks(writer, data, 64 * 1024 + 7);
      assert.equal(writer.written, data.length);
      assert.deepEqual(await writer.commit(digest, data.length), { digest, size: data.length });
      assert.deepEqual(await store.stat(digest), { digest, size: data.length });
      assert.ok(data.equals(await readAll(await store.open(digest))));
    });

    test('an empty blob round-trips', async (store) => {
      const digest = await put(store, Buffer.alloc(0));
      assert.deepEqual(await store.stat(digest), { digest, size: 0 });
      assert.equal((await readAll(await store.open(digest))).length, 0);
    });

    test('range reads: first byte, middle, last byte, whole; out of bounds is RANGE_INVALID', async (store) => {
      const data = randomBytes(300_000);
      const digest = await put(store, data);
      const read = async (start: number, end: number) => readAll(await store.open(digest, { range: { start, end } }));
      assert.deepEqual(await read(0, 0), data.subarray(0, 1));
      assert.deepEqual(await read(1000, 200_000), data.subarray(1000, 200_001));
      assert.deepEqual(await read(data.length - 1, data.length - 1), data.subarray(data.length - 1));
      assert.ok(data.equals(await read(0, data.length - 1)));
      await rejectsWithCode(store.open(digest, { range: { start: 10, end: data.length } }), 'RANGE_INVALID');
      await rejectsWithCode(store.open(digest, { range: { start: 10, end: 9 } }), 'RANGE_INVALID');
    });

    test('commit calls onVerified once, after verification and before it resolves; never on a mismatch', async (store) => {
      const data = randomBytes(50_000);
      const events: string[] = [];
      const writer = await store.create();
      await writer.write(data);
      const committing = writer.commit(sha256Digest(data), data.length, { onVerified: () => events.push('verified') }).then(() => events.push('committed'));
      await committing;
      assert.deepEqual(events, ['verified', 'committed']);
      const bad = await store.create();
      await bad.write(data);
      await rejectsWithCode(bad.commit(sha256Digest('other'), data.length, { onVerified: () => events.push('wrongly verified') }), 'DIGEST_INVALID');
      await bad.abort();
      assert.deepEqual(events, ['verified', 'committed']);
    });

    test('several chunks in one write land in order (including many more than IOV_MAX)', async (store) => {
      const data = randomBytes(300_000);
      const writer = await store.create();
      const chunks = [data.subarray(0, 7), data.subarray(7, 7), data.subarray(7, 100_000)];
      for (let p = 100_000; p < 300_000; p += 100) chunks.push(data.subarray(p, p + 100)); // 2,000 chunks
      await writer.write(chunks);
      assert.equal(writer.written, data.length);
      await writer.commit(sha256Digest(data), data.length);
      assert.deepEqual(await readAll(await store.open(sha256Digest(data))), data);
    });

    test('digest mismatch is DIGEST_INVALID and leaves nothing visible; abort then cleans up', async (store) => {
      const data = randomBytes(10_000);
      const wrong = sha256Digest('something else');
      const writer = await store.create();
      await writer.write(data);
      await rejectsWithCode(writer.commit(wrong), 'DIGEST_INVALID');
      await writer.abort();
      assert.equal(await store.stat(wrong), undefined);
      assert.equal(await store.stat(sha256Digest(data)), undefined);
    });

    test('size mismatch is SIZE_INVALID and leaves nothing visible', async (store) => {
      const data = randomBytes(10_000);
      const writer = await store.create();
      await writer.write(data);
      await rejectsWithCode(writer.commit(sha256Digest(data), data.length + 1), 'SIZE_INVALID');
      await writer.abort();
      assert.equal(await store.stat(sha256Digest(data)), undefined);
    });

    test('abort leaves nothing and is idempotent', async (store) => {
      const data = randomBytes(50_000);
      const writer = await store.create();
      await writer.write(data);
      await writer.abort();
      await writer.abort();
      assert.equal(await store.stat(sha256Digest(data)), undefined);
      await assert.rejects(writer.write(data));
      await assert.rejects(writer.commit(sha256Digest(data)));
    });

    test('abort after a successful commit changes nothing; a writer whose commit failed cannot commit again', async (store) => {
      const data = randomBytes(20_000);
      const digest = sha256Digest(data);
      const writer = await store.create();
      await writer.write(data);
      await writer.commit(digest, data.length);
      await writer.abort();
      assert.deepEqual(await store.stat(digest), { digest, size: data.length });
      assert.ok(data.equals(await readAll(await store.open(digest))));
      await assert.rejects(writer.write(data));
      const failed = await store.create();
      await failed.write(data);
      await rejectsWithCode(failed.commit(digest, data.length + 1), 'SIZE_INVALID');
      await assert.rejects(failed.commit(digest, data.length), 'no second try: abort it');
      await failed.abort();
    });

    test('the size is checked before the digest (a short blob is SIZE_INVALID, not DIGEST_INVALID)', async (store) => {
      const data = randomBytes(5_000);
      const writer = await store.create();
      await writer.write(data.subarray(0, 4_000));
      await rejectsWithCode(writer.commit(sha256Digest(data), data.length), 'SIZE_INVALID');
      await writer.abort();
    });

    test('localPath, when a writer offers it, holds the bytes written so far, and a handle opened at create reads them through commit', async (store) => {
      const data = randomBytes(200_000);
      const writer = await store.create();
      if (writer.localPath === undefined) {
        await writer.abort();
        return; // an optional capability (object stores don't have it)
      }
      const fh = await open(writer.localPath, 'r');
      try {
        const readAt = async (position: number, length: number) => {
          const buf = Buffer.alloc(length);
          const { bytesRead } = await fh.read(buf, 0, length, position);
          return buf.subarray(0, bytesRead);
        };
        await writer.write(data.subarray(0, 120_000));
        assert.deepEqual(await readAt(1000, 500), data.subarray(1000, 1500));
        await writer.write([data.subarray(120_000, 150_000), data.subarray(150_000)]);
        await writer.commit(sha256Digest(data), data.length);
        assert.deepEqual(await readAt(199_000, 1000), data.subarray(199_000), 'still readable after the commit moved the file');
      } finally {
        await fh.close();
      }
    });

    test('usage, when offered, counts each committed digest once, and deletes; aborts and repeated commits change nothing', async (store, fx) => {
      if (!store.usage) return; // optional capability
      const a = randomBytes(1000);
      const b = randomBytes(2000);
      await put(store, a);
      await fx.countUsage?.();
      assert.deepEqual(store.usage(), { bytes: 1000, objects: 1 });
      await put(store, b);
      await put(store, b);
      assert.deepEqual(store.usage(), { bytes: 3000, objects: 2 });
      const aborted = await store.create();
      await aborted.write(randomBytes(500));
      await aborted.abort();
      const rejected = await store.create();
      await rejected.write(randomBytes(500));
      await rejectsWithCode(rejected.commit(sha256Digest('x')), 'DIGEST_INVALID');
      await rejected.abort();
      assert.deepEqual(store.usage(), { bytes: 3000, objects: 2 });
      await store.delete(sha256Digest(a));
      await store.delete(sha256Digest(a));
      await store.delete(sha256Digest('never stored'));
      assert.deepEqual(store.usage(), { bytes: 2000, objects: 1 });
      let listed = 0;
      for await (const info of store.list()) listed += info.size;
      assert.equal(listed, store.usage()!.bytes, 'agrees with a full listing');
    });

    test('two concurrent writers of the same content both commit and the blob is intact', async (store) => {
      const data = randomBytes(1024 * 1024);
      const digest = sha256Digest(data);
      const [a, b] = await Promise.all([store.create(), store.create()]);
      // Interleave the two uploads chunk by chunk.
      for (let p = 0; p < data.length; p += 100_000) {
        await Promise.all([a.write(data.subarray(p, p + 100_000)), b.write(data.subarray(p, p + 100_000))]);
      }
      const infos = await Promise.all([a.commit(digest, data.length), b.commit(digest, data.length)]);
      assert.deepEqual(infos, [{ digest, size: data.length }, { digest, size: data.length }]);
      assert.ok(data.equals(await readAll(await store.open(digest))));
    });

    // A writer created for its digest (`create({ digest })`, a cache fill): the backend may write to
    // the blob's final location (S3: a multipart upload on its key), so these check that nothing
    // becomes visible there before a verified commit. 11 MiB + a few bytes: several S3 parts.
    const hinted = randomBytes(11 * 1024 * 1024 + 321);
    const hintedDigest = sha256Digest(hinted);

    test('a writer created for its digest round-trips a blob of several parts; a second one for the same digest commits too', async (store) => {
      const writer = await store.create({ digest: hintedDigest });
      await writeChunks(writer, hinted, 1024 * 1024 + 3);
      assert.equal(await store.stat(hintedDigest), undefined, 'invisible before commit');
      let listed = 0;
      for await (const _ of store.list()) listed++;
      assert.equal(listed, 0, 'not listed before commit');
      assert.deepEqual(await writer.commit(hintedDigest, hinted.length), { digest: hintedDigest, size: hinted.length });
      assert.ok(hinted.equals(await readAll(await store.open(hintedDigest))));
      const again = await store.create({ digest: hintedDigest });
      await writeChunks(again, hinted, 2 * 1024 * 1024);
      assert.deepEqual(await again.commit(hintedDigest, hinted.length), { digest: hintedDigest, size: hinted.length });
      assert.ok(hinted.equals(await readAll(await store.open(hintedDigest))));
    });

    test('a writer created for a digest: wrong bytes are DIGEST_INVALID, a wrong size SIZE_INVALID, and nothing is visible under the digest', async (store) => {
      const corrupt = Buffer.from(hinted);
      corrupt[corrupt.length - 10]! ^= 0xff;
      const bad = await store.create({ digest: hintedDigest });
      await writeChunks(bad, corrupt, 1024 * 1024);
      await rejectsWithCode(bad.commit(hintedDigest, hinted.length), 'DIGEST_INVALID');
      await bad.abort();
      const short = await store.create({ digest: hintedDigest });
      await writeChunks(short, hinted.subarray(0, 7 * 1024 * 1024), 1024 * 1024);
      await rejectsWithCode(short.commit(hintedDigest, hinted.length), 'SIZE_INVALID');
      await short.abort();
      assert.equal(await store.stat(hintedDigest), undefined);
      await rejectsWithCode(store.open(hintedDigest), 'BLOB_UNKNOWN');
      for await (const info of store.list()) assert.fail(`nothing listed, got ${info.digest}`);
    });

    test('a writer created for a digest and aborted mid-way leaves nothing; it cannot commit under another digest', async (store) => {
      const aborted = await store.create({ digest: hintedDigest });
      await writeChunks(aborted, hinted.subarray(0, 6 * 1024 * 1024), 1024 * 1024);
      await aborted.abort();
      assert.equal(await store.stat(hintedDigest), undefined);
      const data = randomBytes(30_000);
      const other = await store.create({ digest: hintedDigest });
      await other.write(data);
      await assert.rejects(other.commit(sha256Digest(data), data.length), /created for/);
      await other.abort();
      assert.equal(await store.stat(sha256Digest(data)), undefined);
      assert.equal(await store.stat(hintedDigest), undefined);
    });

    test('committing a digest that already exists succeeds', async (store) => {
      const data = randomBytes(20_000);
      const digest = await put(store, data);
      assert.equal(await put(store, data), digest);
      assert.deepEqual(await store.stat(digest), { digest, size: data.length });
      assert.ok(data.equals(await readAll(await store.open(digest))));
    });

    test('delete removes a blob; deleting a missing blob is not an error', async (store) => {
      const digest = await put(store, randomBytes(1000));
      await store.delete(digest);
      assert.equal(await store.stat(digest), undefined);
      await rejectsWithCode(store.open(digest), 'BLOB_UNKNOWN');
      await store.delete(digest);
    });

    test('list yields committed blobs only, in digest order', async (store) => {
      const one = await put(store, Buffer.from('one'));
      const two = await put(store, Buffer.from('two'));
      const inProgress = await store.create();
      await inProgress.write(Buffer.from('three'));
      const aborted = await store.create();
      await aborted.write(Buffer.from('four'));
      await aborted.abort();
      const listed = [];
      for await (const info of store.list()) {
        if (info.modifiedAt !== undefined) assert.ok(info.modifiedAt <= Date.now() + 1_000 && info.modifiedAt > 0, 'modifiedAt, where given, is a past time');
        listed.push({ digest: info.digest, size: info.size });
      }
      // In ascending digest order:
      const expected = [{ digest: one, size: 3 }, { digest: two, size: 3 }].sort((x, y) => x.digest.localeCompare(y.digest));
      assert.deepEqual(listed, expected);
      await inProgress.abort();
    });

    test('an aborted signal stops an open stream; an already aborted one refuses to open', async (store) => {
      const data = randomBytes(2 * 1024 * 1024);
      const digest = await put(store, data);
      const ac = new AbortController();
      const stream = await store.open(digest, { signal: ac.signal });
      const chunks = stream[Symbol.asyncIterator]();
      const first = await chunks.next();
      assert.equal(first.done, false);
      ac.abort();
      await assert.rejects(async () => {
        while (!(await chunks.next()).done);
      }, { name: 'AbortError' });
      assert.ok(stream.destroyed);
      await assert.rejects(store.open(digest, { signal: AbortSignal.abort() }), { name: 'AbortError' });
    });
  });
}

async function put(store: BlobStore, data: Buffer): Promise<Digest> {
  const writer = await store.create();
  try {
    await writeChunks(writer, data, 16 * 1024);
    const { digest } = await writer.commit(sha256Digest(data), data.length);
    return digest;
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

async function writeChunks(writer: BlobWriter, data: Buffer, size: number): Promise<void> {
  for (let p = 0; p < data.length; p += size) await writer.write(data.subarray(p, p + size));
}
