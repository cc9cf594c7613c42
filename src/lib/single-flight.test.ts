import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SingleFlight } from './single-flight.js';

test('concurrent callers share one call and one value', async () => {
  const sf = new SingleFlight<string, number>();
  let calls = 0;
  let release!: (v: number) => void;
  const gate = new Promise<number>((r) => (release = r));
  const fn = async () => {
    calls++;
    return gate;
  };
  const runs = Array.from({ length: 5 }, () => sf.run('k', fn));
  assert.deepEqual(runs.map((r) => r.joined), [false, true, true, true, true]);
  release(42);
  assert.deepEqual(await Promise.all(runs.map((r) => r.promise)), [42, 42, 42, 42, 42]);
  assert.equal(calls, 1);
  assert.equal(sf.size, 0);
});

test('a rejection reaches every waiter and the key is cleared so the next call retries', async () => {
  const sf = new SingleFlight<string, number>();
  let calls = 0;
  const failing = async () => {
    calls++;
    throw new Error('boom');
  };
  const results = await Promise.allSettled([sf.do('k', failing), sf.do('k', failing)]);
  assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
  assert.equal(calls, 1);
  assert.equal(await sf.do('k', async () => 7), 7);
});
