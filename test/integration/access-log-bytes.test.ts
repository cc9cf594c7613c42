/**
 * The access log's `bytes` and the manifest byte metric: body bytes only (no headers), counted by
 * the blob handler as it streams and from Content-Length for responses written in one piece.
 */
import { TagList } from '../../src/domain/tag-list.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { resolveRange, type RegistryReader } from '../../src/cache/registry-reader.js';
import { sha256Digest } from '../../src/domain/digest.js';
import { RegistryError } from '../../src/domain/errors.js';
import { createLogger } from '../../src/lib/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { rawRequest } from '../support/raw-http.js';
import { createApp } from '../../src/http/app.js';

const MANIFEST = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}');
const BLOB = Buffer.alloc(300_000, 7);
const BLOB_DIGEST = sha256Digest(BLOB);

/** Serves one manifest and one blob; the blob `broken` fails after its first 100 000 bytes. */
const reader: RegistryReader = {
  async getManifest() {
    return { descriptor: { digest: sha256Digest(MANIFEST), size: MANIFEST.length, mediaType: 'application/vnd.oci.image.manifest.v1+json' }, body: MANIFEST, outcome: 'hit' };
  },
  async getBlob(key, digest, opts) {
    if (digest !== BLOB_DIGEST) throw new RegistryError('BLOB_UNKNOWN', { digest });
    const range = resolveRange(opts.range, BLOB.length);
    const bytes = range ? BLOB.subarray(range.start, range.end + 1) : BLOB;
    const body = key.repo === 'library/broken'
      ? Readable.from((async function* () {
          yield bytes.subarray(0, 100_000);
          throw new Error('storage failed');
        })())
      : Readable.from([bytes.subarray(0, 150_000), bytes.subarray(150_000)]);
    return { digest, size: BLOB.length, range, body: opts.head ? undefined : body, source: 'cache' };
  },
  async listTags() {
    return { name: 'library/a', tags: TagList.empty };
  },
};

async function start(): Promise<{ url: string; lines: Array<Record<string, unknown>>; metrics: Metrics; server: Server }> {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const metrics = new Metrics({ collectDefault: false });
  const app = createApp({
    reader,
    sendTimeoutMs: 60_000,
    resolver: { upstreams: new Set(['docker.io']), defaultUpstream: 'docker.io' },
    logger: createLogger({ level: 'info', format: 'json', stream }),
    metrics,
    instanceId: 'test',
    readiness: async () => ({}),
    serveMetrics: false,
  });
  const server = createServer(app).listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, lines, metrics, server };
}

test('access log bytes are body bytes: streamed blobs as written, one-piece responses by Content-Length, HEAD none', async () => {
  const { url, lines, metrics, server } = await start();
  try {
    const cases: Array<[string, { method?: string; headers?: Record<string, string> }, number]> = [
      ['/v2/', {}, 2],
      ['/v2/', { method: 'HEAD' }, 0],
      ['/v2/alpine/manifests/1', {}, MANIFEST.length],
      ['/v2/alpine/manifests/1', { method: 'HEAD' }, 0],
      [`/v2/alpine/blobs/${BLOB_DIGEST}`, {}, BLOB.length],
      [`/v2/alpine/blobs/${BLOB_DIGEST}`, { method: 'HEAD' }, 0],
      [`/v2/alpine/blobs/${BLOB_DIGEST}`, { headers: { range: 'bytes=1000-1999' } }, 1000],
    ];
    for (const [i, [path, opts, bytes]] of cases.entries()) {
      const id = `case-${i}`;
      const res = await rawRequest(url + path, { ...opts, headers: { ...opts.headers, 'x-request-id': id } });
      assert.equal(res.outcome, 'complete', path);
      const line = lines.find((l) => l.message === 'request' && l.requestId === id);
      assert.equal(line?.bytes, bytes, `${opts.method ?? 'GET'} ${path} ${JSON.stringify(opts.headers ?? {})}`);
      if (opts.method !== 'HEAD') assert.equal(res.body.length, bytes, path);
    }
    // An error body is counted like any other one-piece response.
    const missing = await rawRequest(`${url}/v2/alpine/blobs/sha256:${'0'.repeat(64)}`, { headers: { 'x-request-id': 'missing' } });
    assert.equal(missing.status, 404);
    assert.equal(lines.find((l) => l.requestId === 'missing' && l.message === 'request')?.bytes, missing.body.length);
    // A stream that fails half-way: the connection is aborted and the bytes written before are logged.
    const broken = await rawRequest(`${url}/v2/library/broken/blobs/${BLOB_DIGEST}`, { headers: { 'x-request-id': 'broken' } });
    assert.equal(broken.outcome, 'error');
    const line = lines.find((l) => l.requestId === 'broken' && l.message === 'request');
    assert.equal(line?.aborted, true);
    assert.equal(line?.bytes, 100_000);
    // Manifest bodies reach the client-bytes metric from here (one GET; the HEAD sent none).
    const counted = (await metrics.registry.getSingleMetric('hubcache_client_bytes_total')!.get()).values.find((v) => v.labels.source === 'cache')?.value;
    assert.equal(counted, MANIFEST.length + BLOB.length + 1000 + 100_000);
  } finally {
    server.close();
  }
});
