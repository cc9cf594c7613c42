import type { Ownership, Storage, StorageDescription, StorageReady } from '../storage.js';
import { StoreOwnedError } from '../storage.js';
import { MemoryAccessRecord } from './memory-access-record.js';
import { MemoryBlobStore } from './memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from './memory-manifest-store.js';

export interface MemoryStorageOptions {
  /** Stores to open (several `MemoryStorage`s over the same stores behave like several processes on one store). */
  readonly blobs?: MemoryBlobStore;
  readonly manifests?: MemoryManifestStore;
  readonly metadata?: MemoryMetadataStore;
  readonly access?: MemoryAccessRecord;
}

/** Who owns which in-memory store (one owner at a time, like a store's lock). */
const owners = new WeakMap<MemoryBlobStore, object>();

/** An in-memory `Storage` for tests; passes the same conformance suite as the filesystem driver. */
export class MemoryStorage implements Storage {
  readonly blobs: MemoryBlobStore;
  readonly manifests: MemoryManifestStore;
  readonly metadata: MemoryMetadataStore;
  readonly access: MemoryAccessRecord;
  readonly spoolDir = undefined;

  constructor(opts: MemoryStorageOptions = {}) {
    this.blobs = opts.blobs ?? new MemoryBlobStore();
    this.manifests = opts.manifests ?? new MemoryManifestStore();
    this.metadata = opts.metadata ?? new MemoryMetadataStore();
    this.access = opts.access ?? new MemoryAccessRecord();
  }

  describe(): StorageDescription {
    return { driver: 'memory', location: 'memory' };
  }

  async acquireOwnership(): Promise<Ownership> {
    if (owners.has(this.blobs)) throw new StoreOwnedError('the in-memory store is owned already');
    const token = {};
    owners.set(this.blobs, token);
    return {
      release: async () => {
        if (owners.get(this.blobs) === token) owners.delete(this.blobs);
      },
    };
  }

  /** Nothing to create or sweep (a memory store outlives no crash); usage is always known. */
  async init(): Promise<StorageReady> {
    return { leftovers: 0, usage: Promise.resolve(this.blobs.usage()) };
  }

  async probeWrite(): Promise<void> {}

  async readable(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {}
}
