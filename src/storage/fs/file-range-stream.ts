import type { FileHandle } from 'node:fs/promises';
import { Readable, type Writable } from 'node:stream';
import type { DirectBody } from '../blob-store.js';

/** Size of the reads that stream a committed blob. */
export const FILE_READ_CHUNK = 1024 * 1024;

export interface FileRangeStreamOptions {
  /** Owned by the stream from now on: closed when it ends, fails or is destroyed. */
  readonly handle: FileHandle;
  /** First and last byte offsets (inclusive); `end < start` is an empty stream. */
  readonly start: number;
  readonly end: number;
}

/**
 * The bytes `start..end` of a file, as a Readable (a fresh buffer per chunk, like
 * fs.createReadStream) or — the fast path for HTTP responses — written straight to a destination
 * with `writeTo`, which reuses two buffers: one is read into while the other is being written.
 *
 * Why both: 1 MiB chunks serve a warm blob several times faster than 64 KiB ones, and reusing the
 * buffers another ~20–30 % (no allocation, no page faults, less GC per GiB), which brings a Node
 * process to the throughput of Go's sendfile(2) in the distribution registry (bench/run.ts, row 1).
 */
export class FileRangeStream extends Readable implements DirectBody {
  readonly #fh: FileHandle;
  readonly #end: number;
  #pos: number;
  #direct = false;
  #streaming = false;

  constructor(opts: FileRangeStreamOptions) {
    super({ highWaterMark: FILE_READ_CHUNK });
    this.#fh = opts.handle;
    this.#pos = opts.start;
    this.#end = opts.end;
  }

  override _read(): void {
    this.#streaming = true;
    const len = Math.min(FILE_READ_CHUNK, this.#end + 1 - this.#pos);
    if (len <= 0) {
      this.push(null);
      return;
    }
    const buf = Buffer.allocUnsafe(len);
    this.#fh.read(buf, 0, len, this.#pos).then(
      ({ bytesRead }) => {
        if (bytesRead === 0) return this.destroy(new Error('blob file ended before the expected size'));
        this.#pos += bytesRead;
        this.push(bytesRead === len ? buf : buf.subarray(0, bytesRead));
      },
      (err: Error) => this.destroy(err),
    );
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.#fh.close().then(
      () => cb(err),
      () => cb(err),
    );
  }

  /**
   * Writes the remaining bytes to `dest` (without ending it) and then destroys this stream, closing
   * the file. Rejects when a read or a write fails, or when `dest` closes first; the caller destroys
   * `dest` then. Use either this or the Readable interface, not both.
   */
  async writeTo(dest: Writable, onBytes?: (n: number) => void): Promise<void> {
    if (this.#direct || this.#streaming) throw new Error('FileRangeStream: already being read');
    this.#direct = true;
    const bufs = [Buffer.allocUnsafe(FILE_READ_CHUNK), Buffer.allocUnsafe(FILE_READ_CHUNK)];
    // A buffer is read into again only once its previous write has been flushed (callback).
    const flushed: Array<Promise<void> | undefined> = [undefined, undefined];
    let closed: (() => void) | undefined;
    const destClosed = new Promise<never>((_, reject) => {
      closed = () => reject(new Error('the destination closed before the blob was written'));
      dest.once('close', closed);
    });
    destClosed.catch(() => {});
    try {
      let i = 0;
      while (this.#pos <= this.#end) {
        await Promise.race([flushed[i], destClosed]);
        const len = Math.min(FILE_READ_CHUNK, this.#end + 1 - this.#pos);
        const { bytesRead } = await this.#fh.read(bufs[i]!, 0, len, this.#pos);
        if (bytesRead === 0) throw new Error('blob file ended before the expected size');
        this.#pos += bytesRead;
        const chunk = bufs[i]!.subarray(0, bytesRead);
        flushed[i] = new Promise<void>((resolve, reject) => dest.write(chunk, (err) => (err ? reject(err) : resolve())));
        flushed[i]!.catch(() => {});
        onBytes?.(bytesRead);
        i ^= 1;
      }
      await Promise.race([Promise.all(flushed), destClosed]);
    } finally {
      if (closed) dest.off('close', closed);
      this.destroy();
    }
  }
}
