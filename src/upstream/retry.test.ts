import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, retry } from './retry.js';

const noSleep = async () => {};

test('retries until success and reports each retry', async () => {
  let calls = 0;
  const seen: number[] = [];
  const v = await retry(
    async () => {
      calls++;
      if (calls < 3) throw new Error('flaky');
      return 'ok';
    },
    { attempts: 5, baseDelayMs: 100, shouldRetry: () => true, sleep: noSleep, onRetry: (_e, attempt) => seen.push(attempt) },
  );
  assert.equal(v, 'ok');
  assert.equal(calls, 3);
  assert.deepEqual(seen, [1, 2]);
});

test('gives up after `attempts` and throws the last error', async () => {
  let calls = 0;
  await assert.rejects(
    retry(async () => Promise.reject(new Error(`fail ${++calls}`)), { attempts: 3, baseDelayMs: 0, shouldRetry: () => true, sleep: noSleep }),
    /fail 3/,
  );
  assert.equal(calls, 3);
});

test('an error shouldRetry refuses is thrown at once', async () => {
  let calls = 0;
  await assert.rejects(
    retry(async () => Promise.reject(new Error(`fatal ${++calls}`)), { attempts: 5, baseDelayMs: 0, shouldRetry: () => false, sleep: noSleep }),
    /fatal 1/,
  );
  assert.equal(calls, 1);
});

test('delays grow exponentially up to the cap, scaled by jitter', async () => {
  const delays: number[] = [];
  await assert.rejects(
    retry(async () => Promise.reject(new Error('x')), {
      attempts: 6,
      baseDelayMs: 100,
      maxDelayMs: 1000,
      shouldRetry: () => true,
      random: () => 1,
      sleep: async (ms) => void delays.push(ms),
    }),
  );
  assert.deepEqual(delays, [100, 200, 400, 800, 1000]);
  assert.equal(backoffDelay(3, 100, 10_000, () => 0.5), 200);
  assert.equal(backoffDelay(1, 100, 10_000, () => 0), 0);
});

test('an abort during the wait stops the loop without another attempt', async () => {
  const ac = new AbortController();
  let calls = 0;
  const p = retry(
    async () => {
      calls++;
      throw new Error('down');
    },
    { attempts: 5, baseDelayMs: 60_000, shouldRetry: () => true, signal: ac.signal, random: () => 1 },
  );
  queueMicrotask(() => ac.abort());
  await assert.rejects(p, (e: Error) => e.name === 'AbortError');
  assert.equal(calls, 1);
});

test('an already aborted signal makes no attempt', async () => {
  let calls = 0;
  await assert.rejects(
    retry(async () => ++calls, { attempts: 3, baseDelayMs: 0, shouldRetry: () => true, signal: AbortSignal.abort() }),
    (e: Error) => e.name === 'AbortError',
  );
  assert.equal(calls, 0);
});
