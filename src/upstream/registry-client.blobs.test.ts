import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { text } from 'node:stream/consumers';
import { MediaTypes } from '../domain/media-types.js';
import type { RepoName, Tag } from '../domain/reference.js';
import { RegistryUpstream, type RegistryUpstreamOptions } from './registry-client.js';
import { cdnHandler, FakeRegistry, LoopbackServer } from './testing/fake-registry.js';
import { UpstreamError } from './upstream.js';

const repo = 'library/alpine' as RepoName;
const bytes = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz');
const isKind = (kind: string) => (e: unknown) => e instanceof UpstreamError && e.kind === kind;

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(cleanup.splice(0).map((f) => f()));
});

async function start(handler: Parameters<typeof LoopbackServer.start>[0], host: '127.0.0.1' | 'localhost' = '127.0.0.1'): Promise<LoopbackServer> {
  const s = await LoopbackServer.start(handler, host);
  cleanup.push(() => s.close());
  return s;
}

function client(url: string, opts: Partial<RegistryUpstreamOptions> = {}): RegistryUpstream {
  const c = new RegistryUpstream({
    name: 'fake.test',
    url,
    timeouts: { connectMs: 2000, headersMs: 5000, bodyIdleMs: 5000 },
    retries: { attempts: 3, baseDelayMs: 0 },
    userAgent: 'hubcache-test',
    via: '1.1 test-instance (hubcache)',
    // The fake CDN listens on loopback (`localhost`), which the redirect guard refuses unless the
    // operator allows it, as for an internal CDN (redirect-guard.test.ts covers the refusal).
    allowedRedirectHosts: ['localhost'],
    ...opts,
  });
  cleanup.push(() => c.close());
  return c;
}

/** A Bearer registry redirecting blobs to a CDN on another origin, as Docker Hub does. */
async function hubLike(): Promise<{ reg: FakeRegistry; srv: LoopbackServer; cdn: LoopbackServer; digest: ReturnType<FakeRegistry['putBlob']> }> {
  const reg = new FakeRegistry();
  reg.auth = 'bearer';
  const digest = reg.putBlob(bytes);
  const cdn = await start(cdnHandler(reg.blobs), 'localhost');
  reg.blobRedirect = cdn.url;
  return { reg, srv: await start(reg.handle), cdn, digest };
}

test('blob redirect to a CDN on another origin is followed without Authorization', async () => {
  const { srv, cdn, digest } = await hubLike();
  const blob = await client(srv.url).getBlob(repo, digest);
  assert.equal(blob.size, bytes.length);
  assert.equal(blob.offset, 0);
  assert.equal(await text(blob.body), bytes.toString());
  assert.equal(cdn.count(), 1);
  assert.equal(cdn.count((r) => r.headers.authorization !== undefined), 0, 'the token must never reach the CDN');
  assert.match(srv.requests.at(-1)!.headers.authorization ?? '', /^Bearer /);
});

test('resume from an offset: 206 with Content-Range through the redirect', async () => {
  const { srv, cdn, digest } = await hubLike();
  const blob = await client(srv.url).getBlob(repo, digest, { offset: 10 });
  assert.deepEqual([blob.size, blob.offset], [bytes.length, 10]);
  assert.equal(await text(blob.body), bytes.subarray(10).toString());
  assert.equal(cdn.requests[0]!.headers.range, 'bytes=10-');
});

test('resume from an offset when the upstream ignores Range (200): the client skips the bytes', async () => {
  const reg = new FakeRegistry();
  reg.ignoreRange = true;
  const digest = reg.putBlob(bytes);
  const srv = await start(reg.handle);
  const blob = await client(srv.url).getBlob(repo, digest, { offset: 25 });
  assert.deepEqual([blob.size, blob.offset], [bytes.length, 25]);
  assert.equal(await text(blob.body), bytes.subarray(25).toString());
});

test('a 206 that does not start at the offset is a protocol error', async () => {
  const reg = new FakeRegistry();
  const digest = reg.putBlob(bytes);
  reg.hook = (_req, res) => {
    res.writeHead(206, { 'content-range': `bytes 0-${bytes.length - 1}/${bytes.length}` }).end(bytes);
    return true;
  };
  const srv = await start(reg.handle);
  await assert.rejects(client(srv.url).getBlob(repo, digest, { offset: 5 }), isKind('protocol'));
});

test('HEAD of a blob follows redirects as HEAD and reports the size', async () => {
  const { srv, cdn, digest } = await hubLike();
  assert.deepEqual(await client(srv.url).headBlob(repo, digest), { size: bytes.length });
  assert.equal(cdn.requests[0]!.method, 'HEAD');
});

test('redirects: same origin keeps the token, non-http(s) targets and loops are protocol errors', async () => {
  const reg = new FakeRegistry();
  reg.auth = 'bearer';
  const digest = reg.putBlob(bytes);
  let mode: 'same' | 'ftp' | 'loop' = 'same';
  reg.hook = (req, res) => {
    if (req.url?.startsWith('/cdn/')) return false;
    if (!req.url?.includes('/blobs/') || !req.headers.authorization) return false;
    if (req.url.endsWith('?moved')) {
      res.writeHead(200, { 'content-length': bytes.length }).end(bytes);
      return true;
    }
    const location = mode === 'same' ? `${req.url}?moved` : mode === 'ftp' ? 'ftp://example.com/x' : req.url;
    res.writeHead(302, { location }).end();
    return true;
  };
  const srv = await start(reg.handle);
  const c = client(srv.url);
  assert.equal(await text((await c.getBlob(repo, digest)).body), bytes.toString());
  assert.match(srv.requests.at(-1)!.headers.authorization ?? '', /^Bearer /);
  mode = 'ftp';
  await assert.rejects(c.getBlob(repo, digest), isKind('protocol'));
  mode = 'loop';
  const before = srv.count();
  await assert.rejects(c.getBlob(repo, digest), isKind('protocol'));
  assert.equal(srv.count() - before, 6, 'the first request and 5 redirects');
});

test('Via and User-Agent are on every upstream request: registry, token service and CDN', async () => {
  const { reg, srv, cdn, digest } = await hubLike();
  reg.putManifest(repo, '3.20', { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [] }, MediaTypes.ociIndex);
  const c = client(srv.url);
  await c.getManifest(repo, { kind: 'tag', tag: '3.20' as Tag });
  await text((await c.getBlob(repo, digest)).body);
  const all = [...srv.requests, ...cdn.requests];
  assert.ok(all.some((r) => r.url.startsWith('/token')) && cdn.count() === 1);
  for (const r of all) {
    assert.equal(r.headers.via, '1.1 test-instance (hubcache)', r.url);
    assert.equal(r.headers['user-agent'], 'hubcache-test', r.url);
  }
});
