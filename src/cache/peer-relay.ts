import type { Readable } from 'node:stream';
import type { BlobInfo, BlobStore, BlobWriter } from '../storage/blob-store.js';
import { VerifyingBlobWriter } from '../storage/verifying-writer.js';
import { UpstreamError, type Upstream, type UpstreamBlob } from '../upstream/upstream.js';
import type { CacheKind, CacheMetrics, CacheOutcome, FillFailure, PassThroughKind, StoreReadKind } from './cache-metrics.js';

/**
 * The pieces that turn a `BlobFill` into a **relay** of a fill running on another replica
 * (docs/architecture.md#several-replicas): its "upstream" is that replica's follow endpoint, its
 * "store" keeps nothing. So the requests of one replica for a blob another replica is downloading
 * share ONE peer stream, verified once (the writer hashes what passes; the last byte waits for the
 * digest as in any fill), with the same memory window, spool and reader machinery as a local fill.
 */

/** An `Upstream` whose only blob is the peer's stream; everything else is refused (never called by a fill). */
export function peerUpstream(name: string, follow: (signal: AbortSignal) => Promise<{ readonly size: number; readonly body: Readable }>): Upstream {
  const refuse = () => Promise.reject(new UpstreamError('protocol', 'a peer relay serves one blob only'));
  return {
    name,
    headManifest: refuse,
    getManifest: refuse,
    headBlob: refuse,
    listTags: refuse,
    async getBlob(_repo, _digest, opts): Promise<UpstreamBlob> {
      // A broken peer stream is not resumed: the relay fails, its clients retry.
      if (opts?.offset) throw new UpstreamError('unavailable', 'a peer stream is not resumed');
      const { size, body } = await follow(opts?.signal ?? new AbortController().signal);
      return { size, offset: 0, body };
    },
    rateLimit: () => undefined,
    close: () => Promise.resolve(),
  };
}

/** A `BlobStore` that verifies what is written to it and keeps nothing (the filling replica commits). */
export function discardingStore(): BlobStore {
  return {
    stat: () => Promise.resolve(undefined),
    open: () => Promise.reject(new Error('a relay keeps no blob')),
    delete: () => Promise.resolve(),
    // eslint-disable-next-line require-yield
    list: async function* (): AsyncGenerator<BlobInfo> {},
    create: (): Promise<BlobWriter> =>
      Promise.resolve(
        new VerifyingBlobWriter({
          write: () => Promise.resolve(),
          publish: () => Promise.resolve(),
          discard: () => Promise.resolve(),
        }),
      ),
  };
}

/** The cache's metrics for a relay: its lookups and joins count; it is not a fill and downloads nothing from upstream. */
export class RelayMetrics implements CacheMetrics {
  readonly #m: CacheMetrics;
  constructor(m: CacheMetrics) {
    this.#m = m;
  }
  cache(kind: CacheKind, outcome: CacheOutcome): void {
    this.#m.cache(kind, outcome);
  }
  joined(kind: CacheKind): void {
    this.#m.joined(kind);
  }
  passThrough(kind: PassThroughKind): void {
    this.#m.passThrough(kind);
  }
  passThroughBytes(kind: PassThroughKind, n: number): void {
    this.#m.passThroughBytes(kind, n);
  }
  storeReadFault(kind: StoreReadKind): void {
    this.#m.storeReadFault(kind);
  }
  /** A relay's tail (the peer stream's last byte → this replica's client's last byte) is overhead its clients see too. */
  fillTail(seconds: number): void {
    this.#m.fillTail(seconds);
  }
  bytesFromUpstream(): void {}
  fillQueued(): void {}
  fillDropped(): void {}
  fillStarted(): void {}
  fillContinuedUnattended(): void {}
  fillEnded(_result: 'committed' | 'cancelled' | FillFailure): void {}
  fillResumed(): void {}
}

