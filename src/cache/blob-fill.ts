import type { Hash } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { Readable, type Writable } from 'node:stream';
import type { ByteRange } from '../domain/descriptor.js';
import type { Digest } from '../domain/digest.js';
import { isRegistryError, RegistryError } from '../domain/errors.js';
import type { RepoKey } from '../domain/reference.js';
import type { Logger } from '../lib/logger.js';
import type { BlobInfo, BlobStore, BlobWriter, DirectBody } from '../storage/blob-store.js';
import { isStorageFault, storageFaultCause } from '../storage/storage-fault.js';
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
  /**
   * The store failed a write with a storage fault while the fill had clients: told at once (the
   * store turns degraded), while the download goes on for them without the store (pass-through).
   */
  readonly onStorageFault?: (err: Error) => void;
}

/** Followers read the fill's spool in pieces of this size (large pieces: fewer reads, see the bench). */
const READ_CHUNK = 1024 * 1024;
/**
 * A follower of `writeTo` behind the window reads the spool into one buffer of its own, this size,
 * reused once written: 20 followers behind hold 5 MiB, not a fresh 1 MiB per read each.
 */
const SPOOL_READ_CHUNK = 256 * 1024;
/** Upstream bytes queued while a file write is in flight, at most (per fill). */
const MAX_PENDING_WRITE = 2 * 1024 * 1024;
/** Followers are woken once this many new bytes arrived (or ANNOUNCE_MS after fewer): see #announce. */
const ANNOUNCE_BYTES = 256 * 1024;
const ANNOUNCE_MS = 2;
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
  /** `passed`: every byte arrived and was verified, but the store has none of them (pass-through). */
  #state: 'queued' | 'starting' | 'running' | 'committed' | 'passed' | 'failed' = 'starting';
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
  /** `performance.now()` when the upstream's last byte arrived (the start of the fill's tail). */
  #upstreamEndedAt: number | undefined;
  readonly #window = new ChunkWindow(WINDOW_BYTES);
  /**
   * Set when the store failed a write mid-way (pass-through): the fill hashes what it receives
   * itself from then on, starting from the writer's hash over the bytes it took.
   */
  #hash: Hash | undefined;
  /** The store's failure that turned the fill into a pass-through. */
  #storeError: Error | undefined;
  /** Where each reader is (the next byte it sends): a pass-through keeps the window for the slowest. */
  readonly #positions = new Set<{ pos: number }>();
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

  /** Every byte arrived and hashes to the digest; the store is writing and committing it (or just did). */
  get verified(): boolean {
    return this.#verified;
  }

  /** True while new readers can follow this fill (until it failed, was cancelled, lost its store or its bytes were released). */
  get followable(): boolean {
    return this.#state !== 'failed' && !this.#released && !this.#abandoned && !this.#storeError;
  }

  /** The store failed mid-way: the readers it had go on from upstream; nobody new joins. */
  get passing(): boolean {
    return this.#storeError !== undefined;
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
      writer = await store.create({ digest }).catch(storageFailure('store'));
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
      const w = writer;
      // A failed write of the store either turns the fill into a pass-through (it has clients and
      // the writer hands over its hash) or ends it.
      const written = async (write: Promise<void>) => {
        try {
          await write;
        } catch (err) {
          if (!(await this.#loseStore(err, w, sink))) throw err;
        }
      };
      for (;;) {
        try {
          for await (const chunk of res.body as AsyncIterable<Buffer>) {
            if (this.#received + chunk.length > this.#size) throw new UpstreamError('protocol', 'upstream sent more bytes than announced');
            this.#window.append(chunk);
            this.#received += chunk.length;
            if (this.#received === this.#size) this.#upstreamEndedAt = performance.now();
            this.#announce();
            if (this.#hash) {
              this.#hash.update(chunk);
              metrics.bytesFromUpstream(key.upstream, chunk.length);
              await this.#roomInWindow(sink, signal);
            } else {
              try {
                const queued = batcher.push(chunk);
                if (this.#received === this.#size) this.#verifyAhead(w, batcher);
                await queued;
              } catch (err) {
                if (!(await this.#loseStore(err, w, sink))) throw err;
              }
            }
          }
          if (!this.#hash && !this.#verified && this.#received === this.#size) this.#verifyAhead(w, batcher);
          if (!this.#hash) await written(batcher.flush());
          if (this.#received === this.#size) break;
          throw new UpstreamError('unavailable', `upstream body ended after ${this.#received} of ${this.#size} bytes`);
        } catch (err) {
          res.body.destroy();
          // Bytes received before the break are good: write them, so the resume starts after them.
          // A failed write (storage error) ends the fill here, unless it turns into a pass-through.
          if (!this.#hash) await written(batcher.flush());
          if (signal.aborted || !resumable(err) || resumes >= this.#opts.resumeAttempts) throw err;
          resumes++;
          metrics.fillResumed();
          logger.warn('fill resumed', { digest, offset: this.#received, attempt: resumes, error: (err as Error).message });
          res = await upstream.getBlob(key.repo, digest, { offset: this.#received, signal });
          if (res.size !== this.#size || res.offset !== this.#received) throw new UpstreamError('protocol', 'upstream changed the blob while resuming');
        }
      }
      if (this.#hash) {
        const actual = `sha256:${this.#hash.digest('hex')}`;
        if (actual !== digest) throw new RegistryError('DIGEST_INVALID', { expected: digest, actual });
        this.#passed();
        logger.info('fill passed through, not cached', { digest, bytes: this.#size, ms: Date.now() - started, readers: this.#readers });
        throw this.#storeError;
      }
      const info = await writer
        .commit(digest, this.#size, {
          onVerified: () => {
            this.#verified = true;
            this.#events.emit('change');
          },
        })
        // A mismatch is a RegistryError; anything else (fsync, rename, an upload's completion) is the store's.
        .catch((err: unknown) => (isRegistryError(err) ? Promise.reject(err) : storageFailure('store')(err)))
        .catch((err: unknown) => {
          // Verified, but the store couldn't make it durable: the readers have every byte to go on with.
          if (this.#verified && isStorageFault(err) && this.#readers > 0) {
            this.#storeError = err as Error;
            this.#opts.onStorageFault?.(err as Error);
            logger.warn('fill lost its store', { digest, errno: storageFaultCause(err)?.code, path: storageFaultCause(err)?.path, at: 'commit', readers: this.#readers });
            this.#passed();
          }
          throw err;
        });
      this.#window.clear(sink.readable);
      this.#state = 'committed';
      metrics.fillEnded('committed');
      const waited = batcher.waited;
      // storeWaits/storeWaitMs: how often, and how long in all, the download stopped reading the
      // upstream because MAX_PENDING_WRITE bytes were queued behind a write (the store was slower).
      logger.info('fill committed', { digest, bytes: info.size, ms: Date.now() - started, resumes, storeWaits: waited.count, storeWaitMs: Math.round(waited.ms), ...(this.#unattended ? { unattended: true } : {}) });
      this.#events.emit('change');
      this.#maybeRelease();
      return info;
    } catch (raw) {
      if (this.#state === 'passed') {
        // Every byte went (or goes) out verified from memory and the spool; the store has none.
        metrics.fillEnded('storage_error');
        await writer?.abort().catch(() => {});
        throw raw;
      }
      const cancelled = this.#abandoned === 'cancelled' && !this.#storeError;
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
      const reason = this.#storeError ? 'storage_error' : failureReason(raw, timedOut);
      metrics.fillEnded(reason);
      logger.warn('fill failed', { digest, reason, error: err.message, received: this.#received, expected: this.#size, ...(this.#storeError ? { passThrough: 'aborted', storeError: this.#storeError.message } : {}) });
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
   * Every byte has arrived: checks their digest now — the writer's hash over the bytes handed to it
   * (a write may still be in flight) plus the ones still queued — instead of after the last write,
   * so the final byte goes out to the clients at once while the store finishes writing (its tail
   * otherwise waited for the thread pool and the disk: hubcache_fill_tail_seconds). Nothing is
   * decided on a mismatch here: the commit verifies on its own after the writes and fails the fill.
   */
  #verifyAhead(writer: BlobWriter, batcher: WriteBatcher): void {
    const ahead = writer.hashAhead?.();
    if (!ahead) return;
    let covered = ahead.handed;
    for (const chunk of batcher.pending) {
      ahead.hash.update(chunk);
      covered += chunk.length;
    }
    if (covered !== this.#size || `sha256:${ahead.hash.digest('hex')}` !== this.digest) return;
    this.#verified = true;
    this.#events.emit('change');
  }

  /**
   * A write of the store failed mid-way. With a storage fault, clients reading, and a writer that
   * hands over its hash, the fill becomes a pass-through (docs/architecture.md#pass-through-when-the-store-cant-write):
   * the temp data is removed, the store is reported (degraded), and the download goes on for the
   * current readers — from the bytes still in the spool (its open handle keeps reading what was
   * written) and the in-memory window — hashed here; nobody new joins. Returns false otherwise
   * (the fill fails as before).
   */
  async #loseStore(err: unknown, writer: BlobWriter, spool: Spool): Promise<boolean> {
    if (!isStorageFault(err) || this.#readers === 0 || this.#abandoned) return false;
    const hash = writer.runningHash?.();
    if (!hash) return false;
    // The writer hashed [0, written); the rest of what was received is still in the window
    // (only spooled bytes are evicted, and the spool never holds more than the writer took).
    for (let pos = writer.written; pos < this.#received; ) {
      const chunk = this.#window.slice(pos, this.#received);
      if (!chunk) return false;
      hash.update(chunk);
      pos += chunk.length;
    }
    this.#hash = hash;
    this.#storeError = err as Error;
    const cause = storageFaultCause(err);
    this.#opts.logger.warn('fill lost its store: its clients go on from upstream, not cached', { digest: this.digest, errno: cause?.code, path: cause?.path, received: this.#received, expected: this.#size, readers: this.#readers, spooled: spool.readable });
    for (let i = 0; i < this.#positions.size; i++) this.#opts.metrics.passThrough('blob');
    this.#opts.onStorageFault?.(err as Error);
    await writer.abort().catch(() => {});
    this.#events.emit('change');
    return true;
  }

  /**
   * Pass-through: the window can't lean on the spool any more, so it keeps what the slowest reader
   * still needs, and upstream is read no further while that is more than the window's size.
   */
  async #roomInWindow(spool: Spool, signal: AbortSignal): Promise<void> {
    for (;;) {
      let needed = this.#received;
      for (const r of this.#positions) needed = Math.min(needed, r.pos);
      this.#window.evict(Math.max(needed, spool.readable));
      if (this.#positions.size === 0 || this.#window.end - this.#window.start <= WINDOW_BYTES + MAX_PENDING_WRITE) return;
      if (signal.aborted) throw signal.reason;
      await new Promise<void>((resolve) => {
        const go = () => {
          this.#events.off('progress', go);
          signal.removeEventListener('abort', go);
          resolve();
        };
        this.#events.on('progress', go);
        signal.addEventListener('abort', go, { once: true });
      });
    }
  }

  /** Pass-through verified: the readers may send the final byte; the fill holds no slot or store. */
  #passed(): void {
    this.#verified = true;
    this.#state = 'passed';
    this.#events.emit('change');
    this.#maybeRelease();
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
    // A pass-through is for its readers only: nothing is cached, nobody can join.
    if (this.#storeError && this.#state === 'running' && !this.#abandoned) return this.#abandon('cancelled');
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
  createReader(range?: ByteRange): Readable & DirectBody {
    const spool = this.#spool;
    if (!spool || !this.followable) throw new Error('fill is not followable');
    const end = range ? range.end : this.#size - 1;
    let pos = range ? range.start : 0;
    let pumping = false;
    let counted = true;
    this.#readers++;
    const me = { pos };
    this.#positions.add(me);
    const fill = this;
    let direct = false;
    const stream = new Readable({
      highWaterMark: READ_CHUNK,
      read() {
        if (!direct) void pump();
      },
      destroy(err, cb) {
        if (counted) {
          counted = false;
          fill.#positions.delete(me);
          fill.#events.emit('progress');
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
            me.pos = pos;
            if (this.#hash) {
              this.#opts.metrics.passThroughBytes('blob', chunk.length);
              this.#events.emit('progress');
            }
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
    /**
     * The fast path for HTTP responses (DirectBody): the bytes go straight to `dest` without the
     * Readable in between. Each time the fill has news, every byte held for this reader goes out
     * in one corked batch (one vectored socket write instead of one write per upstream chunk, no
     * per-chunk stream events); a reader behind the window reads the spool into one buffer of its
     * own, reused once its previous write was flushed. Destroys the reader at the end, like a
     * consumed stream. The final byte waits for verification exactly as in `pump`.
     */
    const writeTo = async (dest: Writable, onBytes?: (n: number) => void): Promise<void> => {
      if (pumping || direct) throw new Error('fill reader: already being read');
      direct = true;
      let spoolBuf: Buffer | undefined;
      let spoolFlushed: Promise<void> | undefined;
      let onClose: (() => void) | undefined;
      const destClosed = new Promise<never>((_, reject) => {
        onClose = () => reject(new Error('the destination closed before the blob was written'));
        dest.once('close', onClose);
      });
      destClosed.catch(() => {});
      try {
        while (pos <= end) {
          if (stream.destroyed) throw new Error('fill reader destroyed');
          if (this.#state === 'failed') throw this.#error ?? new Error('fill failed');
          const limit = Math.min(end + 1, this.#verified ? this.#size : Math.min(this.#received, this.#size - 1));
          if (pos >= limit) {
            await Promise.race([new Promise<void>((resolve) => this.#events.once('change', resolve)), destClosed]);
            continue;
          }
          let ok = true;
          const from = pos;
          let chunk = this.#window.slice(pos, limit);
          if (chunk) {
            // Every held byte up to READ_CHUNK in one batch: views of the window's chunks, no copies.
            dest.cork();
            let batch = 0;
            while (chunk) {
              ok = dest.write(chunk);
              batch += chunk.length;
              pos += chunk.length;
              if (batch >= READ_CHUNK) break;
              chunk = this.#window.slice(pos, limit);
            }
            dest.uncork();
            // Counted once per batch, not per chunk: each call is a labelled counter increment
            // (prom-client), 4 % of a cold GET's main-thread CPU when it ran per upstream chunk.
            onBytes?.(batch);
          } else {
            // Behind the window: those bytes are in the spool. The buffer is read into again
            // only once the socket has taken its previous contents.
            if (spoolFlushed) await Promise.race([spoolFlushed, destClosed]);
            const len = Math.min(SPOOL_READ_CHUNK, limit - pos, spool.readable - pos);
            if (len <= 0) throw new Error('fill bytes neither in memory nor spooled');
            spoolBuf ??= Buffer.allocUnsafeSlow(SPOOL_READ_CHUNK);
            const n = await spool.readAt(spoolBuf, 0, len, pos);
            if (n <= 0) throw new Error('short read from fill');
            const part = spoolBuf.subarray(0, n);
            spoolFlushed = new Promise<void>((resolve, reject) => (ok = dest.write(part, (err) => (err ? reject(err) : resolve()))));
            spoolFlushed.catch(() => {});
            pos += n;
            onBytes?.(n);
          }
          me.pos = pos;
          if (this.#hash) {
            this.#opts.metrics.passThroughBytes('blob', pos - from);
            this.#events.emit('progress');
          }
          if (!ok) await Promise.race([once(dest, 'drain'), destClosed]);
        }
      } catch (err) {
        throw this.#state === 'failed' && this.#error ? this.#error : err;
      } finally {
        if (onClose) dest.off('close', onClose);
        stream.destroy();
      }
    };
    return Object.assign(stream, { writeTo });
  }

  /**
   * A client that read this fill to the blob's last byte has been handed it (its response
   * finished): reports the tail the fill added, from the upstream's last byte to this moment.
   */
  delivered(): void {
    if (this.#upstreamEndedAt !== undefined) this.#opts.metrics.fillTail((performance.now() - this.#upstreamEndedAt) / 1000);
  }

  #announcing = false;
  /** Bytes received when the followers were last woken. */
  #announced = 0;
  #announceTimer: NodeJS.Timeout | undefined;

  /**
   * Wakes the followers once ANNOUNCE_BYTES more have arrived (at the next event-loop turn, so
   * chunks that arrive together go out together), or ANNOUNCE_MS after fewer: each wake-up costs
   * every follower a socket write, and upstream chunks are 16–64 KiB. The last byte, and the
   * verification that releases it, wake them at once.
   */
  #announce(): void {
    if (this.#announcing) return;
    if (this.#received - this.#announced < ANNOUNCE_BYTES && this.#received !== this.#size) {
      this.#announceTimer ??= setTimeout(() => {
        this.#announceTimer = undefined;
        this.#wake();
      }, ANNOUNCE_MS);
      return;
    }
    this.#announcing = true;
    setImmediate(() => {
      this.#announcing = false;
      this.#wake();
    });
  }

  #wake(): void {
    if (this.#announceTimer) {
      clearTimeout(this.#announceTimer);
      this.#announceTimer = undefined;
    }
    this.#announced = this.#received;
    this.#events.emit('change');
  }

  /** Once committed (or passed through) and every reader is done, the spool goes (new requests read the store). */
  #maybeRelease(): void {
    if ((this.#state === 'committed' || this.#state === 'passed') && this.#readers === 0 && !this.#released) {
      this.#released = true;
      if (this.#state === 'passed') this.#window.clear(0);
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
