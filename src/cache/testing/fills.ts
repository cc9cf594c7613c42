/** Test helpers for blob fills: a scripted upstream, a cache over it, stream collectors, event-loop turns. */
import { PassThrough, Writable, type Readable } from 'node:stream';
import { silentLogger, type Logger } from '../../lib/logger.js';
import { isDirectBody, type BlobStore, type BlobWriter, type CreateOptions } from '../../storage/blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../../storage/memory/memory-manifest-store.js';
import type { Upstream } from '../../upstream/upstream.js';
import type { CacheMetrics } from '../cache-metrics.js';
import { PullThroughRegistry } from '../pull-through.js';

/** An upstream whose one blob body the test feeds by hand; counts GETs. */
export function scriptedUpstream(size: number) {
  const body = new PassThrough();
  let gets = 0;
  const upstream = {
    name: 'docker.io',
    getBlob: async () => {
      gets++;
      return { size, offset: 0, body: body as Readable };
    },
    close: async () => {},
  } as unknown as Upstream;
  return { upstream, body, gets: () => gets };
}

/**
 * `inner` seen through a test's changes: `stat` replaced, or each writer's `write`/`commit`/`abort`
 * (the rest passes through, `localPath` included: without it a fill would spool a second copy;
 * `hashAhead` unless `write` is replaced, so the fill checks the digest early as with a real writer;
 * `runningHash` never: no pass-through).
 */
export function decorateStore(inner: BlobStore, o: { stat?: BlobStore['stat']; writer?: (w: BlobWriter) => Partial<Pick<BlobWriter, 'write' | 'commit' | 'abort'>> }): BlobStore {
  return {
    stat: o.stat ?? ((d) => inner.stat(d)),
    open: (d, opts) => inner.open(d, opts),
    delete: (d) => inner.delete(d),
    list: () => inner.list(),
    create: async (opts?: CreateOptions): Promise<BlobWriter> => {
      const w = await inner.create(opts);
      const over = o.writer?.(w) ?? {};
      return {
        get written() {
          return w.written;
        },
        localPath: w.localPath,
        ...(w.hashAhead && !over.write ? { hashAhead: () => w.hashAhead!() } : {}),
        write: over.write ?? ((data) => w.write(data)),
        commit: over.commit ?? ((...args) => w.commit(...args)),
        abort: over.abort ?? (() => w.abort()),
      };
    },
  };
}

/**
 * A cache over `blobs` (memory manifests and metadata) and one upstream, `docker.io`, reporting to
 * `metrics` (the tests pass the facade: this module may not import observability/, which sits above).
 */
export function registry<M extends CacheMetrics>(blobs: BlobStore, upstream: Upstream, opts: { metrics: M; spoolDir?: string; resumeAttempts?: number; logger?: Logger }) {
  const { metrics } = opts;
  const reader = new PullThroughRegistry({
    blobs,
    manifests: new MemoryManifestStore(),
    metadata: new MemoryMetadataStore(),
    upstreams: new Map([['docker.io', { upstream, tagTtlMs: 60_000 }]]),
    fillTimeoutMs: 60_000,
    resumeAttempts: opts.resumeAttempts ?? 0,
    ...(opts.spoolDir ? { spoolDir: opts.spoolDir } : {}),
    logger: opts.logger ?? silentLogger(),
    metrics,
  });
  return { reader, metrics };
}

/** Collects a stream; resolves with what arrived when it ends. */
export function collect(stream: Readable): { got: Buffer[]; done: Promise<Buffer> } {
  const got: Buffer[] = [];
  stream.on('data', (c: Buffer) => got.push(c));
  return { got, done: new Promise((resolve, reject) => stream.once('end', () => resolve(Buffer.concat(got))).once('error', reject)) };
}

/**
 * Reads a fill reader the way the HTTP handler does (DirectBody `writeTo` into a Writable);
 * resolves with what arrived once `writeTo` resolved, rejects with its error.
 */
export function collectDirect(body: Readable): { got: Buffer[]; done: Promise<Buffer> } {
  if (!isDirectBody(body)) throw new Error('not a DirectBody');
  const got: Buffer[] = [];
  const dest = new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _enc, cb) {
      got.push(Buffer.from(chunk)); // a copy: a spool buffer is reused once written
      cb();
    },
  });
  return { got, done: body.writeTo(dest).then(() => Buffer.concat(got)) };
}

/** One turn of the event loop. */
export const turn = () => new Promise<void>((r) => setImmediate(r));

/** Resolves once `stream` has delivered `n` bytes (it keeps flowing into `got`). */
export async function bytesArrived(c: { got: Buffer[] }, n: number): Promise<void> {
  while (c.got.reduce((t, x) => t + x.length, 0) < n) await turn();
}
