import { EventEmitter } from 'node:events';
import { Readable } from 'node:stream';
import type { ByteRange } from '../domain/descriptor.js';
import type { Digest } from '../domain/digest.js';
import { isRegistryError } from '../domain/errors.js';
import type { RepoKey } from '../domain/reference.js';
import type { Logger } from '../lib/logger.js';
import type { BlobInfo, BlobStore, BlobWriter } from '../storage/blob-store.js';
import { isStorageFault } from '../storage/storage-fault.js';
import { UpstreamError, type Upstream } from '../upstream/upstream.js';
import type { CacheMetrics, FillFailure } from './cache-metrics.js';
import { decideAbandonedFill, type AbandonedFillBudget } from './cache-policy.js';
import { ChunkWindow } from './chunk-window.js';
import type { Slot, SlotQueue } from './slot-queue.js';
import { openSpool, StorageWriteError, type Spool } from './spool.js';
import { WriteBatcher } from './write-batcher.js';

/** What a fill does once every client has gone (cache.abandonedFills). */
export interface AbandonedFillPolicy extends AbandonedFillBudget {
  /** How long a running download waits for a client to come back before the budget decides. */
  readonly graceMs: number;
}

/** Runs `fn` once after `ms` unless the returned function is called first (tests drive it by hand). */
export type Schedule = (ms: number, fn: () => void) => () => void;

const timerSchedule: Schedule = (ms, fn) => {
  const timer = setTimeout(fn, ms);
  timer.unref(); // a pending grace must not keep a stopping process alive
  return () => clearTimeout(timer);
};

export interface BlobFillOptions {
  readonly key: RepoKey;
  readonly digest: Digest;
  readonly upstream: Upstream;
  readonly store: BlobStore;
  /** The fill's own deadline: it belongs to the cache, not to the client that started it. */
  readonly timeoutMs: number;
  /** Range requests made to resume a broken download before giving up. */
  readonly resumeAttempts: number;
  /** Download slots shared by every fill (cache.maxConcurrentFills): the fill waits its turn here. */
  readonly slots: SlotQueue;
  /** Awaited once the slot is held, before the download starts (the store's cap: evictor.ts waitForRoom). Must not reject. */
  readonly beforeDownload?: () => Promise<void>;
  readonly abandoned: AbandonedFillPolicy;
  /** A local directory for the fill's spool file when the store writer offers no local file (cache/spool.ts). */
  readonly spoolDir: string;
  readonly schedule?: Schedule;
  readonly logger: Logger;
  readonly metrics: CacheMetrics;
}

/** Followers read the fill's spool in pieces of this size (large pieces: fewer reads, see the bench). */
const READ_CHUNK = 1024 * 1024;
/** Upstream bytes queued while a file write is in flight, at most (per fill). */
const MAX_PENDING_WRITE = 2 * 1024 * 1024;
/** Recent bytes held in memory for followers (per fill), beyond the ones not yet written. */
const WINDOW_BYTES = 4 * 1024 * 1024;

/**
 * One upstream download of one blob, shared by every client that asks for it while it runs.
 * Bytes are written to a store writer (which hashes them). Clients get them as they arrive: from a
 * bounded in-memory window of the latest chunks (shared by all followers), or, when a client has
 * fallen behind the window, by positional reads of the fill's spool (cache/spool.ts: the store's
 * own temp file when the writer offers one, else a local copy the fill writes alongside). Nobody
 * waits for the whole blob, and memory stays flat whatever the blob size or the number of clients.
 * The store only takes bytes; reading them back is the cache's business.
 *
 * The final byte is held back from every follower until the digest is verified: if upstream sent
 * wrong bytes, every client connection is aborted instead of ending cleanly with wrong content
 * (docs/architecture.md#the-final-byte-waits-for-verification). It goes out as soon as the bytes are verified, while the store makes them durable
 * and visible (fsync, rename). A broken upstream connection is resumed with Range.
 *
 * The fill belongs to the cache, not to a client: one client leaving never stops it while another
 * waits or reads. Clients are counted (`attach`, readers); a download waits for one of the shared
 * slots first (first come, first served), and when every client has gone (issue #11, point 8) a
 * queued fill is dropped at once, without asking upstream, and a running one, after a grace for
 * clients that come back (a resumed connection), goes on only within the abandoned-fill budget:
 * otherwise the upstream request is aborted and the temp data removed. Its `ready` and `done`
 * reject then, and the next request starts a fresh fill.
 */
export class BlobFill {
  readonly digest: Digest;
  /** Resolves with the blob's size once upstream answered; rejects when the download can't start. */
  readonly ready: Promise<number>;
  /** Resolves when the blob is verified and committed; rejects when the fill failed. */
  readonly done: Promise<BlobInfo>;

  #size = -1;
  /** Where followers behind the window read; open from the upstream's answer until the readers are done. */
  #spool: Spool | undefined;
  #state: 'queued' | 'starting' | 'running' | 'committed' | 'failed' = 'starting';
  #error: Error | undefined;
  /** Clients waiting for `ready` or deciding how to read (`attach`). */
  #waiters = 0;
  /** Readers from `createReader` not yet destroyed. */
  #readers = 0;
  #released = false;
  /** Set when every client had gone and the budget stopped the fill (before it actually ended). */
  #abandoned: 'dropped' | 'cancelled' | undefined;
  /** Every client had gone and the budget let the download go on. */
  #unattended = false;
  #stopGrace: (() => void) | undefined;
  readonly #cancel = new AbortController();
  /** Bytes received from upstream (≥ written: the rest waits in the write batcher). */
  #received = 0;
  /** The received bytes hash to the digest: the final byte may go out. */
  #verified = false;
  readonly #window = new ChunkWindow(WINDOW_BYTES);
  readonly #events = new EventEmitter().setMaxListeners(0);
  readonly #opts: BlobFillOptions;

  constructor(opts: BlobFillOptions) {
    this.#opts = opts;
    this.digest = opts.digest;
    let resolveReady!: (n: number) => void;
    let rejectReady!: (e: Error) => void;
    this.ready = new Promise((res, rej) => ((resolveReady = res), (rejectReady = rej)));
    this.done = this.#run(resolveReady, rejectReady);
    // Nobody may be listening when a fill fails (its first client left): that is not a crash.
    this.ready.catch(() => {});
    this.done.catch(() => {});
  }

  get size(): number {
    return this.#size;
  }

  /** Bytes received from upstream so far (readers can have them before they reach the file). */
  get received(): number {
    return this.#received;
  }

  /** Every byte arrived and hashes to the digest; the store is committing it (or just did). */
  get verified(): boolean {
    return this.#verified;
  }

  /** True while new readers can follow this fill (until it failed, was cancelled or its bytes were released). */
  get followable(): boolean {
    return this.#state !== 'failed' && !this.#released && !this.#abandoned;
  }

  /** Waiting for a download slot: upstream hasn't been asked yet. */
  get queued(): boolean {
    return this.#state === 'queued';
  }

  /**
   * Counts a client of this fill until the returned function is called (idempotent): a request
   * waiting for `ready` or about to read. Readers from `createReader` count themselves, so take the
   * reader before letting go. When the last client is gone, the abandoned-fill policy applies.
   */
  attach(): () => void {
    this.#waiters++;
    this.#clientsChanged();
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.#waiters--;
      this.#clientsChanged();
    };
  }

  async #run(resolveReady: (n: number) => void, rejectReady: (e: Error) => void): Promise<BlobInfo> {
    const { key, digest, upstream, store, slots, logger, metrics } = this.#opts;
    let slot: Slot;
    try {
      slot = await this.#admit();
    } catch (err) {
      this.#state = 'failed';
      this.#error = err as Error;
      rejectReady(err as Error);
      this.#events.emit('change');
      throw err;
    }
    await this.#opts.beforeDownload?.();
    // The fill's own deadline runs from the start of the download, not from the time it was queued.
    const deadline = AbortSignal.timeout(this.#opts.timeoutMs);
    const signal = AbortSignal.any([deadline, this.#cancel.signal]);
    const started = Date.now();
    let writer: BlobWriter | undefined;
    let spool: Spool | undefined;
    try {
      writer = await store.create().catch(storageFailure('store'));
      const sink = await openSpool(writer, { dir: this.#opts.spoolDir }).catch(storageFailure('spool'));
      spool = sink;
      let res = await upstream.getBlob(key.repo, digest, { signal });
      this.#size = res.size;
      this.#spool = sink;
      this.#state = 'running';
      logger.info('fill started', { digest, upstream: key.upstream, repository: key.repo, size: res.size, slotsHeld: slots.held, queued: slots.waiting });
      resolveReady(res.size);
      let resumes = 0;
      const batcher = new WriteBatcher(async (chunks, bytes) => {
        await sink.write(chunks);
        metrics.bytesFromUpstream(key.upstream, bytes);
        this.#window.evict(sink.readable);
      }, MAX_PENDING_WRITE);
      for (;;) {
        try {
          for await (const chunk of res.body as AsyncIterable<Buffer>) {
            if (this.#received + chunk.length > this.#size) throw new UpstreamError('protocol', 'upstream sent more bytes than announced');
            this.#window.append(chunk);
            this.#received += chunk.length;
            this.#announce();
            await batcher.push(chunk);
          }
          await batcher.flush();
          if (writer.written === this.#size) break;
          throw new UpstreamError('unavailable', `upstream body ended after ${writer.written} of ${this.#size} bytes`);
        } catch (err) {
          res.body.destroy();
          // Bytes received before the break are good: write them, so the resume starts after them.
          // A failed write (storage error) ends the fill here.
          await batcher.flush();
          if (signal.aborted || !resumable(err) || resumes >= this.#opts.resumeAttempts) throw err;
          resumes++;
          metrics.fillResumed();
          logger.warn('fill resumed', { digest, offset: writer.written, attempt: resumes, error: (err as Error).message });
          res = await upstream.getBlob(key.repo, digest, { offset: writer.written, signal });
          if (res.size !== this.#size || res.offset !== writer.written) throw new UpstreamError('protocol', 'upstream changed the blob while resuming');
        }
      }
      const info = await writer
        .commit(digest, this.#size, {
          onVerified: () => {
            this.#verified = true;
            this.#events.emit('change');
          },
        })
        // A mismatch is a RegistryError; anything else (fsync, rename, an upload's completion) is the store's.
        .catch((err: unknown) => (isRegistryError(err) ? Promise.reject(err) : storageFailure('store')(err)));
      this.#window.clear(sink.readable);
      this.#state = 'committed';
      metrics.fillEnded('committed');
      logger.info('fill committed', { digest, bytes: info.size, ms: Date.now() - started, resumes, ...(this.#unattended ? { unattended: true } : {}) });
      this.#events.emit('change');
      this.#maybeRelease();
      return info;
    } catch (raw) {
      const cancelled = this.#abandoned === 'cancelled';
      const timedOut = !cancelled && deadline.aborted;
      const err = cancelled ? (this.#cancel.signal.reason as Error) : timedOut ? new UpstreamError('unavailable', 'blob download exceeded the fill timeout', { cause: raw }) : (raw as Error);
      this.#state = 'failed';
      this.#error = err;
      this.#window.clear(0);
      rejectReady(err);
      this.#events.emit('change');
      if (cancelled) {
        await writer?.abort().catch(() => {});
        await spool?.close();
        metrics.fillEnded('cancelled');
        // Logged once the temp data is gone.
        logger.info('fill cancelled', { digest, reason: 'every client left', received: this.#received, expected: this.#size, ms: Date.now() - started });
        throw err;
      }
      const reason = failureReason(raw, timedOut);
      metrics.fillEnded(reason);
      logger.warn('fill failed', { digest, reason, error: err.message, received: writer?.written ?? 0, expected: this.#size });
      await writer?.abort().catch(() => {});
      // Readers were destroyed above (state 'failed'); a read in flight finishes before the close.
      await spool?.close();
      throw err;
    } finally {
      this.#stopGrace?.();
      slot.release();
    }
  }

  /**
   * A download slot: at once when one is free, else after the fills queued before this one.
   * Rejects when every client left while queued (upstream never asked) or the queue closed (shutdown).
   */
  async #admit(): Promise<Slot> {
    const { digest, slots, logger, metrics } = this.#opts;
    const now = slots.tryAcquire();
    if (now) {
      metrics.fillStarted();
      return now;
    }
    this.#state = 'queued';
    const queuedAt = Date.now();
    metrics.fillQueued();
    logger.debug('fill queued', { digest, slots: slots.limit, queued: slots.waiting + 1 });
    let slot: Slot;
    try {
      slot = await slots.acquire(this.#cancel.signal);
      // Handed over in the same turn as the last client left: give it to the next one.
      if (this.#abandoned) {
        slot.release();
        throw this.#cancel.signal.reason;
      }
    } catch (err) {
      const abandoned = this.#abandoned === 'dropped';
      metrics.fillDropped(abandoned);
      logger.info('fill dropped from the queue', { digest, reason: abandoned ? 'every client left' : (err as Error).message, queuedMs: Date.now() - queuedAt });
      throw err;
    }
    metrics.fillStarted((Date.now() - queuedAt) / 1000);
    this.#state = 'starting';
    return slot;
  }

  /** Applies the abandoned-fill policy when the last client is gone; stops the grace when one is back. */
  #clientsChanged(): void {
    if (this.#waiters + this.#readers > 0) {
      this.#stopGrace?.();
      this.#stopGrace = undefined;
      return;
    }
    if (this.#abandoned || this.#unattended || this.#verified) return;
    if (this.#state === 'queued') return this.#abandon('dropped');
    if (this.#state !== 'starting' && this.#state !== 'running') return;
    // A running download waits a little for a client to come back (a connection resumed with
    // Range, a retry) before the budget decides: cancelling and restarting would download twice.
    this.#stopGrace ??= (this.#opts.schedule ?? timerSchedule)(this.#opts.abandoned.graceMs, () => {
      this.#stopGrace = undefined;
      this.#decideUnattended();
    });
  }

  #decideUnattended(): void {
    if (this.#waiters + this.#readers > 0 || this.#abandoned || this.#unattended || this.#verified) return;
    if (this.#state !== 'starting' && this.#state !== 'running') return;
    const size = this.#size >= 0 ? this.#size : undefined;
    if (decideAbandonedFill(this.#opts.abandoned, size, this.#received) === 'cancel') return this.#abandon('cancelled');
    this.#unattended = true;
    this.#opts.metrics.fillContinuedUnattended();
    this.#opts.logger.info('fill continues without clients', { digest: this.digest, received: this.#received, expected: this.#size });
  }

  /** Stops the fill: new requests start a fresh one from now on (`followable` is false). */
  #abandon(how: 'dropped' | 'cancelled'): void {
    this.#abandoned = how;
    this.#cancel.abort(new UpstreamError('unavailable', how === 'dropped' ? 'blob download dropped from the queue: every client left' : 'blob download cancelled: every client left'));
  }

  /**
   * A stream of the blob (or `range` of it) that delivers bytes as they land. Rejected bytes are
   * never ended cleanly: when the fill fails the stream is destroyed with the fill's error.
   * Call only after `ready` resolved and while `followable`.
   */
  createReader(range?: ByteRange): Readable {
    const spool = this.#spool;
    if (!spool || !this.followable) throw new Error('fill is not followable');
    const end = range ? range.end : this.#size - 1;
    let pos = range ? range.start : 0;
    let pumping = false;
    let counted = true;
    this.#readers++;
    const fill = this;
    const stream = new Readable({
      highWaterMark: READ_CHUNK,
      read() {
        void pump();
      },
      destroy(err, cb) {
        if (counted) {
          counted = false;
          fill.#readers--;
          fill.#maybeRelease();
          fill.#clientsChanged();
        }
        cb(err);
      },
    });
    const pump = async (): Promise<void> => {
      if (pumping) return;
      pumping = true;
      try {
        while (!stream.destroyed) {
          if (pos > end) {
            stream.push(null);
            return;
          }
          if (this.#state === 'failed') {
            stream.destroy(this.#error);
            return;
          }
          // Everything but the last byte may go out before verification; the last byte only after it.
          const limit = Math.min(end + 1, this.#verified ? this.#size : Math.min(this.#received, this.#size - 1));
          if (pos < limit) {
            let chunk = this.#window.slice(pos, limit);
            if (!chunk) {
              // Behind the window: those bytes are in the spool.
              const len = Math.min(READ_CHUNK, limit - pos, spool.readable - pos);
              if (len <= 0) throw new Error('fill bytes neither in memory nor spooled');
              const buf = Buffer.allocUnsafe(len);
              const n = await spool.readAt(buf, 0, len, pos);
              if (n <= 0) throw new Error('short read from fill');
              chunk = n === len ? buf : buf.subarray(0, n);
            }
            pos += chunk.length;
            if (!stream.push(chunk)) return;
          } else {
            await new Promise<void>((resolve) => this.#events.once('change', resolve));
          }
        }
      } catch (err) {
        stream.destroy(this.#state === 'failed' && this.#error ? this.#error : (err as Error));
      } finally {
        pumping = false;
      }
    };
    return stream;
  }

  #announcing = false;

  /**
   * Wakes the followers once per event-loop turn rather than once per upstream chunk: chunks that
   * arrive together go out together, in one socket write per follower.
   */
  #announce(): void {
    if (this.#announcing) return;
    this.#announcing = true;
    setImmediate(() => {
      this.#announcing = false;
      this.#events.emit('change');
    });
  }

  /** Once committed and every reader is done, the spool goes (new requests read the store). */
  #maybeRelease(): void {
    if (this.#state === 'committed' && this.#readers === 0 && !this.#released) {
      this.#released = true;
      void this.#spool?.close();
    }
  }
}

/** Rethrows a failure of the store or the spool as a `StorageWriteError` (never resumed, counted as storage_error). */
function storageFailure(what: 'store' | 'spool') {
  return (err: unknown): never => {
    throw new StorageWriteError(what, err);
  };
}

function resumable(err: unknown): boolean {
  if (isRegistryError(err) || err instanceof StorageWriteError) return false;
  if (err instanceof UpstreamError) return err.kind === 'unavailable';
  return true; // socket errors surfacing from the body stream
}

function failureReason(err: unknown, timedOut: boolean): FillFailure {
  if (timedOut) return 'timeout';
  if (isStorageFault(err)) return 'storage_error';
  if (isRegistryError(err)) return err.code === 'DIGEST_INVALID' || err.code === 'SIZE_INVALID' ? 'digest_mismatch' : 'storage_error';
  if (err instanceof StorageWriteError) return 'storage_error';
  return 'upstream_error';
}
