import { randomUUID } from 'node:crypto';
import { addAbortSignal, type Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { ByteRange } from '../../domain/descriptor.js';
import { parseDigest, type Digest } from '../../domain/digest.js';
import { RegistryError } from '../../domain/errors.js';
import type { BlobInfo, BlobStore, BlobWriter, CreateOptions, StoreUsage } from '../blob-store.js';
import { VerifyingBlobWriter, type RawBlobWriter } from '../verifying-writer.js';
import { BucketTally, type ListedPage } from './bucket-tally.js';
import { isNotFound, isPreconditionFailed, s3Status, toS3Fault } from './s3-errors.js';
import { S3Layout } from './s3-layout.js';
import { PartBuffers } from './part-buffers.js';

export interface S3BlobStoreOptions {
  readonly client: S3Client;
  readonly bucket: string;
  readonly layout: S3Layout;
  /** Bytes per part of a multipart upload (≥ 5 MiB, S3's minimum for all but the last part). */
  readonly partSize: number;
  /** Parts uploading at once per writer. */
  readonly partsInFlight: number;
  /** Part buffers shared by the store's writers (part-buffers.ts); by default the store's own. */
  readonly partBuffers?: PartBuffers;
}

/**
 * Blobs as objects `blobs/sha256/<ab>/<hex>` of a bucket (s3-layout.ts), shared by every replica.
 *
 * A blob writes into a multipart upload: parts of `partSize` go up as they fill, at most
 * `partsInFlight` at once, so a writer holds at most partSize × (partsInFlight + 1) bytes whatever
 * the blob's size. S3 names an upload's key when it is created:
 * - a fill knows its digest up front (`create({ digest })`): the upload goes to the blob's own key,
 *   and `publish` — which `VerifyingBlobWriter` calls only once size and digest matched — completes
 *   it there. An upload is invisible until completed, so nothing shows under `blobs/` before that.
 * - a push learns its digest only at commit: the upload goes to `uploads/<uuid>`; `publish`
 *   completes it there, copies it server-side to the blob's key (one atomic CopyObject — a full
 *   copy inside the object store) and deletes the temp object.
 * Nothing is ever visible under `blobs/` on a mismatch, an abort (AbortMultipartUpload) or a crash
 * (an upload never completed stays invisible until `S3Storage.init`'s sweep of old uploads, or a
 * bucket lifecycle rule for incomplete multipart uploads, removes it). A blob smaller than one part
 * is one create-only PutObject on its key at publish (`If-None-Match: *`; 412 means it is there
 * already).
 *
 * Several replicas may write the same digest at once (a fill lease expired, Redis down): each
 * streams its own upload; the first to publish completes its upload, a later one finds the object
 * there (HEAD) and aborts its upload instead. Two that both complete at once write identical
 * verified bytes: S3 replaces objects atomically, so readers see one or the other, both correct.
 */
export class S3BlobStore implements BlobStore {
  readonly #o: S3BlobStoreOptions;
  /** The usage: a listing of `blobs/` kept current by this store's commits and deletes (bucket-tally.ts). */
  readonly #tally = new BucketTally();

  constructor(o: S3BlobStoreOptions) {
    this.#o = { ...o, partBuffers: o.partBuffers ?? new PartBuffers(o.partSize, o.partsInFlight + 1) };
  }

  /** The part buffers this store's writers share (part-buffers.ts). */
  get partBuffers(): PartBuffers {
    return this.#o.partBuffers!;
  }

  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    try {
      const head = await this.#o.client.send(new HeadObjectCommand({ Bucket: this.#o.bucket, Key: this.#o.layout.blob(parseDigest(digest)) }));
      return { digest, size: head.ContentLength ?? 0 };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw toS3Fault('HeadObject', err);
    }
  }

  /** A GET (ranged for `range`: one round trip, the size checked from Content-Range). */
  async open(digest: Digest, opts: { range?: ByteRange; signal?: AbortSignal } = {}): Promise<Readable> {
    opts.signal?.throwIfAborted();
    const { range } = opts;
    if (range && !(Number.isSafeInteger(range.start) && Number.isSafeInteger(range.end) && range.start >= 0 && range.start <= range.end)) {
      throw new RegistryError('RANGE_INVALID', { digest, range });
    }
    let body: Readable;
    try {
      const out = await this.#o.client.send(
        new GetObjectCommand({ Bucket: this.#o.bucket, Key: this.#o.layout.blob(parseDigest(digest)), ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) }),
        opts.signal ? { abortSignal: opts.signal } : {},
      );
      body = out.Body as Readable;
      if (range) {
        // S3 answers a range past the end with the bytes there are: the size tells.
        const total = Number(/\/(\d+)$/.exec(out.ContentRange ?? '')?.[1] ?? NaN);
        if (!(range.end < total)) {
          body.destroy();
          throw new RegistryError('RANGE_INVALID', { digest, range, ...(Number.isFinite(total) ? { size: total } : {}) });
        }
      }
    } catch (err) {
      if (err instanceof RegistryError) throw err;
      if (isNotFound(err)) throw new RegistryError('BLOB_UNKNOWN', { digest });
      if (s3Status(err) === 416) throw new RegistryError('RANGE_INVALID', { digest, range });
      throw toS3Fault('GetObject', err);
    }
    return opts.signal ? addAbortSignal(opts.signal, body) : body;
  }

  /**
   * A writer; with `opts.digest` (a fill) its multipart upload goes straight to the blob's key (no
   * temp object, no server-side copy), completed only once `VerifyingBlobWriter` has verified it.
   */
  async create(opts: CreateOptions = {}): Promise<BlobWriter> {
    return new VerifyingBlobWriter(this.createRaw(opts.digest), opts);
  }

  /** The backend's raw writer (tests assert on its `bufferedBytes`); `digest`: see `create`. */
  createRaw(digest?: Digest): S3RawWriter {
    return new S3RawWriter(this.#o, digest, this.#tally);
  }

  /** Removes the blob; the HEAD before tells the usage whether there was one (DeleteObject doesn't). */
  async delete(digest: Digest): Promise<void> {
    const key = this.#o.layout.blob(parseDigest(digest));
    await this.#tally.track(
      key,
      async () => {
        const had = await this.stat(digest);
        try {
          await this.#o.client.send(new DeleteObjectCommand({ Bucket: this.#o.bucket, Key: key }));
        } catch (err) {
          if (!isNotFound(err)) throw toS3Fault('DeleteObject', err);
        }
        return had?.size;
      },
      (had) => ({ before: had, after: undefined }),
    );
  }

  /**
   * What the bucket's `blobs/` holds: `undefined` until the first `recountUsage` ended, then its
   * listing plus this store's commits and deletes since (other replicas' show at the next listing).
   */
  usage(): StoreUsage | undefined {
    return this.#tally.usage();
  }

  /**
   * Lists `blobs/` (ListObjectsV2: sizes included, uploads in progress not) and makes the result the
   * usage; commits and deletes made meanwhile are counted exactly once. A listing started after
   * the call: one running is waited for first. `signal` stops it (the usage stays what it was).
   */
  recountUsage(signal?: AbortSignal): Promise<StoreUsage> {
    return this.#tally.recount(() => this.#pages(signal));
  }

  /** Whether a listing for the usage runs now. */
  get counting(): boolean {
    return this.#tally.counting;
  }

  async *#pages(signal?: AbortSignal): AsyncIterable<ListedPage> {
    let token: string | undefined;
    do {
      signal?.throwIfAborted();
      let page;
      try {
        page = await this.#o.client.send(new ListObjectsV2Command({ Bucket: this.#o.bucket, Prefix: this.#o.layout.blobsPrefix(), ...(token ? { ContinuationToken: token } : {}) }), signal ? { abortSignal: signal } : {});
      } catch (err) {
        throw toS3Fault('ListObjectsV2', err);
      }
      const contents = page.Contents ?? [];
      yield {
        entries: contents.flatMap((o) => (o.Key !== undefined && S3Layout.digestOfKey(o.Key) ? [{ key: o.Key, size: o.Size ?? 0 }] : [])),
        lastKey: contents.at(-1)?.Key,
      };
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /** ListObjectsV2 pages: keys come in digest order. `modifiedAt` is the object's Last-Modified. */
  async *list(): AsyncIterable<BlobInfo> {
    yield* listDigests(this.#o.client, this.#o.bucket, this.#o.layout.blobsPrefix());
  }
}

/** Every `…/sha256/<ab>/<hex>` object under `prefix`, in key (= digest) order. */
export async function* listDigests(client: S3Client, bucket: string, prefix: string): AsyncIterable<BlobInfo> {
  let token: string | undefined;
  do {
    let page;
    try {
      page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
    } catch (err) {
      throw toS3Fault('ListObjectsV2', err);
    }
    for (const o of page.Contents ?? []) {
      const digest = o.Key !== undefined ? S3Layout.digestOfKey(o.Key) : undefined;
      if (digest) yield { digest, size: o.Size ?? 0, ...(o.LastModified ? { modifiedAt: o.LastModified.getTime() } : {}) };
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
}

/**
 * A blob going into the bucket: bytes collect in one part-sized buffer; a full buffer becomes an
 * UploadPart of a multipart upload (created with the first full part), at most `partsInFlight` at
 * once — `write` waits for one to finish before starting another (backpressure). A failed part
 * fails the next `write` or `publish`.
 */
/**
 * A server-side copy of `from` to `to`: one CopyObject up to 5 GiB (S3's limit for it), else a
 * multipart copy (UploadPartCopy) in parts of at least `partSize`. Atomic for readers of `to`.
 */
async function copyObject(client: S3Client, bucket: string, from: string, to: string, size: number, partSize: number): Promise<void> {
  const source = `${bucket}/${from.split('/').map(encodeURIComponent).join('/')}`;
  if (size <= COPY_OBJECT_MAX) {
    try {
      await client.send(new CopyObjectCommand({ Bucket: bucket, Key: to, CopySource: source }));
    } catch (err) {
      throw toS3Fault('CopyObject', err);
    }
    return;
  }
  const step = Math.max(partSize, Math.ceil(size / 10_000));
  let uploadId: string | undefined;
  try {
    uploadId = (await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: to }))).UploadId!;
    const parts = [];
    for (let start = 0, n = 1; start < size; start += step, n++) {
      const end = Math.min(start + step, size) - 1;
      const out = await client.send(new UploadPartCopyCommand({ Bucket: bucket, Key: to, UploadId: uploadId, PartNumber: n, CopySource: source, CopySourceRange: `bytes=${start}-${end}` }));
      parts.push({ PartNumber: n, ETag: out.CopyPartResult?.ETag ?? '' });
    }
    await client.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: to, UploadId: uploadId, MultipartUpload: { Parts: parts } }));
  } catch (err) {
    if (uploadId !== undefined) await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: to, UploadId: uploadId })).catch(() => {});
    throw toS3Fault('UploadPartCopy', err);
  }
}

/** S3's limit for a single CopyObject. */
const COPY_OBJECT_MAX = 5 * 1024 ** 3;

export class S3RawWriter implements RawBlobWriter {
  readonly #o: S3BlobStoreOptions;
  #buf: Buffer | undefined;
  #fill = 0;
  #uploadId: Promise<string> | undefined;
  #key: string | undefined;
  #parts: { PartNumber: number; ETag: string }[] = [];
  #inFlight = new Set<Promise<void>>();
  #inFlightBytes = 0;
  #failure: unknown;
  #closed = false;
  #nextPart = 1;
  /** The digest the writer was created for: its upload goes to that blob's key. */
  readonly #digest: Digest | undefined;
  readonly #tally: BucketTally | undefined;

  readonly #buffers: PartBuffers;

  constructor(o: S3BlobStoreOptions, digest?: Digest, tally?: BucketTally) {
    this.#o = o;
    this.#buffers = o.partBuffers ?? new PartBuffers(o.partSize, o.partsInFlight + 1);
    this.#digest = digest;
    this.#tally = tally;
  }

  /**
   * Bytes this writer holds in memory now: its current part buffer's fill plus the parts uploading.
   * At most partSize × (partsInFlight + 1).
   */
  get bufferedBytes(): number {
    return this.#fill + this.#inFlightBytes;
  }

  /** The multipart upload's id once one was started (tests look for it in ListMultipartUploads). */
  async uploadId(): Promise<string | undefined> {
    return this.#uploadId?.catch(() => undefined);
  }

  async write(chunks: readonly Uint8Array[]): Promise<void> {
    if (this.#closed) throw new Error('blob writer is closed');
    this.#throwIfFailed();
    const partSize = this.#o.partSize;
    for (const chunk of chunks) {
      let p = 0;
      while (p < chunk.length) {
        this.#buf ??= this.#buffers.take();
        const n = Math.min(chunk.length - p, partSize - this.#fill);
        this.#buf.set(chunk.subarray(p, p + n), this.#fill);
        this.#fill += n;
        p += n;
        if (this.#fill === partSize) await this.#sendPart();
      }
    }
  }

  /** Hands the full buffer to an UploadPart, after waiting for a free slot. */
  async #sendPart(): Promise<void> {
    while (this.#inFlight.size >= this.#o.partsInFlight) await Promise.race(this.#inFlight);
    this.#throwIfFailed();
    const buf = this.#buf!;
    const body = buf.subarray(0, this.#fill);
    this.#buf = undefined;
    const size = this.#fill;
    this.#fill = 0;
    this.#inFlightBytes += size;
    const partNumber = this.#nextPart++;
    const uploadId = this.#startUpload();
    const upload = (async () => {
      try {
        const id = await uploadId;
        const out = await this.#o.client.send(new UploadPartCommand({ Bucket: this.#o.bucket, Key: this.#key!, UploadId: id, PartNumber: partNumber, Body: body, ContentLength: size }));
        this.#parts.push({ PartNumber: partNumber, ETag: out.ETag ?? '' });
        this.#buffers.give(buf);
      } catch (err) {
        this.#failure ??= toS3Fault('UploadPart', err);
      } finally {
        this.#inFlightBytes -= size;
      }
    })();
    this.#inFlight.add(upload);
    void upload.then(() => this.#inFlight.delete(upload));
  }

  #startUpload(): Promise<string> {
    if (!this.#uploadId) {
      this.#key = this.#digest !== undefined ? this.#o.layout.blob(this.#digest) : this.#o.layout.upload(randomUUID());
      this.#uploadId = this.#o.client
        .send(new CreateMultipartUploadCommand({ Bucket: this.#o.bucket, Key: this.#key }))
        .then((out) => out.UploadId!)
        .catch((err: unknown) => {
          throw toS3Fault('CreateMultipartUpload', err);
        });
      this.#uploadId.catch(() => {});
    }
    return this.#uploadId;
  }

  #throwIfFailed(): void {
    if (this.#failure !== undefined) throw this.#failure;
  }

  async #drain(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.all(this.#inFlight);
  }

  /**
   * Makes the verified bytes the blob `digest`, counted in the store's usage only when the object
   * wasn't there before (another writer's: same digest, same bytes).
   */
  async publish(digest: Digest, size: number): Promise<void> {
    if (this.#closed) throw new Error('blob writer is closed');
    if (this.#digest !== undefined && digest !== this.#digest) throw new Error(`S3 writer created for ${this.#digest} cannot publish ${digest}`);
    const key = this.#o.layout.blob(digest);
    if (!this.#tally) {
      await this.#publish(key, size);
      return;
    }
    await this.#tally.track(
      key,
      () => this.#publish(key, size),
      (created) => ({ before: created ? undefined : size, after: size }),
    );
  }

  /** Resolves with whether this writer created the object (false: it was there already). */
  async #publish(key: string, size: number): Promise<boolean> {
    const { client, bucket } = this.#o;
    if (!this.#uploadId) {
      // Smaller than one part: one create-only PUT. 412: the object is there (same digest, same bytes).
      const body = this.#buf ? this.#buf.subarray(0, this.#fill) : Buffer.alloc(0);
      let created = true;
      try {
        await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentLength: body.length, IfNoneMatch: '*' }));
      } catch (err) {
        if (!isPreconditionFailed(err)) throw toS3Fault('PutObject', err);
        created = false;
      }
      this.#release();
      return created;
    }
    if (this.#fill > 0) await this.#sendPart();
    await this.#drain();
    this.#throwIfFailed();
    const uploadId = await this.#uploadId;
    const parts = [...this.#parts].sort((a, b) => a.PartNumber - b.PartNumber);
    if (this.#digest !== undefined) return this.#publishInPlace(key, uploadId!, parts);
    const temp = this.#key!;
    try {
      await client.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: temp, UploadId: uploadId, MultipartUpload: { Parts: parts } }));
    } catch (err) {
      throw toS3Fault('CompleteMultipartUpload', err);
    }
    this.#uploadId = undefined;
    this.#release();
    try {
      // Another writer may have stored the digest meanwhile: same bytes, nothing to copy.
      const there = await this.#exists(key);
      if (!there) await copyObject(client, bucket, temp, key, size, this.#o.partSize);
      return !there;
    } finally {
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: temp })).catch(() => {
        // Left for init's sweep of old uploads/ objects.
      });
    }
  }

  /**
   * Completes the upload on the blob's own key — unless another writer stored the digest meanwhile
   * (same bytes): then the upload is aborted and the object left as it is.
   */
  async #publishInPlace(key: string, uploadId: string, parts: { PartNumber: number; ETag: string }[]): Promise<boolean> {
    const { client, bucket } = this.#o;
    const there = await this.#exists(key);
    if (there) {
      await this.discard();
      return false;
    }
    try {
      await client.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } }));
    } catch (err) {
      throw toS3Fault('CompleteMultipartUpload', err);
    }
    this.#uploadId = undefined;
    this.#release();
    return true;
  }

  async #exists(key: string): Promise<boolean> {
    return this.#o.client.send(new HeadObjectCommand({ Bucket: this.#o.bucket, Key: key })).then(
      () => true,
      (err: unknown) => {
        if (isNotFound(err)) return false;
        throw toS3Fault('HeadObject', err);
      },
    );
  }

  /** Closes the writer; its part buffer goes back for reuse unless a request may still read it (`reusable` false). */
  #release(reusable = true): void {
    this.#closed = true;
    if (this.#buf && reusable) this.#buffers.give(this.#buf);
    this.#buf = undefined;
    this.#fill = 0;
  }

  async discard(): Promise<void> {
    if (this.#closed) return;
    this.#release();
    await this.#drain();
    const uploadId = await this.#uploadId?.catch(() => undefined);
    if (uploadId === undefined) return;
    try {
      await this.#o.client.send(new AbortMultipartUploadCommand({ Bucket: this.#o.bucket, Key: this.#key!, UploadId: uploadId }));
    } catch (err) {
      if (!isNotFound(err)) throw toS3Fault('AbortMultipartUpload', err);
    }
  }
}
