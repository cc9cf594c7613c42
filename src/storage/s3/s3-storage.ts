import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { AbortMultipartUploadCommand, DeleteObjectCommand, HeadBucketCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Logger } from '../../lib/logger.js';
import type { AccessRecord } from '../access-record.js';
import type { StoreUsage } from '../blob-store.js';
import { S3AccessRecord } from './s3-access-record.js';
import type { Ownership, Storage, StorageDescription, StorageReady } from '../storage.js';
import type { BufferPool } from '../buffer-pool.js';
import { HotCachedBlobStore } from './hot-cache.js';
import { S3BlobStore } from './s3-blob-store.js';
import { createS3Client, type S3ConnectionOptions } from './s3-client.js';
import { toS3Fault } from './s3-errors.js';
import { S3Layout } from './s3-layout.js';
import { S3ManifestStore, S3MetadataStore } from './s3-manifest-store.js';

export interface S3StorageOptions extends S3ConnectionOptions {
  readonly prefix: string;
  readonly partSize: number;
  readonly partsInFlight: number;
  readonly logger: Logger;
  /**
   * Multipart uploads (and temp objects under `uploads/`) older than this are another replica's
   * crash, not its fill in progress: `init` removes them. Default 24 h — far beyond any fill.
   */
  readonly abandonedUploadAgeMs?: number;
  /** The clock (ms) the sweep compares upload times to. Default `Date.now`. */
  readonly now?: () => number;
  /** A client to use instead of building one (tests). */
  readonly client?: S3Client;
  /**
   * `storage.path`: the replica's own local directory. Fills spool there (`<path>/spool`) for the
   * clients following them, since an upload can't be read back; the OS's temp dir without it.
   */
  readonly path?: string;
  /** `storage.hotCache`: a local LRU directory in front of the bucket's blobs (hot-cache.ts). */
  readonly hotCache?: { readonly path: string; readonly maxSize: number } | undefined;
  /** Buffers shared by the hot cache's local blob bodies (see OpenStorageOptions.readBuffers). */
  readonly readBuffers?: BufferPool;
  /**
   * The last-access record to use instead of the bucket's own (`S3AccessRecord`): the cluster's,
   * in Redis, when `cluster` is set (OpenStorageOptions.access).
   */
  readonly access?: AccessRecord;
  /** How often the access record's changes are written (storage.accessFlushInterval); default 10 s. */
  readonly accessFlushInterval?: number;
  /**
   * How often `blobs/` is listed again to learn the usage (other replicas' commits and deletes);
   * default `USAGE_RECOUNT_MS`. The first listing starts at `init`.
   */
  readonly usageRecountMs?: number;
}

/** How often an S3 store lists its blobs again by default: 5 minutes (one ListObjectsV2 per 1000 blobs). */
export const USAGE_RECOUNT_MS = 5 * 60_000;

/**
 * `storage.driver: s3`: blobs, manifests and metadata in an S3-compatible bucket (docs/storage-layout.md),
 * shared by any number of replicas at once. Nothing is owned: objects are content-addressed, commits
 * idempotent (see S3BlobStore), tags replaced atomically, so `acquireOwnership` grants every caller a
 * harmless ownership and `init` never removes what another live replica is writing — only uploads older
 * than `abandonedUploadAgeMs`. A bucket lifecycle rule (AbortIncompleteMultipartUpload after a day,
 * expire `uploads/` after a day) does the same without any replica.
 */
export class S3Storage implements Storage {
  /** The blobs: the bucket's, or the hot cache in front of them. */
  readonly blobs: S3BlobStore | HotCachedBlobStore;
  /** The bucket's blobs themselves. */
  readonly bucketBlobs: S3BlobStore;
  readonly manifests: S3ManifestStore;
  readonly metadata: S3MetadataStore;
  /**
   * When each blob, manifest and tag was last served: without `cluster`, batch objects in the
   * bucket (`S3AccessRecord`, persistent across restarts); with it, the cluster's record in Redis
   * (handed in as `access`), which every replica writes and the one running eviction reads.
   */
  readonly access: AccessRecord;
  #flushTimer: NodeJS.Timeout | undefined;
  #recountTimer: NodeJS.Timeout | undefined;
  #usage: Promise<StoreUsage | undefined> | undefined;
  readonly #stop = new AbortController();
  readonly spoolDir: string | undefined;
  readonly client: S3Client;
  readonly layout: S3Layout;
  readonly #o: S3StorageOptions;
  #closed = false;

  constructor(o: S3StorageOptions) {
    this.#o = o;
    this.spoolDir = o.path === undefined ? undefined : join(o.path, 'spool');
    this.client = o.client ?? createS3Client(o);
    this.layout = new S3Layout(o.prefix);
    const where = { client: this.client, bucket: o.bucket, layout: this.layout };
    this.bucketBlobs = new S3BlobStore({ ...where, partSize: o.partSize, partsInFlight: o.partsInFlight });
    this.blobs = o.hotCache ? new HotCachedBlobStore(this.bucketBlobs, { ...o.hotCache, logger: o.logger, ...(o.readBuffers ? { readBuffers: o.readBuffers } : {}) }) : this.bucketBlobs;
    this.manifests = new S3ManifestStore(where);
    this.metadata = new S3MetadataStore(where);
    this.access = o.access ?? new S3AccessRecord(where);
  }

  describe(): StorageDescription {
    const endpoint = this.#o.endpoint ?? `aws:${this.#o.region}`;
    return { driver: 's3', location: `s3://${this.#o.bucket}/${this.#o.prefix} (${endpoint})` };
  }

  /** Every replica writes the bucket at once: nothing to own (see the class comment). */
  async acquireOwnership(): Promise<Ownership> {
    return { release: async () => {} };
  }

  /**
   * Checks the bucket is there and the credentials work (a clear error at start, not at the first
   * pull), then removes abandoned uploads (older than `abandonedUploadAgeMs`).
   */
  async init(): Promise<StorageReady> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.#o.bucket }));
    } catch (err) {
      throw new Error(`storage: bucket ${JSON.stringify(this.#o.bucket)} at ${this.#o.endpoint ?? 'AWS'} is not usable: ${String((toS3Fault('HeadBucket', err) as Error).message)}`, { cause: err });
    }
    const leftovers = await this.sweepAbandonedUploads();
    if (this.spoolDir !== undefined) await mkdir(this.spoolDir, { recursive: true });
    if (this.blobs instanceof HotCachedBlobStore) await this.blobs.init();
    if (this.access instanceof S3AccessRecord) {
      const record = this.access;
      void record.load().then(() => record.loadError && this.#o.logger.warn('access record unreadable, starting a new one', { prefix: this.layout.accessPrefix(), error: record.loadError.message }));
    }
    this.#flushTimer ??= setInterval(() => void this.#flushAccess(), this.#o.accessFlushInterval ?? 10_000).unref();
    // The usage: a listing of blobs/ in the background (never delaying the start), then again every
    // usageRecountMs so that other replicas' commits and deletes show up (bucket-tally.ts).
    this.#usage ??= this.#recount();
    this.#recountTimer ??= setInterval(() => {
      if (!this.bucketBlobs.counting) void this.#recount();
    }, this.#o.usageRecountMs ?? USAGE_RECOUNT_MS).unref();
    return { leftovers, usage: this.#usage };
  }

  /** Lists the blobs now: a pass under the cluster's maintenance lock judges the bucket by what every replica stored. */
  async refreshUsage(): Promise<void> {
    await this.bucketBlobs.recountUsage(this.#stop.signal);
  }

  /** One listing of the blobs for the usage; `undefined` when it failed (logged) or was stopped by `close`. */
  #recount(): Promise<StoreUsage | undefined> {
    return this.bucketBlobs.recountUsage(this.#stop.signal).then(
      (usage) => usage,
      (err: unknown) => {
        if (!this.#stop.signal.aborted) this.#o.logger.warn('store usage count failed', { storage: this.describe().location, error: (err as Error).message });
        return undefined;
      },
    );
  }

  /**
   * Aborts multipart uploads (fills' under `blobs/`, pushes' under `uploads/`) and removes temp
   * objects under `uploads/` older than the abandoned age; returns how many.
   */
  async sweepAbandonedUploads(): Promise<number> {
    const cutoff = (this.#o.now ?? Date.now)() - (this.#o.abandonedUploadAgeMs ?? 24 * 3600_000);
    const prefix = this.layout.uploadsPrefix();
    let removed = 0;
    try {
      for (const uploadsUnder of [this.layout.blobsPrefix(), prefix]) {
        let keyMarker: string | undefined;
        let idMarker: string | undefined;
        do {
          const page = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.#o.bucket, Prefix: uploadsUnder, ...(keyMarker ? { KeyMarker: keyMarker, UploadIdMarker: idMarker } : {}) }));
          for (const u of page.Uploads ?? []) {
            if (u.Key === undefined || u.UploadId === undefined || (u.Initiated?.getTime() ?? 0) > cutoff) continue;
            await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.#o.bucket, Key: u.Key, UploadId: u.UploadId }));
            removed++;
          }
          keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
          idMarker = page.NextUploadIdMarker;
        } while (keyMarker);
      }
      let token: string | undefined;
      do {
        const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.#o.bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
        for (const c of page.Contents ?? []) {
          if (c.Key === undefined || (c.LastModified?.getTime() ?? 0) > cutoff) continue;
          await this.client.send(new DeleteObjectCommand({ Bucket: this.#o.bucket, Key: c.Key }));
          removed++;
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      throw toS3Fault('sweep of abandoned uploads', err);
    }
    if (removed > 0) this.#o.logger.info('removed abandoned uploads', { count: removed });
    return removed;
  }

  async probeWrite(): Promise<void> {
    const key = this.layout.probe(randomUUID());
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.#o.bucket, Key: key, Body: Buffer.from('probe'), ContentLength: 5 }));
      await this.client.send(new DeleteObjectCommand({ Bucket: this.#o.bucket, Key: key }));
    } catch (err) {
      throw toS3Fault('probe write', err);
    }
  }

  async readable(): Promise<boolean> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.#o.bucket }));
      return true;
    } catch {
      return false;
    }
  }

  async #flushAccess(): Promise<void> {
    await this.access.flush().catch((err: unknown) => this.#o.logger.warn('access record flush failed', { storage: this.describe().location, error: (err as Error).message }));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#flushTimer);
    clearInterval(this.#recountTimer);
    this.#stop.abort();
    await this.#flushAccess();
    if (this.blobs instanceof HotCachedBlobStore) await this.blobs.settled();
    if (!this.#o.client) this.client.destroy();
  }
}
