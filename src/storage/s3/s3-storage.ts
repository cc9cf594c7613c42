import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { AbortMultipartUploadCommand, DeleteObjectCommand, HeadBucketCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Logger } from '../../lib/logger.js';
import { MemoryAccessRecord } from '../memory/memory-access-record.js';
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
}

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
   * The last-access record of this replica, in memory only (the memory driver's): eviction on a
   * replica sees what it served itself (content another replica served looks older here), and a
   * restart forgets it (eviction then falls back on Last-Modified). Shared last access for several
   * replicas is not built yet (issue #15).
   */
  readonly access = new MemoryAccessRecord();
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
    return { leftovers, usage: Promise.resolve(undefined) };
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

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.access.flush();
    if (this.blobs instanceof HotCachedBlobStore) await this.blobs.settled();
    if (!this.#o.client) this.client.destroy();
  }
}
