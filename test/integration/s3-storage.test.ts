/**
 * The S3 store (storage/s3/) on a real Ceph RGW (test/support/rgw.ts): every storage conformance
 * suite, plus what only an object store has — multipart fills with bounded memory, aborted and
 * crashed uploads, several writers of one digest, credentials, an unreachable endpoint.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { DeleteObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { Evictor, type EvictionMetrics } from '../../src/cache/evictor.js';
import { sha256Digest, type Digest } from '../../src/domain/digest.js';
import { isRegistryError } from '../../src/domain/errors.js';
import { silentLogger } from '../../src/lib/logger.js';
import type { HotCachedBlobStore } from '../../src/storage/s3/hot-cache.js';
import { S3StorageError } from '../../src/storage/s3/s3-errors.js';
import { S3Storage, type S3StorageOptions } from '../../src/storage/s3/s3-storage.js';
import { toStorageError } from '../../src/storage/storage-fault.js';
import { VerifyingBlobWriter } from '../../src/storage/verifying-writer.js';
import { S3AccessRecord } from '../../src/storage/s3/s3-access-record.js';
import { describeAccessRecord } from '../../src/storage/testing/access-record.conformance.js';
import { describeBlobStore } from '../../src/storage/testing/blob-store.conformance.js';
import { readAll } from '../../src/storage/testing/helpers.js';
import { describeManifestStore, describeMetadataStore } from '../../src/storage/testing/manifest-store.conformance.js';
import { describeStorage } from '../../src/storage/testing/storage.conformance.js';
import { describeTagStore } from '../../src/storage/testing/tag-store.conformance.js';
import { freePort } from '../support/distribution.js';
import { startRgw, type Rgw } from '../support/rgw.js';
import { startInProcess } from '../support/in-process.js';
import { ALL_MANIFESTS, putImage, seededBytes } from '../support/oci-fixtures.js';
import { FakeRegistry, LoopbackServer } from '../../src/upstream/testing/fake-registry.js';

const MiB = 1024 * 1024;
let rgw: Rgw;
let bucket: string;
let n = 0;

before(async () => {
  rgw = await startRgw();
  bucket = await rgw.createBucket();
});
after(async () => {
  await rgw?.stop();
});

/** A store on a prefix of its own (a fresh, empty store per test, one bucket per file). */
function storage(over: Partial<S3StorageOptions> = {}): S3Storage {
  return new S3Storage({
    endpoint: rgw.endpoint,
    accessKeyId: rgw.accessKeyId,
    secretAccessKey: rgw.secretAccessKey,
    region: rgw.region,
    forcePathStyle: true,
    bucket,
    prefix: `t${++n}/`,
    partSize: 5 * MiB,
    partsInFlight: 2,
    logger: silentLogger(),
    ...over,
  });
}

/**
 * What a writer left behind: multipart uploads anywhere under the store's prefix (a fill's go to
 * `blobs/…` keys, a push's under `uploads/`) and temp objects under `uploads/`.
 */
async function leftovers(s: S3Storage): Promise<number> {
  const uploads = await rgw.client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: s.layout.prefix }));
  const objects = await rgw.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: s.layout.uploadsPrefix() }));
  return (uploads.Uploads?.length ?? 0) + (objects.KeyCount ?? 0);
}

const fixture = <T>(pick: (s: S3Storage) => T) => async () => {
  const s = storage();
  return { store: pick(s), cleanup: () => s.close(), leftovers: () => leftovers(s), countUsage: () => s.bucketBlobs.recountUsage() };
};

describeBlobStore('S3BlobStore (RGW)', fixture((s) => s.blobs));
describeBlobStore('HotCachedBlobStore (storage.hotCache in front of RGW)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-hot-'));
  const s = storage({ hotCache: { path: dir, maxSize: 4 * MiB } });
  await s.init();
  return {
    store: s.blobs,
    cleanup: async () => {
      await s.close();
      rmSync(dir, { recursive: true, force: true });
    },
    leftovers: () => leftovers(s),
    countUsage: () => s.bucketBlobs.recountUsage(),
  };
});
describeManifestStore('S3ManifestStore (RGW)', fixture((s) => s.manifests));
describeMetadataStore('S3MetadataStore (RGW)', fixture((s) => s.metadata));
describeTagStore('S3MetadataStore (RGW)', fixture((s) => s.metadata));
describeStorage('S3Storage (driver: s3, RGW)', async () => {
  const prefix = `t${++n}/`;
  const opened: S3Storage[] = [];
  return {
    open: () => {
      const s = storage({ prefix });
      opened.push(s);
      return s;
    },
    sharedOwnership: true,
    cleanup: async () => {
      for (const s of opened) await s.close();
    },
  };
});
// Each `open` is a restart: a new record reading the batch objects the previous one wrote.
describeAccessRecord('S3AccessRecord (batch objects in the bucket, persistent)', async () => {
  const s = storage();
  return { open: () => new S3AccessRecord({ client: s.client, bucket, layout: s.layout }), persistent: true, cleanup: () => s.close() };
});
describeAccessRecord('S3AccessRecord compacting at every second batch', async () => {
  const s = storage();
  return { open: () => new S3AccessRecord({ client: s.client, bucket, layout: s.layout, compactAfter: 2 }), persistent: true, cleanup: () => s.close() };
});

describe('S3Storage.access on RGW: the last-access record survives a restart', () => {
  it('flushed at close, read back by the next S3Storage on the same prefix; compaction keeps the objects few and the record whole', async () => {
    const first = storage();
    await first.init();
    const prefix = first.layout.prefix;
    const blob = (i: number) => ({ kind: 'blob' as const, digest: sha256Digest(`blob ${i}`) });
    const record = new S3AccessRecord({ client: first.client, bucket, layout: first.layout, compactAfter: 3 });
    for (let round = 0; round < 8; round++) {
      for (let i = 0; i < 10; i++) record.touch(blob(i), 1_000 * round + i);
      if (round === 5) record.forget(blob(9));
      await record.flush();
    }
    first.access.touch(blob(100), 42);
    await first.close();
    const objects = await rgw.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}_access/` }));
    assert.ok((objects.KeyCount ?? 0) <= 4, `compacted: ${objects.KeyCount} objects`);
    const again = storage({ prefix });
    await again.init();
    try {
      assert.equal(await again.access.lastAccess(blob(100)), 42, 'what the store flushed at close');
      for (let i = 0; i < 9; i++) assert.equal(await again.access.lastAccess(blob(i)), 7_000 + i);
      assert.equal(await again.access.lastAccess(blob(9)), 7_009, 'touched again after it was forgotten');
    } finally {
      await again.close();
    }
  });
});

describe('S3Storage on RGW', () => {
  it('the hot cache: a blob read from the bucket is copied locally and then served from there; least recently read blobs leave first', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hubcache-hot-'));
    const s = storage({ hotCache: { path: dir, maxSize: 2 * MiB + MiB / 2 } });
    try {
      await s.init();
      const hot = s.blobs as HotCachedBlobStore;
      const blobs = [randomBytes(MiB), randomBytes(MiB), randomBytes(MiB)];
      for (const b of blobs) {
        const w = await s.blobs.create();
        await w.write(b);
        await w.commit(sha256Digest(b), b.length);
      }
      const read = async (b: Buffer) => assert.ok(b.equals(await readAll(await s.blobs.open(sha256Digest(b)))));
      await read(blobs[0]!);
      await hot.settled();
      await read(blobs[1]!);
      await hot.settled();
      assert.equal(hot.localBytes, 2 * MiB);
      await read(blobs[0]!); // blobs[1] is now the least recently read
      await read(blobs[2]!);
      await hot.settled();
      assert.equal(hot.localBytes, 2 * MiB, 'bounded by maxSize');
      // Removed from the bucket behind the store's back: what is still readable is served locally.
      for (const b of blobs) await rgw.client.send(new DeleteObjectCommand({ Bucket: bucket, Key: s.layout.blob(sha256Digest(b)) }));
      await read(blobs[0]!);
      await read(blobs[2]!);
      await assert.rejects(s.blobs.open(sha256Digest(blobs[1]!)), (err: unknown) => isRegistryError(err) && err.code === 'BLOB_UNKNOWN');
      // A restarted replica finds what its directory holds.
      const again = storage({ prefix: s.layout.prefix, hotCache: { path: dir, maxSize: 2 * MiB + MiB / 2 } });
      await again.init();
      assert.equal((again.blobs as HotCachedBlobStore).localBytes, 2 * MiB);
      await read(blobs[0]!);
      await again.close();
    } finally {
      await s.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a blob larger than partSize × partsInFlight goes up as a multipart upload, holding at most partSize × (partsInFlight + 1) bytes', async () => {
    const s = storage();
    try {
      const data = randomBytes(5 * MiB * 2 + 3 * MiB + 17); // > 10 MiB: three parts
      const raw = s.bucketBlobs.createRaw();
      let most = 0;
      for (let p = 0; p < data.length; p += 256 * 1024) {
        await raw.write([data.subarray(p, p + 256 * 1024)]);
        most = Math.max(most, raw.bufferedBytes);
      }
      assert.ok(most <= 5 * MiB * 3, `buffered at most ${most} bytes`);
      assert.ok((await raw.uploadId()) !== undefined, 'a multipart upload');
      await raw.publish(sha256Digest(data), data.length);
      assert.ok(data.equals(await readAll(await s.blobs.open(sha256Digest(data)))));
      assert.equal(await leftovers(s), 0);
      // Every part buffer went back once its part was up: the next writer reuses them (a fresh one
      // costs a page fault per 4 KiB on first touch, see part-buffers.ts).
      const idle = s.bucketBlobs.partBuffers.idle;
      assert.ok(idle >= 1 && idle <= 2 + 1, `${idle} idle part buffers (at most partsInFlight + 1)`);
      const next = s.bucketBlobs.createRaw();
      await next.write([data.subarray(0, 5 * MiB)]);
      assert.equal(s.bucketBlobs.partBuffers.idle, idle - 1, 'the next writer took an idle buffer');
      await next.discard();
    } finally {
      await s.close();
    }
  });

  it('a digest mismatch of a multipart fill aborts the upload: nothing visible, nothing left in ListMultipartUploads', async () => {
    const s = storage();
    try {
      const data = randomBytes(12 * MiB);
      const raw = s.bucketBlobs.createRaw();
      const writer = new VerifyingBlobWriter(raw);
      for (let p = 0; p < data.length; p += MiB) await writer.write(data.subarray(p, p + MiB));
      assert.ok((await raw.uploadId()) !== undefined, 'parts went up');
      assert.ok((await rgw.client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: s.layout.uploadsPrefix() }))).Uploads?.length === 1, 'an upload in progress');
      await assert.rejects(writer.commit(sha256Digest('other'), data.length), (err: unknown) => isRegistryError(err) && err.code === 'DIGEST_INVALID');
      await writer.abort();
      assert.equal(await s.blobs.stat(sha256Digest(data)), undefined);
      assert.equal(await s.blobs.stat(sha256Digest('other')), undefined);
      assert.equal(await leftovers(s), 0);
    } finally {
      await s.close();
    }
  });

  it('a fill (a writer created for its digest) uploads straight to the blob\'s key: no temp object, no copy, one upload completed in place', async () => {
    const s = storage();
    try {
      const data = randomBytes(12 * MiB + 5);
      const digest = sha256Digest(data);
      const raw = s.bucketBlobs.createRaw(digest); // what s.blobs.create({ digest }) wraps
      const writer = new VerifyingBlobWriter(raw, { digest });
      for (let p = 0; p < data.length; p += MiB) await writer.write(data.subarray(p, p + MiB));
      assert.ok((await raw.uploadId()) !== undefined, 'parts went up');
      const inProgress = await rgw.client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: s.layout.prefix }));
      assert.deepEqual(
        inProgress.Uploads?.map((u) => u.Key),
        [s.layout.blob(digest)],
        'one upload, on the blob\'s own key',
      );
      assert.equal(await s.blobs.stat(digest), undefined, 'invisible until completed');
      await writer.commit(digest, data.length);
      const objects = await rgw.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: s.layout.prefix }));
      assert.deepEqual(
        objects.Contents?.map((o) => o.Key),
        [s.layout.blob(digest)],
        'the blob and nothing else (no uploads/ temp object)',
      );
      // A completed multipart upload keeps its "<md5 of the parts' md5s>-<parts>" ETag; a CopyObject would give a plain md5.
      const head = await rgw.client.send(new HeadObjectCommand({ Bucket: bucket, Key: s.layout.blob(digest) }));
      assert.match(head.ETag ?? '', /-3"?$/, 'the multipart upload itself, completed in place');
      assert.ok(data.equals(await readAll(await s.blobs.open(digest))));
      assert.equal(await leftovers(s), 0);
    } finally {
      await s.close();
    }
  });

  it('a push (no digest up front) still goes through uploads/ and a copy, leaving only the blob', async () => {
    const s = storage();
    try {
      const data = randomBytes(11 * MiB);
      const raw = s.bucketBlobs.createRaw();
      const writer = new VerifyingBlobWriter(raw);
      for (let p = 0; p < data.length; p += MiB) await writer.write(data.subarray(p, p + MiB));
      assert.ok((await raw.uploadId()) !== undefined, 'parts went up');
      const inProgress = await rgw.client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: s.layout.prefix }));
      assert.ok(inProgress.Uploads?.length === 1 && inProgress.Uploads[0]!.Key!.startsWith(s.layout.uploadsPrefix()), 'the upload is under uploads/');
      await writer.commit(sha256Digest(data), data.length);
      assert.ok(data.equals(await readAll(await s.blobs.open(sha256Digest(data)))));
      assert.equal(await leftovers(s), 0);
    } finally {
      await s.close();
    }
  });

  for (const kind of ['push', 'fill'] as const) {
    it(`a ${kind}'s writer killed mid-upload leaves no visible object; init sweeps its upload once it is old, not before`, async () => {
      const s = storage();
      const digest = sha256Digest(`the blob a killed ${kind} was writing`);
      const child = spawn(process.execPath, ['--import', 'tsx', 'test/support/s3-writer-child.ts', rgw.endpoint, rgw.accessKeyId, rgw.secretAccessKey, bucket, s.layout.prefix, ...(kind === 'fill' ? [digest] : [])], { stdio: ['ignore', 'pipe', 'inherit'] });
      try {
        const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
        assert.match(line, /^upload \S+/);
        const exited = once(child, 'exit');
        child.kill('SIGKILL');
        await exited;
        let listed = 0;
        for await (const _ of s.blobs.list()) listed++;
        assert.equal(listed, 0, 'no blob visible');
        assert.equal(await leftovers(s), 1, 'the dead writer\'s upload, invisible');
        assert.equal((await s.init()).leftovers, 0, 'a young upload may be a live replica\'s: kept');
        const later = storage({ prefix: s.layout.prefix, now: () => Date.now() + 25 * 3600_000 });
        assert.equal((await later.init()).leftovers, 1);
        assert.equal(await leftovers(s), 0);
        await later.close();
      } finally {
        child.kill('SIGKILL');
        await s.close();
      }
    });
  }

  for (const kind of ['pushes', 'fills'] as const) {
    it(`two replicas committing the same multipart blob at once (${kind}): one object, the right bytes, nothing left`, async () => {
      const [a, b] = [storage(), storage()];
      const bPrefixed = storage({ prefix: a.layout.prefix });
      try {
        const data = randomBytes(11 * MiB);
        const opts = kind === 'fills' ? { digest: sha256Digest(data) } : {};
        await Promise.all([a.bucketBlobs.recountUsage(), bPrefixed.bucketBlobs.recountUsage()]);
        const [wa, wb] = [await a.blobs.create(opts), await bPrefixed.blobs.create(opts)];
        for (let p = 0; p < data.length; p += MiB) await Promise.all([wa.write(data.subarray(p, p + MiB)), wb.write(data.subarray(p, p + MiB))]);
        await Promise.all([wa.commit(sha256Digest(data), data.length), wb.commit(sha256Digest(data), data.length)]);
        // A replica counts the blob once when its commit created it, not at all when the other's was
        // there first (that one shows at its next listing); never twice.
        const one = { bytes: data.length, objects: 1 };
        const usages = [a.blobs.usage?.(), bPrefixed.blobs.usage?.()];
        assert.ok(usages.some((u) => u?.bytes === data.length) && usages.every((u) => u?.bytes === data.length || u?.bytes === 0), JSON.stringify(usages));
        assert.deepEqual(await a.bucketBlobs.recountUsage(), one);
        assert.deepEqual(await bPrefixed.bucketBlobs.recountUsage(), one);
        const listed = [];
        for await (const info of a.blobs.list()) listed.push(info.digest);
        assert.deepEqual(listed, [sha256Digest(data)]);
        assert.ok(data.equals(await readAll(await a.blobs.open(sha256Digest(data)))));
        assert.equal(await leftovers(a), 0);
      } finally {
        await Promise.all([a.close(), b.close(), bPrefixed.close()]);
      }
    });
  }

  it('wrong credentials: init fails with a clear error naming the bucket and S3\'s refusal', async () => {
    const s = storage({ secretAccessKey: `${rgw.secretAccessKey}x`, maxAttempts: 1 });
    try {
      await assert.rejects(s.init(), (err: unknown) => {
        assert.match(String((err as Error).message), new RegExp(`bucket "${bucket}" at ${rgw.endpoint.replace(/[.]/g, '\\.')} is not usable: S3 HeadBucket failed: .*HTTP 403`));
        return true;
      });
      assert.equal(await s.readable(), false);
      await assert.rejects(s.probeWrite(), (err: unknown) => err instanceof S3StorageError && err.code === 'EACCES' && err.s3Code === 'SignatureDoesNotMatch');
    } finally {
      await s.close();
    }
  });

  it('S3 unreachable (a closed port): storage faults that map to 503 STORAGE_UNAVAILABLE, nothing written', async () => {
    const s = storage({ endpoint: `http://127.0.0.1:${await freePort()}`, maxAttempts: 2 });
    try {
      const fault = await s.blobs.stat(sha256Digest('x')).then(
        () => assert.fail('stat succeeded'),
        (err: unknown) => err,
      );
      assert.ok(fault instanceof S3StorageError && fault.code === 'EIO', String(fault));
      const mapped = toStorageError(fault);
      assert.ok(isRegistryError(mapped) && mapped.code === 'STORAGE_UNAVAILABLE');
      const writer = await s.blobs.create();
      await writer.write(Buffer.from('small'));
      await assert.rejects(writer.commit(sha256Digest('small'), 5), (err: unknown) => err instanceof S3StorageError && err.code === 'EIO');
      await writer.abort();
      assert.equal(await s.readable(), false);
      // Nothing reached the bucket (seen from the real endpoint):
      await assert.rejects(rgw.client.send(new HeadObjectCommand({ Bucket: bucket, Key: s.layout.blob(sha256Digest('small')) })), { name: 'NotFound' });
    } finally {
      await s.close();
    }
  });
});

describe('S3 store usage (issue #15/#13): a listing of blobs/ kept current by commits and deletes', () => {
  /** Commits `data` through `s`'s blobs (a push: no digest up front). */
  const put = async (s: S3Storage, data: Buffer) => {
    const w = await s.blobs.create();
    await w.write(data);
    return (await w.commit(sha256Digest(data), data.length)).digest;
  };

  it("counted at init in the background; this replica's commits and deletes at once, another replica's at the next listing; uploads in progress never", async () => {
    const a = storage();
    const b = storage({ prefix: a.layout.prefix });
    try {
      const first = await put(b, randomBytes(1000));
      const ready = await a.init();
      assert.deepEqual(await ready.usage, { bytes: 1000, objects: 1 }, 'the first listing, at init');
      assert.deepEqual(a.blobs.usage?.(), { bytes: 1000, objects: 1 });
      await put(a, randomBytes(2000));
      assert.deepEqual(a.blobs.usage?.(), { bytes: 3000, objects: 2 });
      // A fill in progress: one part (5 MiB) uploaded, the upload not completed.
      const big = randomBytes(6 * MiB);
      const inProgress = a.bucketBlobs.createRaw(sha256Digest(big));
      await inProgress.write([big]);
      assert.ok((await inProgress.uploadId()) !== undefined, 'a multipart upload is open');
      // Another replica commits one blob and deletes another: not seen here before the next listing.
      const theirs = randomBytes(500);
      await put(b, theirs);
      await b.blobs.delete(first);
      assert.deepEqual(a.blobs.usage?.(), { bytes: 3000, objects: 2 });
      assert.deepEqual(await a.bucketBlobs.recountUsage(), { bytes: 2500, objects: 2 });
      assert.deepEqual(a.blobs.usage?.(), { bytes: 2500, objects: 2 }, 'the upload in progress is not counted');
      // A commit of what another replica stored already (a lost race) changes nothing; both replicas committing one digest at once count it once each.
      await put(a, theirs);
      const both = randomBytes(3000);
      await b.bucketBlobs.recountUsage();
      await Promise.all([put(a, both), put(b, both)]);
      // The replica whose commit created it counts it; the other, whose commit found it there, at its next listing.
      const usages = [a.blobs.usage?.()?.bytes, b.blobs.usage?.()?.bytes];
      assert.ok(usages.includes(5500) && usages.every((u) => u === 5500 || u === 2500), JSON.stringify(usages));
      await inProgress.discard();
      assert.deepEqual(await a.bucketBlobs.recountUsage(), { bytes: 5500, objects: 3 }, 'the next listing agrees');
      assert.deepEqual(await b.bucketBlobs.recountUsage(), { bytes: 5500, objects: 3 });
      let listed = 0;
      for await (const info of a.blobs.list()) listed += info.size;
      assert.equal(listed, 5500);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('a capped bucket bounds itself: past the high watermark a pass starts after a commit (as in serve) and evicts down to the low one, least recently used first, pinned and hosted content kept; another replica\'s commits count at the next listing', async () => {
    const s = storage();
    const other = storage({ prefix: s.layout.prefix });
    const ready = await s.init();
    assert.deepEqual(await ready.usage, { bytes: 0, objects: 0 });
    await (s.access as S3AccessRecord).load();
    let passEnded!: () => void;
    let passes = 0;
    const nextPass = () => new Promise<void>((r) => (passEnded = r));
    const metrics: EvictionMetrics = {
      evicted: () => {},
      evictionFailed: () => assert.fail('a deletion failed'),
      evictionSucceeded: () => {
        passes++;
        passEnded();
      },
      oldestAccess: () => {},
      freeSpace: () => {},
    };
    const kept = new Set<Digest>();
    const evictor = new Evictor({ storage: s, maxBytes: 10_000, highWatermark: 90, lowWatermark: 50, tagRetentionMs: 90 * 86_400_000, concurrency: 2, clock: () => 1_000_000, logger: silentLogger(), metrics, isProtected: (d) => kept.has(d) });
    try {
      const digests: Digest[] = [];
      let passed = nextPass();
      for (let i = 0; i < 10; i++) {
        const d = await put(s, randomBytes(1000));
        digests.push(d);
        s.access.touch({ kind: 'blob', digest: d }, 1_000 + i);
        if (i === 0) kept.add(d); // pinned
        if (i === 1) kept.add(d); // hosted
        evictor.check(); // what serve does after every commit (PullThroughRegistry's onCommitted)
        if (i < 9) assert.equal(evictor.running, false, `${(i + 1) * 1000} bytes: under the high watermark (9000)`);
      }
      await passed;
      assert.equal(passes, 1);
      assert.deepEqual(s.blobs.usage?.(), { bytes: 5000, objects: 5 }, 'down to the low watermark');
      const left = new Set<Digest>();
      for await (const info of s.blobs.list()) left.add(info.digest);
      assert.deepEqual(left, new Set([digests[0], digests[1], digests[7], digests[8], digests[9]]), 'the least recently used went, the protected stayed');

      // Another replica fills the bucket past the cap: this one sees it at its next listing, and its timer's tick evicts.
      for (let i = 0; i < 5; i++) {
        const d = await put(other, randomBytes(1000));
        s.access.touch({ kind: 'blob', digest: d }, 2_000 + i);
      }
      assert.deepEqual(s.blobs.usage?.(), { bytes: 5000, objects: 5 }, 'not listed yet');
      assert.equal(await evictor.tick(), undefined, 'nothing due before the listing');
      assert.deepEqual(await s.bucketBlobs.recountUsage(), { bytes: 10_000, objects: 10 });
      passed = nextPass();
      const report = await evictor.tick();
      await passed;
      assert.equal(report?.removed.length, 5);
      assert.deepEqual(s.blobs.usage?.(), { bytes: 5000, objects: 5 });
      assert.ok(await s.blobs.stat(digests[0]!) && (await s.blobs.stat(digests[1]!)), 'pinned and hosted blobs kept');
    } finally {
      await evictor.stop();
      await Promise.all([s.close(), other.close()]);
    }
  });
});

describe('a whole hubcache (in-process serve) on the bucket with storage.maxSize', () => {
  it('pulls past the high watermark start an eviction pass by themselves (no gc) that brings the bucket under the low one; pinned and pushed content kept', async () => {
    const registry = new FakeRegistry();
    const pinned = putImage(registry, 'library/pinned', '1', { seed: 's3-cap pinned', layerSizes: [10_000] });
    const others = Array.from({ length: 4 }, (_, i) => putImage(registry, 'library/other', `v${i}`, { seed: `s3-cap other ${i}`, layerSizes: [10_000] }));
    const upstream = await LoopbackServer.start(registry.handle);
    const prefix = `t${++n}/`;
    const maxSize = 60 * 1024;
    const hc = await startInProcess({
      flags: { 'upstream-url': upstream.url },
      config: {
        storage: { driver: 's3', bucket, endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey, prefix, partSize: '5MiB', maxSize: `${maxSize}`, eviction: { interval: '1h', highWatermark: 90, lowWatermark: 50 } },
        cache: { pin: ['pinned:1'] },
        hosted: { repositories: ['myorg/**'] },
      },
    });
    const storeBytes = async () => {
      const text = await (await fetch(`${hc.url}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith('hubcache_store_bytes '));
      return line === undefined ? undefined : Number(line.split(' ')[1]);
    };
    const inBucket = async () => {
      const sizes = new Map<string, number>();
      let token: string | undefined;
      do {
        const page = await rgw.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}blobs/`, ...(token ? { ContinuationToken: token } : {}) }));
        for (const o of page.Contents ?? []) sizes.set(`sha256:${o.Key!.split('/').pop()}`, o.Size ?? 0);
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return sizes;
    };
    const pull = async (repo: string, tag: string, img: ReturnType<typeof putImage>) => {
      assert.equal((await fetch(`${hc.url}/v2/${repo}/manifests/${tag}`, { headers: { accept: ALL_MANIFESTS } })).status, 200);
      for (const b of [img.config, ...img.layers]) {
        const res = await fetch(`${hc.url}/v2/${repo}/blobs/${b.digest}`);
        assert.ok(Buffer.from(await res.arrayBuffer()).equals(b.bytes));
      }
    };
    try {
      await hc.waitForLog((l) => l.message === 'pins refreshed');
      const pushed = seededBytes('s3-cap pushed', 10_000);
      const res = await fetch(`${hc.url}/v2/myorg/app/blobs/uploads/?digest=${sha256Digest(pushed)}`, { method: 'POST', body: new Uint8Array(pushed), headers: { 'content-type': 'application/octet-stream' } });
      assert.equal(res.status, 201, await res.text());
      // Pinned (≈10 KB) + pushed (10 KB) + three pulled images (≈10 KB each) stay under 90 % of 60 KiB;
      // the fourth image's layer takes the bucket past it.
      for (const [i, img] of others.entries()) {
        await pull('library/other', `v${i}`, img);
        if (i < 3) assert.ok((await storeBytes())! <= maxSize * 0.9, 'under the high watermark: no pass yet');
      }
      const pass = await hc.waitForLog((l) => l.message === 'eviction pass');
      assert.equal(pass.mode, 'auto');
      assert.ok((pass.storeBytes as number) <= maxSize * 0.5, `down to the low watermark: ${String(pass.storeBytes)}`);
      const left = await inBucket();
      let total = 0;
      for (const size of left.values()) total += size;
      assert.equal(await storeBytes(), total, 'the gauge agrees with the bucket');
      for (const d of [pinned.config.digest, pinned.layers[0]!.digest, sha256Digest(pushed)]) assert.ok(left.has(d), `pinned and pushed blobs kept: ${d}`);
      assert.ok(!left.has(others[0]!.layers[0]!.digest), 'the least recently pulled image went');
      assert.ok(left.has(others[3]!.layers[0]!.digest), 'the latest pulled image stayed');
    } finally {
      await hc.close();
      await upstream.close();
    }
  });
});
