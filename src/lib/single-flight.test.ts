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

test('a caller that leaves stops waiting with its own reason; the work goes on for the others', async () => {
  const sf = new SingleFlight<string, number>();
  let release!: (v: number) => void;
  let workSignal!: AbortSignal;
  const fn = (signal: AbortSignal) => {
    workSignal = signal;
    return new Promise<number>((r) => (release = r));
  };
  const a = new AbortController();
  const b = new AbortController();
  const first = sf.run('k', fn, a.signal);
  const second = sf.run('k', fn, b.signal);
  a.abort(new Error('client A left'));
  await assert.rejects(first.promise, /client A left/);
  assert.equal(workSignal.aborted, false);
  release(7);
  assert.equal(await second.promise, 7);
});

test('when every caller has left, the work is aborted and the key is free: the next caller starts afresh', async () => {
  const sf = new SingleFlight<string, number>();
  const signals: AbortSignal[] = [];
  const fn = (signal: AbortSignal) => {
    signals.push(signal);
    return new Promise<number>((resolve, reject) => {
      signal.addEventListener('abort', () => reject(signal.reason));
      if (signals.length === 2) resolve(2);
    });
  };
  const a = new AbortController();
  const b = new AbortController();
  const runs = [sf.run('k', fn, a.signal), sf.run('k', fn, b.signal)];
  a.abort();
  assert.equal(signals[0]!.aborted, false, 'one caller still waits');
  b.abort();
  assert.equal(signals[0]!.aborted, true);
  assert.equal(signals[0]!.reason.name, 'AbortError');
  assert.equal(sf.size, 0);
  await Promise.allSettled(runs.map((r) => r.promise));
  const late = sf.run('k', fn, new AbortController().signal);
  assert.equal(late.joined, false, 'a late caller does not join the abandoned work');
  assert.equal(await late.promise, 2);
});

test('a caller without a signal keeps the work alive whoever leaves', async () => {
  const sf = new SingleFlight<string, number>();
  let workSignal!: AbortSignal;
  let release!: (v: number) => void;
  const fn = (signal: AbortSignal) => ((workSignal = signal), new Promise<number>((r) => (release = r)));
  const a = new AbortController();
  const withSignal = sf.run('k', fn, a.signal);
  const pinned = sf.do('k', fn);
  a.abort();
  await assert.rejects(withSignal.promise);
  assert.equal(workSignal.aborted, false);
  release(1);
  assert.equal(await pinned, 1);
});
