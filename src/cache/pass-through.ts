import { createHash, type Hash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Digest } from '../domain/digest.js';
import { RegistryError } from '../domain/errors.js';
import { UpstreamError } from '../upstream/upstream.js';

export interface VerifiedBodyOptions {
  readonly digest: Digest;
  /** The blob's size, announced by upstream: more bytes are a protocol error, fewer a broken body. */
  readonly size: number;
  /** Sent bytes, as they go out. */
  readonly onBytes?: (n: number) => void;
  /** Once, when the body ends or is destroyed: `error` undefined when every byte went out verified. */
  readonly onEnd?: (error: Error | undefined) => void;
}

/**
 * A whole blob streamed from upstream to one client without the store (pass-through,
 * docs/architecture.md#pass-through-when-the-store-cant-write): hashed as it passes, and — like a
 * fill's readers (docs/architecture.md#the-final-byte-waits-for-verification) — the last byte is
 * held back until the bytes hash to `digest`. On a mismatch, a short body or too many bytes the
 * stream is destroyed with the error, so the client's connection is aborted and the client never
 * receives a clean `200` with wrong content. Destroying the returned stream destroys `source`.
 */
export function verifiedBody(source: Readable, o: VerifiedBodyOptions): Readable {
  return verifyingStream(source, createHash('sha256'), 0, o);
}

/**
 * Like `verifiedBody`, for bytes from `offset` on, with `hash` already over bytes `[0, offset)`
 * (a fill that lost its store hands its running hash over).
 */
export function verifyingStream(source: Readable, hash: Hash, offset: number, o: VerifiedBodyOptions): Readable {
  return new VerifyingStream(source, hash, offset, o);
}

/**
 * A Readable over `source`, not an async generator: a generator waiting on a source that sends
 * nothing more can't be stopped (its `finally` waits for the source), so a client that leaves
 * would hold the upstream request open.
 */
class VerifyingStream extends Readable {
  readonly #source: Readable;
  readonly #hash: Hash;
  readonly #o: VerifiedBodyOptions;
  #received: number;
  #held: Buffer | undefined;
  #ended = false;

  constructor(source: Readable, hash: Hash, offset: number, o: VerifiedBodyOptions) {
    super({ highWaterMark: 1024 * 1024 });
    this.#source = source;
    this.#hash = hash;
    this.#received = offset;
    this.#o = o;
    source.pause();
    source.on('data', (chunk: Buffer) => this.#data(chunk));
    source.once('end', () => this.#end());
    source.once('error', (err) => this.destroy(err));
    source.once('close', () => {
      if (!this.#ended) this.destroy(new UpstreamError('unavailable', `upstream body closed after ${this.#received} of ${o.size} bytes`));
    });
  }

  override _read(): void {
    this.#source.resume();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.#source.destroy();
    this.#finish(err ?? (this.#ended ? undefined : new Error('pass-through body closed before its end')));
    cb(err);
  }

  #data(chunk: Buffer): void {
    if (this.destroyed) return;
    if (this.#received + chunk.length > this.#o.size) return void this.destroy(new UpstreamError('protocol', 'upstream sent more bytes than announced'));
    this.#hash.update(chunk);
    this.#received += chunk.length;
    // Everything but the last byte of the blob goes out as it arrives.
    const last = this.#received === this.#o.size;
    const out = last ? chunk.subarray(0, chunk.length - 1) : chunk;
    if (last) this.#held = chunk.subarray(chunk.length - 1);
    if (out.length === 0) return;
    this.#o.onBytes?.(out.length);
    if (!this.push(out)) this.#source.pause();
  }

  #end(): void {
    if (this.destroyed) return;
    if (this.#received !== this.#o.size) return void this.destroy(new UpstreamError('unavailable', `upstream body ended after ${this.#received} of ${this.#o.size} bytes`));
    const actual = `sha256:${this.#hash.digest('hex')}`;
    if (actual !== this.#o.digest) return void this.destroy(new RegistryError('DIGEST_INVALID', { expected: this.#o.digest, actual }));
    this.#ended = true;
    if (this.#held) {
      this.#o.onBytes?.(this.#held.length);
      this.push(this.#held);
    }
    this.push(null);
    this.once('end', () => this.#finish(undefined));
  }

  #onEndCalled = false;
  #finish(err: Error | undefined): void {
    if (this.#onEndCalled) return;
    this.#onEndCalled = true;
    this.#o.onEnd?.(err);
  }
}
