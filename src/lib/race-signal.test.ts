import assert from 'node:assert/strict';
import { test } from 'node:test';
import { raceSignal } from './race-signal.js';

test('raceSignal: the value or rejection of the work, unless the signal aborts first', async () => {
  assert.equal(await raceSignal(Promise.resolve(1)), 1);
  assert.equal(await raceSignal(Promise.resolve(2), new AbortController().signal), 2);
  await assert.rejects(raceSignal(Promise.reject(new Error('work failed')), new AbortController().signal), /work failed/);

  const ac = new AbortController();
  let finish!: (v: number) => void;
  const work = new Promise<number>((r) => (finish = r));
  const waiting = raceSignal(work, ac.signal);
  ac.abort(new Error('client left'));
  await assert.rejects(waiting, /client left/);
  finish(3);
  assert.equal(await work, 3, 'the work itself goes on for other waiters');
});

test('raceSignal: an already aborted signal rejects at once, and a later failure of the work is nobody\'s unhandled rejection', async () => {
  const ac = new AbortController();
  ac.abort(new Error('gone'));
  let fail!: (e: Error) => void;
  const work = new Promise<number>((_, reject) => (fail = reject));
  await assert.rejects(raceSignal(work, ac.signal), /gone/);
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  fail(new Error('late failure'));
  await new Promise((r) => setImmediate(r));
  process.off('unhandledRejection', onUnhandled);
  assert.deepEqual(unhandled, []);
});
