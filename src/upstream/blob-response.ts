/**
 * Reading blob responses: sizes from Content-Length / Content-Range, and the Range fallback.
 */
import { Transform, pipeline, type Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { headerValue } from './errors.js';
import { UpstreamError, type UpstreamBlob } from './upstream.js';

export function parseLength(v: string | undefined): number | undefined {
  return v !== undefined && /^\d+$/.test(v.trim()) ? Number(v) : undefined;
}

/**
 * A blob response as size/offset/body. 206 must start at `offset` (Content-Range); a 200 to a
 * ranged request (servers may ignore Range, RFC 9110 §14.2) is skipped forward ourselves.
 */
export function blobResult(res: Dispatcher.ResponseData, offset: number): UpstreamBlob {
  if (res.statusCode === 206) {
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(headerValue(res.headers, 'content-range')?.trim() ?? '');
    if (!m || Number(m[1]) !== offset) throw new UpstreamError('protocol', 'blob range response does not start at the requested offset', { status: 206 });
    return { size: Number(m[3]), offset, body: res.body };
  }
  const size = parseLength(headerValue(res.headers, 'content-length'));
  if (size === undefined) throw new UpstreamError('protocol', 'blob response without Content-Length', { status: res.statusCode });
  if (offset > size) throw new UpstreamError('protocol', `offset ${offset} beyond the blob's ${size} bytes`, { status: res.statusCode });
  return { size, offset, body: offset > 0 ? skipBytes(res.body, offset) : res.body };
}

/** `src` without its first `n` bytes; errors and destruction propagate both ways (pipeline). */
export function skipBytes(src: Readable, n: number): Readable {
  let toSkip = n;
  const out = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (toSkip >= chunk.length) {
        toSkip -= chunk.length;
        return cb();
      }
      const rest = toSkip > 0 ? chunk.subarray(toSkip) : chunk;
      toSkip = 0;
      cb(null, rest);
    },
  });
  pipeline(src, out, () => {});
  return out;
}
