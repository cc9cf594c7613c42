import { pipeline } from 'node:stream/promises';
import type { Request, Response } from 'express';
import { isDirectBody, type RegistryReader } from '../../cache/registry-reader.js';
import type { Digest } from '../../domain/digest.js';
import type { RepoKey } from '../../domain/reference.js';
import type { Metrics } from '../../observability/metrics.js';
import { parseRangeHeader } from '../parse-request.js';

/** GET/HEAD /v2/<name>/blobs/<digest>, with single-range support (206/416). */
export async function serveBlob(reader: RegistryReader, metrics: Metrics, key: RepoKey, digest: Digest, req: Request, res: Response): Promise<void> {
  const head = req.method === 'HEAD';
  const range = parseRangeHeader(req.get('range'));
  const blob = await reader.getBlob(key, digest, { signal: req.ctx.signal, log: req.ctx.log, head, range });
  req.ctx.cache = blob.source === 'cache' ? 'hit' : 'miss';
  res.setHeader('Content-Type', 'application/octet-stream');
  res.setHeader('Docker-Content-Digest', digest);
  res.setHeader('ETag', `"${digest}"`);
  res.setHeader('Accept-Ranges', 'bytes');
  res.setHeader('Cache-Control', 'max-age=31536000');
  res.setHeader('X-Hubcache-Cache', req.ctx.cache);
  if (blob.range) {
    res.status(206);
    res.setHeader('Content-Range', `bytes ${blob.range.start}-${blob.range.end}/${blob.size}`);
    res.setHeader('Content-Length', blob.range.end - blob.range.start + 1);
  } else {
    res.status(200);
    res.setHeader('Content-Length', blob.size);
  }
  if (head || !blob.body) {
    blob.body?.destroy();
    res.end();
    return;
  }
  const source = blob.source;
  const body = blob.body;
  const counted = (n: number) => {
    req.ctx.streamedBytes = (req.ctx.streamedBytes ?? 0) + n;
    metrics.bytesToClient(source, n);
  };
  res.flushHeaders();
  // On any failure the client connection is aborted, never ended cleanly with missing bytes; a
  // client that leaves stops the reading.
  // Logged once the body has let go of everything it held (file, buffers).
  const aborted = (err: Error) => {
    if (!res.destroyed) res.destroy(err);
    if (!req.ctx.signal.aborted) req.ctx.log.warn('blob stream aborted', { digest, error: err.message });
    else req.ctx.log.debug('blob stream ended early: the client connection closed', { digest });
  };
  if (isDirectBody(body)) {
    // Stored blobs write themselves with reused buffers (the warm path's throughput); a fill's
    // readers write the fill's bytes without a stream in between (the cold path's CPU, issue #16).
    await body.writeTo(res, counted).then(() => res.end(() => blob.delivered?.()), aborted);
    return;
  }
  body.on('data', (chunk: Buffer) => counted(chunk.length));
  // pipeline destroys both sides on error.
  await pipeline(body, res).then(() => blob.delivered?.(), aborted);
}
