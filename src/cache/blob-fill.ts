import { EventEmitter } from 'node:events';
import { Readable } from 'node:stream';
import type { ByteRange } from '../domain/descriptor.js';
import type { Digest } from '../domain/digest.js';
import { isRegistryError } from '../domain/errors.js';
import type { BlobInfo, BlobStore, BlobWriter } from '../storage/blob-store.js';
import type { RepoKey } from '../storage/manifest-store.js';
import { UpstreamError, type Upstream } from '../upstream/upstream.js';
import { ChunkWindow } from './chunk-window.js';
import { WriteBatcher } from './write-batcher.js';
import type { Logger } from '../observability/logger.js';
import type { FillFailure, Metrics } from '../observability/metrics.js';

export interface BlobFillOptions {
  readonly key: RepoKey;
  readonly digest: Digest;
  readonly upstream: Upstream;
  readonly store: BlobStore;
  /** The fill's own deadline: it belongs to the cache, not to the client that started it. */
  readonly timeoutMs: number;
  /** Range requests made to resume a broken download before giving up. */
  readonly resumeAttempts: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/** Followers read the fill's file in pieces of this size (large pieces: fewer reads, see the bench). */
const READ_CHUNK = 1024 * 1024;
/** Upstream bytes queued while a file write is in flight, at most (per fill). */
const MAX_PENDING_WRITE = 2 * 1024 * 1024;
/** Recent bytes held in memory for followers (per fill), beyond the ones not yet written. */
const WINDOW_BYTES = 4 * 1024 * 1024;

/**
 * One upstream download of one blob, shared by every client that asks for it while it runs.
 * Bytes are hashed and written to a store writer. Clients get them as they arrive: from a bounded
 * in-memory window of the latest chunks (shared by all followers), or, when a client has fallen
 * behind the window, by positional reads of the written file (`BlobWriter.readAt`). Nobody waits for
 * the whole blob, and memory stays flat whatever the blob size or the number of clients.
 *
 * The final byte is held back from every follower until the digest is verified: if upstream sent
 * wrong bytes, every client connection is aborted instead of ending cleanly with wrong content
 * (DESIGN §6). It goes out as soon as the bytes are verified, while the store makes them durable
 * and visible (fsync, rename). A broken upstream connection is resumed with Range.
 */
export class BlobFill {
  readonly digest: Digest;
  /** Resolves with the blob's size once upstream answered; rejects when the download can't start. */
  readonly ready: Promise<number>;
  /** Resolves when the blob is verified and committed; rejects when the fill failed. */
  readonly done: Promise<BlobInfo>;

  #size = -1;
  #writer: BlobWriter | undefined;
  #state: 'starting' | 'running' | 'committed' | 'failed' = 'starting';
  #error: Error | undefined;
  #readers = 0;
  #released = false;
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

  /** True while new readers can follow this fill (until it failed or its bytes were released). */
  get followable(): boolean {
    return this.#state !== 'failed' && !this.#released;
  }

  async #run(resolveReady: (n: number) => void, rejectReady: (e: Error) => void): Promise<BlobInfo> {
    const { key, digest, upstream, store, logger, metrics } = this.#opts;
    const signal = AbortSignal.timeout(this.#opts.timeoutMs);
    const started = Date.now();
    metrics.fillStarted();
    let writer: BlobWriter | undefined;
    try {
      writer = await store.create();
      let res = await upstream.getBlob(key.repo, digest, { signal });
      this.#size = res.size;
      this.#writer = writer;
      this.#state = 'running';
      logger.info('fill started', { digest, upstream: key.upstream, repository: key.repo, size: res.size });
      resolveReady(res.size);
      let resumes = 0;
      const sink = writer;
      const batcher = new WriteBatcher(async (chunks, bytes) => {
        await sink.write(chunks);
        metrics.bytesFromUpstream(key.upstream, bytes);
        this.#window.evict(sink.written);
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
      const info = await writer.commit(digest, this.#size, {
        onVerified: () => {
          this.#verified = true;
          this.#events.emit('change');
        },
      });
      this.#window.clear(writer.written);
      this.#state = 'committed';
      metrics.fillEnded('committed');
      logger.info('fill committed', { digest, bytes: info.size, ms: Date.now() - started, resumes });
      this.#events.emit('change');
      this.#maybeRelease();
      return info;
    } catch (raw) {
      const err = signal.aborted ? new UpstreamError('unavailable', 'blob download exceeded the fill timeout', { cause: raw }) : (raw as Error);
      const reason = failureReason(raw, signal.aborted);
      this.#state = 'failed';
      this.#error = err;
      this.#window.clear(0);
      metrics.fillEnded(reason);
      logger.warn('fill failed', { digest, reason, error: err.message, received: writer?.written ?? 0, expected: this.#size });
      rejectReady(err);
      this.#events.emit('change');
      await writer?.abort().catch(() => {});
      throw err;
    }
  }

  /**
   * A stream of the blob (or `range` of it) that delivers bytes as they land. Rejected bytes are
   * never ended cleanly: when the fill fails the stream is destroyed with the fill's error.
   * Call only after `ready` resolved and while `followable`.
   */
  createReader(range?: ByteRange): Readable {
    const writer = this.#writer;
    if (!writer || !this.followable) throw new Error('fill is not followable');
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
              // Behind the window: those bytes are in the file.
              const len = Math.min(READ_CHUNK, limit - pos, writer.written - pos);
              if (len <= 0) throw new Error('fill bytes neither in memory nor written');
              const buf = Buffer.allocUnsafe(len);
              const n = await writer.readAt(buf, 0, len, pos);
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

  #maybeRelease(): void {
    if (this.#state === 'committed' && this.#readers === 0 && !this.#released) {
      this.#released = true;
      void this.#writer?.release().catch(() => {});
    }
  }
}

function resumable(err: unknown): boolean {
  if (isRegistryError(err)) return false;
  if (err instanceof UpstreamError) return err.kind === 'unavailable';
  return true; // socket errors surfacing from the body stream
}

function failureReason(err: unknown, timedOut: boolean): FillFailure {
  if (timedOut) return 'timeout';
  if (isRegistryError(err)) return err.code === 'DIGEST_INVALID' || err.code === 'SIZE_INVALID' ? 'digest_mismatch' : 'storage_error';
  return 'upstream_error';
}
