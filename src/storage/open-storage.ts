import { ConfigError } from '../config/load.js';
import { unknownStorageDriver, type FilesystemStorageConfig, type StorageConfig } from '../config/schema.js';
import type { Logger } from '../lib/logger.js';
import type { AccessRecord } from './access-record.js';
import type { BufferPool } from './buffer-pool.js';
import { FsStorage } from './fs/fs-storage.js';
import type { Storage } from './storage.js';

export interface OpenStorageOptions {
  readonly logger: Logger;
  /** Buffers shared by the stored-blob bodies written to responses (issue #11); default: each body its own. */
  readonly readBuffers?: BufferPool;
  /**
   * For a one-shot reader process (`hubcache ls`, `hubcache du`): the store's walks read with the
   * blocking calls where the backend has them, a third of the CPU (issue #13: 100k tags in
   * seconds). Never in a server: they stall the event loop.
   */
  readonly blockingReads?: boolean;
  /**
   * The last-access record to use instead of the driver's own: the cluster's, in Redis
   * (`cluster` set; issue #15). Taken by the s3 driver; the filesystem driver keeps its access.log
   * (one process owns that store anyway).
   */
  readonly access?: AccessRecord;
}

/**
 * The storage for `config.driver` (the `storage` section of the config), not yet owned or
 * initialised: see `Storage` for what comes next. The one place that knows the drivers' classes.
 * Throws `ConfigError` for a driver it doesn't know (the schema refuses it first; a config built
 * by hand may not have been through it). Asynchronous because a driver's code is loaded only when
 * it is used: the AWS SDK alone takes most of a second to load, which a filesystem store's start
 * (and every CLI command) must not pay.
 */
export async function openStorage(config: StorageConfig, opts: OpenStorageOptions): Promise<Storage> {
  switch (config.driver) {
    case 'filesystem':
      return openFsStorage(config, opts);
    case 's3': {
      const { S3Storage } = await import('./s3/s3-storage.js');
      return new S3Storage({ ...config, logger: opts.logger, ...(opts.readBuffers ? { readBuffers: opts.readBuffers } : {}), ...(opts.access ? { access: opts.access } : {}) });
    }
    default: {
      throw new ConfigError([`storage.driver: ${unknownStorageDriver((config as { driver?: unknown }).driver)}`]);
    }
  }
}

/** The filesystem driver's storage (what `openStorage` builds for it), synchronously. */
export function openFsStorage(config: FilesystemStorageConfig, opts: OpenStorageOptions): FsStorage {
  return new FsStorage({ root: config.path, lockStaleMs: config.lockStaleAfter, accessFlushMs: config.accessFlushInterval, logger: opts.logger, blockingReads: opts.blockingReads === true, ...(opts.readBuffers ? { readBuffers: opts.readBuffers } : {}) });
}
