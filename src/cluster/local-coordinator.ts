import type { FillClaim, FillCoordinator } from '../cache/fill-coordinator.js';
import { PeerUnavailableError } from '../cache/fill-coordinator.js';

/**
 * One process, nothing shared (`cluster` unset): every claim is `alone`, so a blob's fill starts at
 * once and the process's own single flight is the only one — exactly the behaviour without a
 * coordinator. For callers that want a `FillCoordinator` whatever the configuration.
 */
export class LocalCoordinator implements FillCoordinator {
  claim(): Promise<FillClaim> {
    return Promise.resolve({ kind: 'alone', reason: 'single node' });
  }

  follow(): Promise<never> {
    return Promise.reject(new PeerUnavailableError('a single node has no peers'));
  }

  waitForRelease(): Promise<void> {
    return Promise.resolve();
  }
}
