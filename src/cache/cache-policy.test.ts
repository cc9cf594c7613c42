import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canServeStale, decideAbandonedFill, decideTag } from './cache-policy.js';
import { UpstreamError } from '../upstream/upstream.js';
import { sha256Digest } from '../domain/digest.js';

const entry = { digest: sha256Digest('x'), mediaType: 'm', size: 1, validatedAt: 1_000 };

test('a tag is fetched when unknown, served locally within the TTL, revalidated after', () => {
  assert.equal(decideTag(undefined, 5_000, 300_000), 'fetch');
  assert.equal(decideTag(entry, 1_000 + 299_999, 300_000), 'serve-local');
  assert.equal(decideTag(entry, 1_000 + 300_000, 300_000), 'revalidate');
  assert.equal(decideTag(entry, 1_000, 0), 'revalidate');
});

test('stale copies answer for outages, rate limits and broken answers, never for not-found or refusals', () => {
  assert.equal(canServeStale(new UpstreamError('unavailable', 'x')), true);
  assert.equal(canServeStale(new UpstreamError('rate-limited', 'x')), true);
  assert.equal(canServeStale(new UpstreamError('not-found', 'x')), false);
  assert.equal(canServeStale(new UpstreamError('unauthorized', 'x')), false);
  assert.equal(canServeStale(new UpstreamError('denied', 'x')), false);
  assert.equal(canServeStale(new UpstreamError('protocol', 'x')), true);
});

test('an abandoned download is finished when little is left or most has arrived, cancelled otherwise', () => {
  const MiB = 1024 * 1024;
  const budget = { minProgressToFinish: 0.5, maxRemainingToFinish: 16 * MiB };
  assert.equal(decideAbandonedFill(budget, 8 * MiB, 0), 'finish', 'a small blob: what is left is within the budget');
  assert.equal(decideAbandonedFill(budget, 32 * MiB, 16 * MiB), 'finish', 'half done');
  assert.equal(decideAbandonedFill(budget, 32 * MiB, 16 * MiB - 1), 'cancel', 'just under half, more than 16 MiB left');
  assert.equal(decideAbandonedFill(budget, 20 * MiB, 4 * MiB), 'finish', 'exactly 16 MiB left');
  assert.equal(decideAbandonedFill(budget, 20 * MiB, 4 * MiB - 1), 'cancel', 'one byte more than 16 MiB left');
  assert.equal(decideAbandonedFill(budget, 33 * MiB, 16 * MiB), 'cancel', 'under half, more than 16 MiB left');
  assert.equal(decideAbandonedFill(budget, 4096 * MiB, 4000 * MiB), 'finish', 'a big blob nearly done');
  assert.equal(decideAbandonedFill(budget, 4096 * MiB, 2047 * MiB), 'cancel');
  assert.equal(decideAbandonedFill(budget, undefined, 0), 'cancel', 'size not announced yet');
  assert.equal(decideAbandonedFill(budget, 0, 0), 'finish');
  // The two ends of the range: finish everything (no budget), cancel everything.
  assert.equal(decideAbandonedFill({ minProgressToFinish: 0, maxRemainingToFinish: 0 }, undefined, 0), 'finish');
  assert.equal(decideAbandonedFill({ minProgressToFinish: 1, maxRemainingToFinish: 0 }, 4096 * MiB, 4096 * MiB - 1), 'cancel');
});
