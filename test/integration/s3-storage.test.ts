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
import { sha256Digest } from '../../src/domain/digest.js';
import { isRegistryError } from '../../src/domain/errors.js';
import { silentLogger } from '../../src/lib/logger.js';
import type { HotCachedBlobStore } from '../../src/storage/s3/hot-cache.js';
import { S3StorageError } from '../../src/storage/s3/s3-errors.js';
import { S3Storage, type S3StorageOptions } from '../../src/storage/s3/s3-storage.js';
import { toStorageError } from '../../src/storage/storage-fault.js';
import { VerifyingBlobWriter } from '../../src/storage/verifying-writer.js';
import { describeAccessRecord } from '../../src/storage/testing/access-record.conformance.js';
import { describeBlobStore } from '../../src/storage/testing/blob-store.conformance.js';
import { readAll } from '../../src/storage/testing/helpers.js';
import { describeManifestStore, describeMetadataStore } from '../../src/storage/testing/manifest-store.conformance.js';
import { describeStorage } from '../../src/storage/testing/storage.conformance.js';
import { describeTagStore } from '../../src/storage/testing/tag-store.conformance.js';
import { freePort } from '../support/distribution.js';
import { startRgw, type Rgw } from '../support/rgw.js';

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
  return { store: pick(s), cleanup: () => s.close(), leftovers: () => leftovers(s) };
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
describeAccessRecord('S3Storage.access (per replica, in memory)', async () => {
  const s = storage();
  return { open: () => s.access, persistent: false, cleanup: () => s.close() };
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
        const [wa, wb] = [await a.blobs.create(opts), await bPrefixed.blobs.create(opts)];
        for (let p = 0; p < data.length; p += MiB) await Promise.all([wa.write(data.subarray(p, p + MiB)), wb.write(data.subarray(p, p + MiB))]);
        await Promise.all([wa.commit(sha256Digest(data), data.length), wb.commit(sha256Digest(data), data.length)]);
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
