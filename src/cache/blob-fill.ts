import { EventEmitter } from 'node:events';
import { Readable } from 'node:stream';
import type { ByteRange } from '../domain/descriptor.js';
import type { Digest } from '../domain/digest.js';
import { isRegistryError } from '../domain/errors.js';
import type { BlobInfo, BlobStore, BlobWriter } from '../storage/blob-store.js';
import type { RepoKey } from '../storage/manifest-store.js';
import { UpstreamError, type Upstream } from '../upstream/upstream.js';
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

const READ_CHUNK = 256 * 1024;

/**
 * One upstream download of one blob, shared by every client that asks for it while it runs.
 * Bytes are hashed and written to a store writer; each client follows the written bytes with
 * positional reads (`BlobWriter.readAt`), so nobody waits for the whole blob and memory stays flat
 * whatever the blob size or the number of clients.
 *
 * The final byte is held back from every follower until the digest is verified and the blob is
 * committed: if upstream sent wrong bytes, every client connection is aborted instead of ending
 * cleanly with wrong content (DESIGN §6). A broken upstream connection is resumed with Range.
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

  /** Bytes received from upstream and written so far. */
  get written(): number {
    return this.#writer?.written ?? 0;
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
      for (;;) {
        try {
          for await (const chunk of res.body as AsyncIterable<Buffer>) {
            if (writer.written + chunk.length > this.#size) throw new UpstreamError('protocol', 'upstream sent more bytes than announced');
            await writer.write(chunk);
            metrics.bytesFromUpstream(key.upstream, chunk.length);
            this.#events.emit('change');
          }
          if (writer.written === this.#size) break;
          throw new UpstreamError('unavailable', `upstream body ended after ${writer.written} of ${this.#size} bytes`);
        } catch (err) {
          res.body.destroy();
          if (signal.aborted || !resumable(err) || resumes >= this.#opts.resumeAttempts) throw err;
          resumes++;
          metrics.fillResumed();
          logger.warn('fill resumed', { digest, offset: writer.written, attempt: resumes, error: (err as Error).message });
          res = await upstream.getBlob(key.repo, digest, { offset: writer.written, signal });
          if (res.size !== this.#size || res.offset !== writer.written) throw new UpstreamError('protocol', 'upstream changed the blob while resuming');
        }
      }
      const info = await writer.commit(digest, this.#size);
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
          // Everything but the last byte may go out before verification; the last byte only after commit.
          const available = this.#state === 'committed' ? this.#size : Math.min(writer.written, this.#size - 1);
          if (pos < available) {
            const len = Math.min(READ_CHUNK, end + 1 - pos, available - pos);
            const buf = Buffer.allocUnsafe(len);
            const n = await writer.readAt(buf, 0, len, pos);
            if (n <= 0) throw new Error('short read from fill');
            pos += n;
            if (!stream.push(n === len ? buf : buf.subarray(0, n))) return;
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
