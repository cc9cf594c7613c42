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
  let ended = false;
  const end = (err: Error | undefined) => {
    if (ended) return;
    ended = true;
    o.onEnd?.(err);
  };
  const body = Readable.from(verify(source, hash, offset, o), { objectMode: false, highWaterMark: 1024 * 1024 });
  body.once('end', () => end(undefined));
  body.once('close', () => end(body.errored ?? new Error('pass-through body closed before its end')));
  return body;
}

async function* verify(source: Readable, hash: Hash, offset: number, o: VerifiedBodyOptions): AsyncGenerator<Buffer> {
  let received = offset;
  let held: Buffer | undefined;
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      if (received + chunk.length > o.size) throw new UpstreamError('protocol', 'upstream sent more bytes than announced');
      hash.update(chunk);
      received += chunk.length;
      // Everything but the last byte of the blob goes out as it arrives.
      const out = received === o.size ? chunk.subarray(0, chunk.length - 1) : chunk;
      if (received === o.size) held = chunk.subarray(chunk.length - 1);
      if (out.length > 0) {
        o.onBytes?.(out.length);
        yield out;
      }
    }
    if (received !== o.size) throw new UpstreamError('unavailable', `upstream body ended after ${received} of ${o.size} bytes`);
    const actual = `sha256:${hash.digest('hex')}` as Digest;
    if (actual !== o.digest) throw new RegistryError('DIGEST_INVALID', { expected: o.digest, actual });
    if (held) {
      o.onBytes?.(held.length);
      yield held;
    }
  } finally {
    source.destroy();
  }
}
