import type { Readable, Writable } from 'node:stream';
import type { Digest } from '../domain/digest.js';
import type { RepoKey, Tag } from '../domain/reference.js';
import type { TagEntry } from '../storage/tag-store.js';

/**
 * What the cache needs from the other replicas of a cluster (issue #15,
 * docs/architecture.md#several-replicas) so that one blob is downloaded once for all of them: a
 * lease per digest (who fills it) and a way to stream a fill in flight from the replica that holds
 * it. The cache knows this interface only; `src/cluster/` implements it over Redis, and a single
 * process uses none (or `cluster/local-coordinator.ts`, which always answers `alone`).
 */
export interface FillCoordinator {
  /**
   * Who downloads `digest`: this replica (`lease`: start the fill and hold the lease while it
   * runs), another one (`peer`: follow it), or nobody can tell (`alone`: the shared state is
   * unreachable or there is none — fill locally, verified as always, without cluster-wide
   * single flight). Never rejects.
   */
  claim(digest: Digest): Promise<FillClaim>;
  /**
   * The bytes of `digest` from the replica at `peerUrl` that is filling it, as they arrive there.
   * Rejects with `PeerUnavailableError` when that replica can't be reached or no longer has the fill
   * (it ended: the store has the blob, or it failed). The body is not verified here.
   */
  follow(peerUrl: string, digest: Digest, signal: AbortSignal): Promise<{ readonly size: number; readonly body: Readable }>;
  /**
   * Resolves once the lease on `digest` is gone (released, or expired because its holder died), or
   * after `maxMs` at the latest, or when `signal` aborts. Never rejects.
   */
  waitForRelease(digest: Digest, maxMs: number, signal: AbortSignal): Promise<void>;
}

export type FillClaim =
  | { readonly kind: 'lease'; readonly lease: FillLease }
  | { readonly kind: 'peer'; readonly holder: string; readonly url: string; readonly ttlMs: number }
  | { readonly kind: 'alone'; readonly reason: string };

/** This replica's right to download one blob for the cluster, until it is released or expires. */
export interface FillLease {
  /** The lease's time to live: renew well within it (the cache renews every third). */
  readonly ttlMs: number;
  /**
   * True the first time only: concurrent requests of one replica share one claim, and the one that
   * takes the lease starts the fill (the others join it).
   */
  take(): boolean;
  /** Extends the lease by its TTL if this replica still holds it; false when it was lost (expired, taken over). Never rejects. */
  renew(): Promise<boolean>;
  /** Gives the lease up if this replica still holds it (idempotent, never rejects). */
  release(): Promise<void>;
}

/** The replica named in a lease can't stream the fill (unreachable, or its fill ended). */
export class PeerUnavailableError extends Error {
  constructor(message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'PeerUnavailableError';
  }
}

/** What a replica's follow endpoint reads: a fill running here, streamed as it lands (PullThroughRegistry). */
export interface FillSource {
  /**
   * A reader of the whole blob from the fill of `digest` running in this process, once upstream
   * has answered; `undefined` when there is no such fill (it ended, failed, or never ran here).
   */
  followFill(digest: Digest, signal: AbortSignal): Promise<FollowedFill | undefined>;
}

/**
 * A fill followed by the follow endpoint: its size and a reader of the whole blob. `body.writeTo`,
 * when there, writes the bytes straight to a socket in corked batches at each wake-up of the fill
 * (the fill reader's fast path, as for the replica's own clients) instead of one write per
 * upstream chunk through a stream; it resolves when every byte went out and rejects like the stream.
 */
export interface FollowedFill {
  readonly size: number;
  readonly body: Readable & { writeTo?(dest: Writable): Promise<void> };
}

/**
 * Tag revalidation shared by the replicas of a cluster (issue #15): one HEAD per tag per TTL for
 * the whole cluster. The tag's latest validation is kept in Redis (and written through to the
 * store's tag record as before, so that without Redis tags are served from the store, stale when
 * the upstream is down); a replica whose copy is past its TTL takes a short lock before it asks
 * upstream, and the others serve their copy meanwhile.
 */
export interface TagCoordinator {
  /** The cluster's latest validation of the tag (`undefined`: none known, or Redis unreachable). Never rejects. */
  validated(key: RepoKey, tag: Tag): Promise<TagEntry | undefined>;
  /**
   * The right to revalidate the tag now: `true` (ask upstream, then `publish`), `false` (another
   * replica is asking right now: serve the copy at hand), or `alone` (Redis unreachable: ask
   * upstream as a single node would). Never rejects.
   */
  claimRevalidation(key: RepoKey, tag: Tag): Promise<boolean | 'alone'>;
  /** Records a validation for the cluster and lets the revalidation lock go. Never rejects. */
  publish(key: RepoKey, tag: Tag, entry: TagEntry): Promise<void>;
  /** Lets the lock go without a validation (the upstream request failed). Never rejects. */
  releaseRevalidation(key: RepoKey, tag: Tag): Promise<void>;
}

/**
 * The cluster's maintenance lock (issue #15): eviction passes and hosted garbage collection delete
 * content every replica serves, so one replica runs them at a time. `cluster/redis-coordinator.ts`
 * implements it over Redis; a single node has none (every pass runs).
 */
export interface MaintenanceLock {
  /**
   * Takes the lock: `held` (run the pass; `signal` aborts if the lock is lost — it could not be
   * renewed within its TTL — and the pass should stop deleting; `release` when done), `busy` (another
   * replica runs a pass: `holder` names it), or `unavailable` (Redis unreachable: nobody can tell,
   * so no destructive pass runs). Never rejects.
   */
  acquire(): Promise<MaintenanceClaim>;
  /**
   * When the cluster last ran each periodic part of a pass (ms since epoch, as the replica that ran
   * it recorded with `recordPass`), so that a replica doesn't run again what another one just ran.
   * `{}` when unknown (Redis unreachable). Never rejects.
   */
  lastPasses(): Promise<{ readonly retention?: number; readonly garbage?: number }>;
  /** Records that this replica ran `part` at `atMs` (under the lock). Never rejects. */
  recordPass(part: 'retention' | 'garbage', atMs: number): Promise<void>;
}

export type MaintenanceClaim =
  | { readonly kind: 'held'; readonly signal: AbortSignal; release(): Promise<void> }
  | { readonly kind: 'busy'; readonly holder: string }
  | { readonly kind: 'unavailable'; readonly reason: string };

/**
 * Per-digest exclusion between pushes and garbage collection across replicas (issue #15): a push
 * on one replica marks the digests it checks and links as in use; garbage collection on another
 * claims a digest before it deletes it and gets no claim while a push uses it; a push waits while
 * a digest is claimed. Both marks carry a TTL, so a replica that dies holding one blocks nobody for
 * long. See docs/architecture.md#several-replicas.
 */
export interface DigestGuards {
  /**
   * Marks `digests` in use by a push, after any collection of one of them has ended. `coordinated`
   * is false when Redis could not be asked (the push then goes on alone: garbage collection doesn't
   * sweep without Redis). Never rejects.
   */
  use(digests: readonly Digest[]): Promise<{ readonly coordinated: boolean; release(): Promise<void> }>;
  /** Garbage collection's claim on `digest`: `undefined` while a push on any replica uses it or Redis can't be asked; else its release. Never rejects. */
  collect(digest: Digest): Promise<(() => Promise<void>) | undefined>;
}
