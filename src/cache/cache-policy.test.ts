import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canServeStale, decideTag } from './cache-policy.js';
import { UpstreamError } from '../upstream/upstream.js';
import { sha256Digest } from '../domain/digest.js';

const entry = { digest: sha256Digest('x'), mediaType: 'm', size: 1, validatedAt: 1_000 };

test('a tag is fetched when unknown, served locally within the TTL, revalidated after', () => {
  assert.equal(decideTag(undefined, 5_000, 300_000), 'fetch');
  assert.equal(decideTag(entry, 1_000 + 299_999, 300_000), 'serve-local');
  assert.equal(decideTag(entry, 1_000 + 300_000, 300_000), 'revalidate');
  assert.equal(decideTag(entry, 1_000, 0), 'revalidate');
});

test('stale copies answer for outages and rate limits, never for not-found or refusals', () => {
  assert.equal(canServeStale(new UpstreamError('unavailable', 'x')), true);
  assert.equal(canServeStale(new UpstreamError('rate-limited', 'x')), true);
  assert.equal(canServeStale(new UpstreamError('not-found', 'x')), false);
  assert.equal(canServeStale(new UpstreamError('unauthorized', 'x')), false);
  assert.equal(canServeStale(new UpstreamError('denied', 'x')), false);
  assert.equal(canServeStale(new UpstreamError('protocol', 'x')), false);
});
