import { ConfigError } from '../config/load.js';
import { unknownStorageDriver, type StorageConfig } from '../config/schema.js';
import type { Logger } from '../lib/logger.js';
import type { BufferPool } from './buffer-pool.js';
import { FsStorage } from './fs/fs-storage.js';
import { S3Storage } from './s3/s3-storage.js';
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
}

/**
 * The storage for `config.driver` (the `storage` section of the config), not yet owned or
 * initialised: see `Storage` for what comes next. The one place that knows the drivers' classes.
 * Throws `ConfigError` for a driver it doesn't know (the schema refuses it first; a config built
 * by hand may not have been through it).
 */
export function openStorage(config: StorageConfig, opts: OpenStorageOptions): Storage {
  switch (config.driver) {
    case 'filesystem':
      return new FsStorage({ root: config.path, lockStaleMs: config.lockStaleAfter, accessFlushMs: config.accessFlushInterval, logger: opts.logger, blockingReads: opts.blockingReads === true, ...(opts.readBuffers ? { readBuffers: opts.readBuffers } : {}) });
    case 's3':
      return new S3Storage({ ...config, logger: opts.logger, ...(opts.readBuffers ? { readBuffers: opts.readBuffers } : {}) });
    default: {
      throw new ConfigError([`storage.driver: ${unknownStorageDriver((config as { driver?: unknown }).driver)}`]);
    }
  }
}
