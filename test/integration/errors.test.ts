/**
 * Every error code a client can receive, provoked through the HTTP layer: the status comes from
 * the one code table, the body is the OCI document `{"errors":[{code,message,detail}]}`, a HEAD
 * gets the same status and headers with no body, and bad input is a 4xx — never a 5xx, never an
 * upstream request. A code added to the table fails the last test until it is provoked here or
 * named as one a pull-only mirror never sends.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ERROR_CODES, type ErrorCode } from '../../src/domain/errors.js';
import { HostileRegistry, manifestAs } from '../../src/upstream/testing/hostile-registry.js';
import { MemoryMetadataStore } from '../../src/storage/memory/memory-manifest-store.js';
import { startApp, type AppHarness } from '../support/app-harness.js';
import { ALL_MANIFESTS, parseOciError, putImage, type FakeImage } from '../support/oci-fixtures.js';
import { rawRequest, type RawResponse } from '../support/raw-http.js';

interface Case {
  readonly code: ErrorCode;
  readonly path: string;
  readonly method?: string;
  readonly headers?: Record<string, string>;
  /** Whether hubcache may ask the upstream before answering (bad input must not). */
  readonly upstream?: boolean;
  /** Also send it as HEAD (routes that answer HEAD at all). Default true for GET. */
  readonly head?: boolean;
}

/** Codes a pull-only mirror never sends, and why. */
const NEVER_SENT: Partial<Record<ErrorCode, string>> = {
  BLOB_UPLOAD_INVALID: 'uploads to mirrored names are refused as DENIED before any upload logic (hosted names: push.test.ts, upload-sessions.test.ts)',
  BLOB_UPLOAD_UNKNOWN: 'uploads to mirrored names are refused as DENIED before any upload logic (hosted names: push.test.ts)',
  MANIFEST_BLOB_UNKNOWN: 'only a manifest push to a hosted name checks its references (push.test.ts)',
  MANIFEST_INVALID: 'only a manifest push to a hosted name is validated against the client (push.test.ts)',
  SIZE_INVALID: 'a blob of the wrong size upstream is found while streaming: the connection is aborted (blobs.test.ts)',
  UNAUTHORIZED: 'hubcache does not authenticate clients; an upstream refusal is DENIED, not a 401 loop',
  TAG_INVALID: 'a manifest reference that is not a tag is MANIFEST_UNKNOWN, as the OCI conformance suite expects (manifest-reference-issue-12.test.ts)',
};

const sendRaw = (hc: AppHarness, c: Case, method: string): Promise<RawResponse> =>
  rawRequest(hc.url, { method, rawPath: c.path, headers: { accept: ALL_MANIFESTS, ...c.headers } });

/** Asserts the OCI error answer for `c`, as GET (or its method) and as HEAD. */
async function assertErrorAnswer(hc: AppHarness, c: Case): Promise<void> {
  const what = `${c.method ?? 'GET'} ${c.path.slice(0, 80)}`;
  const status = ERROR_CODES[c.code].status;
  const before = hc.upstreamServer.requests.length;
  const res = await sendRaw(hc, c, c.method ?? 'GET');
  assert.equal(res.status, status, `${what}: ${res.body.toString()}`);
  assert.match(String(res.headers['content-type']), /^application\/json/, what);
  assert.equal(res.headers['www-authenticate'], undefined, `${what}: no challenge`);
  if (c.method === 'HEAD') {
    assert.equal(res.body.length, 0, `${what}: no body`);
  } else {
    const err = parseOciError(res.body.toString());
    assert.equal(err.code, c.code, what);
    assert.ok(err.message.length > 0, what);
    assert.equal(Number(res.headers['content-length']), res.body.length, what);
  }
  // The loop guard answers before the /v2 handler sets the header (noted, harmless: the answer is final).
  if (c.path.startsWith('/v2') && c.code !== 'LOOP_DETECTED') assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0', what);
  if (!c.upstream) assert.equal(hc.upstreamServer.requests.length, before, `${what}: answered without the upstream`);
  if (c.head ?? !c.method) {
    const head = await sendRaw(hc, c, 'HEAD');
    assert.equal(head.status, status, `HEAD ${c.path}`);
    assert.equal(head.body.length, 0, `HEAD ${c.path}: no body`);
    assert.match(String(head.headers['content-type']), /^application\/json/, `HEAD ${c.path}`);
  }
}

describe('error answers', () => {
  let hc: AppHarness;
  let image: FakeImage;
  const registry = new HostileRegistry();
  const zeros = `sha256:${'0'.repeat(64)}`;

  before(async () => {
    registry
      .behave('broken/', ({ res }) => void res.writeHead(500).end('boom'))
      .behave('limited/', ({ res }) => void res.writeHead(429, { 'retry-after': '60' }).end())
      .behave('forbidden/', ({ res }) => void res.writeHead(403).end('{"errors":[{"code":"DENIED","message":"no"}]}'))
      .behave('weird/', ({ res }) => void res.writeHead(400).end('what'))
      .behave('huge/', manifestAs('application/vnd.oci.image.manifest.v1+json', `{"schemaVersion":2,"pad":"${'x'.repeat(70_000)}"}`))
      .behave('forged/', ({ res, what, ref, req }) => {
        if (what !== 'manifests') return false;
        // Claims to be the manifest asked for by digest; the bytes hash to something else.
        res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': ref });
        res.end(req.method === 'HEAD' ? undefined : '{"schemaVersion":2,"layers":[]}');
      });
    hc = await startApp({ upstreams: { 'docker.io': { registry, repositories: { deny: ['blocked/**'] }, maxManifestBytes: 64 * 1024 } } });
    image = putImage(registry, 'library/app', '1', { seed: 'errors', layerSizes: [1000] });
  });
  after(() => hc.close());

  const cases: Array<[string, () => Case[]]> = [
    ['BLOB_UNKNOWN: a blob the upstream does not have', () => [{ code: 'BLOB_UNKNOWN', path: `/v2/library/app/blobs/${zeros}`, upstream: true }]],
    ['MANIFEST_UNKNOWN: a tag or digest the upstream does not have', () => [
      { code: 'MANIFEST_UNKNOWN', path: '/v2/library/app/manifests/nope', upstream: true },
      { code: 'MANIFEST_UNKNOWN', path: `/v2/library/app/manifests/${zeros}`, upstream: true },
    ]],
    ['NAME_INVALID: names that break the grammar, encodings, empty and dot segments, over 255 characters', () => [
      ...['/v2/Library/App/manifests/1', '/v2/library%2Fapp/manifests/1', '/v2/library/%2e%2e/app/manifests/1', '/v2/library//app/manifests/1',
        '/v2/library/../../etc/manifests/passwd', `/v2/library/./app/blobs/${zeros}`, '/v2/-app/manifests/1', `/v2/${'a/'.repeat(128)}x/manifests/1`].map((path) => ({ code: 'NAME_INVALID' as const, path })),
    ]],
    ['NAME_UNKNOWN: the tags of a repository the upstream does not have', () => [{ code: 'NAME_UNKNOWN', path: '/v2/library/nope/tags/list', upstream: true, head: false }]],
    ['DIGEST_INVALID: malformed digests and algorithms other than sha256', () =>
      ['/v2/library/app/blobs/sha256:abc', '/v2/library/app/blobs/md5:0123', `/v2/library/app/blobs/${zeros.toUpperCase()}`, `/v2/library/app/manifests/sha512:${'0'.repeat(128)}`].map((path) => ({ code: 'DIGEST_INVALID' as const, path }))],
    ['MANIFEST_UNKNOWN: references that are neither a tag nor a digest', () => ['/v2/library/app/manifests/-bad', `/v2/library/app/manifests/${'a'.repeat(129)}`].map((path) => ({ code: 'MANIFEST_UNKNOWN' as const, path }))],
    ['DENIED: a repository the filter refuses (before the upstream), or the upstream refuses', () => [
      { code: 'DENIED', path: '/v2/blocked/app/manifests/1' },
      { code: 'DENIED', path: `/v2/blocked/deep/app/blobs/${zeros}` },
      { code: 'DENIED', path: '/v2/forbidden/app/manifests/1', upstream: true },
      { code: 'DENIED', path: '/v2/library/app/blobs/uploads/', method: 'POST' },
      { code: 'DENIED', path: '/v2/library/app/manifests/1', method: 'PUT' },
    ]],
    ['UNSUPPORTED: deletes and methods a mirror does not serve', () => [
      { code: 'UNSUPPORTED', path: '/v2/library/app/manifests/1', method: 'DELETE' },
      { code: 'UNSUPPORTED', path: `/v2/library/app/blobs/${zeros}`, method: 'PUT' },
      { code: 'UNSUPPORTED', path: '/v2/library/app/tags/list', method: 'HEAD' },
    ]],
    ['TOOMANYREQUESTS: the upstream rate-limits and nothing is cached', () => [{ code: 'TOOMANYREQUESTS', path: '/v2/limited/app/manifests/1', upstream: true }]],
    ['RANGE_INVALID: a Range beyond the blob or a malformed bytes range', () => [
      { code: 'RANGE_INVALID', path: `/v2/library/app/blobs/${image.layers[0]!.digest}`, headers: { range: 'bytes=1000-' }, upstream: true },
      { code: 'RANGE_INVALID', path: `/v2/library/app/blobs/${image.layers[0]!.digest}`, headers: { range: 'bytes=1-x' } },
    ]],
    ['PAGINATION_NUMBER_INVALID: a tags page size that is not a number or too large', () => [{ code: 'PAGINATION_NUMBER_INVALID', path: '/v2/library/app/tags/list?n=x', head: false }]],
    ['LOOP_DETECTED: a request that already passed through this instance', () => [{ code: 'LOOP_DETECTED', path: '/v2/library/app/manifests/1', headers: { via: `1.1 hubcache-${hc.instanceId}` } }]],
    ['UPSTREAM_UNKNOWN: a registry that is not configured, by path or by ?ns=', () => [
      { code: 'UPSTREAM_UNKNOWN', path: '/v2/quay.io/org/app/manifests/1' },
      { code: 'UPSTREAM_UNKNOWN', path: '/v2/org/app/manifests/1?ns=quay.io' },
      { code: 'UPSTREAM_UNKNOWN', path: '/v2/localhost:5000/app/manifests/1' },
    ]],
    ['UNAVAILABLE: the upstream fails and nothing is cached', () => [{ code: 'UNAVAILABLE', path: '/v2/broken/app/manifests/1', upstream: true }, { code: 'UNAVAILABLE', path: `/v2/broken/app/blobs/${zeros}`, upstream: true }]],
    ['UPSTREAM_ERROR: the upstream answers something unusable', () => [
      { code: 'UPSTREAM_ERROR', path: '/v2/weird/app/manifests/1', upstream: true },
      { code: 'UPSTREAM_ERROR', path: '/v2/huge/app/manifests/1', upstream: true },
      { code: 'UPSTREAM_ERROR', path: `/v2/forged/app/manifests/${image.digest}`, upstream: true, head: false },
    ]],
    ['NOT_FOUND: no such endpoint', () => ['/v2/library/app/whatever', '/nothing-here', `/v2/library/app/referrers/${zeros}`].map((path) => ({ code: 'NOT_FOUND' as const, path }))],
  ];

  for (const [title, make] of cases) {
    it(title, async () => {
      for (const c of make()) {
        await assertErrorAnswer(hc, c);
      }
    });
  }

  it('a range on a cached blob is refused from the cache, with the size in Content-Range', async () => {
    const layer = image.layers[0]!;
    await hc.pull(`/v2/library/app/blobs/${layer.digest}`);
    await hc.settle();
    const before = hc.upstreamServer.requests.length;
    const res = await hc.pull(`/v2/library/app/blobs/${layer.digest}`, { headers: { range: 'bytes=5000-5001' } });
    assert.equal(res.status, 416);
    assert.equal(res.headers.get('content-range'), `bytes */${layer.bytes.length}`);
    assert.equal(hc.upstreamServer.requests.length, before);
  });

  it('the upstream’s own error document reaches the client in the detail', async () => {
    const res = await hc.fetch('/v2/forbidden/app/manifests/1');
    const err = parseOciError(await res.text());
    assert.equal(err.message, 'upstream refused access');
    assert.deepEqual((err.detail as { errors: unknown }).errors, [{ code: 'DENIED', message: 'no' }]);
  });

  it('every code in the table is provoked above or is one a pull-only mirror never sends', () => {
    const covered = new Set(cases.flatMap(([, make]) => make().map((c) => c.code)));
    covered.add('UNKNOWN'); // below, with a failing store
    covered.add('STORAGE_UNAVAILABLE'); // storage-faults.test.ts, with the fault-injection store
    // cluster-maintenance.test.ts (POST /admin/gc of a replica, with Redis and another holder / Redis stopped)
    covered.add('MAINTENANCE_RUNNING');
    covered.add('MAINTENANCE_UNAVAILABLE');
    for (const code of Object.keys(NEVER_SENT) as ErrorCode[]) assert.ok(!covered.has(code), `${code} is sent after all: remove it from NEVER_SENT`);
    const missing = (Object.keys(ERROR_CODES) as ErrorCode[]).filter((c) => !covered.has(c) && !(c in NEVER_SENT));
    assert.deepEqual(missing, [], 'codes with no integration test');
  });
});

describe('the error handler with a bug behind it', () => {
  let hc: AppHarness;

  before(async () => {
    const metadata = new MemoryMetadataStore();
    metadata.getTag = async () => {
      throw new Error('EIO: disk on fire at /var/lib/hubcache/secret');
    };
    hc = await startApp({ stores: { metadata } });
    putImage(hc.registry, 'library/app', '1', { seed: 'bug' });
  });
  after(() => hc.close());

  it('an unexpected error is 500 UNKNOWN with a generic message; the details go to the log, not the client', async () => {
    const res = await hc.fetch('/v2/library/app/manifests/1', { headers: { 'x-request-id': 'the-bug' } });
    assert.equal(res.status, 500);
    const text = await res.text();
    assert.deepEqual(parseOciError(text), { code: 'UNKNOWN', message: ERROR_CODES.UNKNOWN.message, detail: null });
    assert.doesNotMatch(text, /disk on fire|secret/);
    const line = await hc.waitForLog((l) => l.message === 'unhandled error' && l.requestId === 'the-bug');
    assert.match(String(line.error), /disk on fire/);
    assert.equal(line.level, 'error');
    const head = await rawRequest(`${hc.url}/v2/library/app/manifests/1`, { method: 'HEAD' });
    assert.equal(head.status, 500);
    assert.equal(head.body.length, 0);
  });
});
