import { describeAccessRecord } from '../testing/access-record.conformance.js';
import { MemoryAccessRecord } from './memory-access-record.js';
import { describeBlobStore } from '../testing/blob-store.conformance.js';
import { describeManifestStore, describeMetadataStore } from '../testing/manifest-store.conformance.js';
import { describeStorage } from '../testing/storage.conformance.js';
import { describeTagStore } from '../testing/tag-store.conformance.js';
import { MemoryBlobStore } from './memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from './memory-manifest-store.js';
import { MemoryStorage } from './memory-storage.js';

const noCleanup = async () => {};

describeBlobStore('MemoryBlobStore', async () => {
  const store = new MemoryBlobStore();
  return { store, cleanup: noCleanup, leftovers: async () => store.pendingWrites };
});
describeManifestStore('MemoryManifestStore', async () => ({ store: new MemoryManifestStore(), cleanup: noCleanup }));
describeMetadataStore('MemoryMetadataStore', async () => ({ store: new MemoryMetadataStore(), cleanup: noCleanup }));
describeTagStore('MemoryMetadataStore', async () => ({ store: new MemoryMetadataStore(), cleanup: noCleanup }));
describeStorage('MemoryStorage', async () => {
  const stores = { blobs: new MemoryBlobStore(), manifests: new MemoryManifestStore(), metadata: new MemoryMetadataStore() };
  return { open: () => new MemoryStorage(stores), cleanup: noCleanup };
});
describeAccessRecord('MemoryAccessRecord', async () => {
  const record = new MemoryAccessRecord();
  return { open: () => record, persistent: false, cleanup: noCleanup };
});
