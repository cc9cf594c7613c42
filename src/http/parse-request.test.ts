import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isRegistryError } from '../domain/errors.js';
import { parseRangeHeader, parseRegistryRequest } from './parse-request.js';
import { resolveRepo } from './resolve-repo.js';

const D = `sha256:${'a'.repeat(64)}`;

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(isRegistryError(err), `expected a RegistryError, got ${String(err)}`);
    return err.code;
  }
  return 'none';
}

test('routes with multi-component names', () => {
  assert.deepEqual(parseRegistryRequest('/v2/').request, { route: 'base' });
  assert.deepEqual(parseRegistryRequest('/v2/org/team/app/manifests/1.0').request, { route: 'manifest', name: 'org/team/app', ref: { kind: 'tag', tag: '1.0' } });
  assert.deepEqual(parseRegistryRequest(`/v2/alpine/manifests/${D}`).request, { route: 'manifest', name: 'alpine', ref: { kind: 'digest', digest: D } });
  assert.deepEqual(parseRegistryRequest(`/v2/a/blobs/${D}?ns=docker.io`).request, { route: 'blob', name: 'a', digest: D });
  assert.deepEqual(parseRegistryRequest('/v2/library/a/tags/list?n=10&last=b').request, { route: 'tags', name: 'library/a', n: 10, last: 'b' });
  // a repository may itself be called "manifests" or "blobs"
  assert.deepEqual(parseRegistryRequest('/v2/manifests/manifests/latest').request, { route: 'manifest', name: 'manifests', ref: { kind: 'tag', tag: 'latest' } });
  assert.equal(parseRegistryRequest('/v2/a/blobs/uploads/').request.route, 'upload');
});

test('invalid names, tags, digests, encodings and dot segments are 4xx codes', () => {
  assert.equal(code(() => parseRegistryRequest('/v2/a%2Fb/manifests/latest')), 'NAME_INVALID');
  assert.equal(code(() => parseRegistryRequest('/v2/../../etc/manifests/latest')), 'NAME_INVALID');
  assert.equal(code(() => parseRegistryRequest('/v2/a/./b/manifests/latest')), 'NAME_INVALID');
  assert.equal(code(() => parseRegistryRequest('/v2/a//b/manifests/latest')), 'NAME_INVALID');
  assert.equal(code(() => parseRegistryRequest('/v2/a/manifests/sha256:abc')), 'DIGEST_INVALID');
  assert.equal(code(() => parseRegistryRequest('/v2/a/blobs/md5:abc')), 'DIGEST_INVALID');
  assert.equal(code(() => parseRegistryRequest(`/v2/a/blobs/sha256:${'A'.repeat(64)}`)), 'DIGEST_INVALID');
  assert.equal(code(() => parseRegistryRequest('/v2/a/tags/list?n=abc')), 'PAGINATION_NUMBER_INVALID');
  assert.equal(code(() => parseRegistryRequest('/v2/a/whatever')), 'NOT_FOUND');
});

test('a manifest reference that is neither a tag nor a digest names no manifest (MANIFEST_UNKNOWN in app.ts), unless it claims to be a digest (issue #12)', () => {
  const ref = (r: string) => {
    const { request } = parseRegistryRequest(`/v2/library/x/manifests/${r}`);
    assert.equal(request.route, 'manifest');
    return request.route === 'manifest' ? request.ref : undefined;
  };
  // The OCI conformance suite's "nonexistent manifest", and other non-tags without the form of a digest.
  for (const r of ['.INVALID_MANIFEST_NAME', '-bad', 'x'.repeat(129), 'Foo:bar', ':abc', 'a+:b', '+x:y']) {
    assert.deepEqual(ref(r), { kind: 'unknown', reference: r }, r);
  }
  assert.equal((ref('x'.repeat(300)) as { reference: string }).reference.length, 201, 'clipped for the error detail');
  // `algorithm:` in the OCI digest grammar claims to be a digest: a malformed one is refused.
  for (const r of ['sha256:zzz', 'sha256:', `sha256:${'A'.repeat(64)}`, 'md5:abc', 'sha512:abc', 'sha256+b64u:abc', 'multihash+base58:x']) {
    assert.equal(code(() => parseRegistryRequest(`/v2/library/x/manifests/${r}`)), 'DIGEST_INVALID', r);
  }
  assert.deepEqual(ref('_under.score-1'), { kind: 'tag', tag: '_under.score-1' });
  assert.deepEqual(ref(D), { kind: 'digest', digest: D });
});

test('repository names are validated when resolved', () => {
  const opts = { upstreams: new Set(['docker.io', 'ghcr.io']), defaultUpstream: 'docker.io', normalize: (u: string, n: string) => (u === 'docker.io' && !n.includes('/') ? `library/${n}` : n) };
  assert.deepEqual(resolveRepo(opts, 'alpine', null), { upstream: 'docker.io', repo: 'library/alpine' });
  assert.deepEqual(resolveRepo(opts, 'library/alpine', 'docker.io'), { upstream: 'docker.io', repo: 'library/alpine' });
  assert.deepEqual(resolveRepo(opts, 'org/app', 'ghcr.io'), { upstream: 'ghcr.io', repo: 'org/app' });
  assert.deepEqual(resolveRepo(opts, 'ghcr.io/org/app', null), { upstream: 'ghcr.io', repo: 'org/app' });
  assert.equal(code(() => resolveRepo(opts, 'Upper/case', null)), 'NAME_INVALID');
  assert.equal(code(() => resolveRepo(opts, 'a..b', null)), 'NAME_INVALID');
  assert.equal(code(() => resolveRepo(opts, 'evil.example.com/x', null)), 'UPSTREAM_UNKNOWN');
  assert.equal(code(() => resolveRepo(opts, 'x', '169.254.169.254')), 'UPSTREAM_UNKNOWN');
  assert.equal(code(() => resolveRepo(opts, `${'a'.repeat(250)}/${'b'.repeat(10)}`, null)), 'NAME_INVALID');
});

test('Range headers, applied to the blob size', () => {
  const at = (header: string, size = 1000) => parseRangeHeader(header)!(size);
  assert.equal(parseRangeHeader(undefined), undefined);
  assert.deepEqual(at('bytes=0-99'), { start: 0, end: 99 });
  assert.deepEqual(at('bytes=100-'), { start: 100, end: 999 });
  assert.deepEqual(at('bytes=-5'), { start: 995, end: 999 });
  assert.deepEqual(at('bytes=990-2000'), { start: 990, end: 999 }, 'the end is cut to the size');
  assert.deepEqual(at('bytes=-5000'), { start: 0, end: 999 }, 'a suffix longer than the blob is the whole blob (RFC 9110 §14.1.3)');
  assert.equal(at('bytes=0-1,5-6'), 'whole', 'several ranges: the whole body');
  assert.equal(at('bytes=1000-'), 'unsatisfiable');
  assert.equal(at('bytes=5-1'), 'unsatisfiable');
  assert.equal(at('bytes=-0'), 'unsatisfiable');
  assert.equal(at('bytes=-5', 0), 'unsatisfiable', 'nothing to serve of an empty blob');
  assert.equal(at('items=0-1'), 'whole', 'RFC 9110 §14.2: an unknown range unit is ignored');
  assert.equal(at('items=zz'), 'whole');
  assert.equal(code(() => at('bytes=zz')), 'RANGE_INVALID');
  assert.equal(code(() => at('bytes=-')), 'RANGE_INVALID');
  assert.equal(code(() => at('bytes=abc')), 'RANGE_INVALID');
});
