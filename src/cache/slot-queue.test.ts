import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SlotQueue, type Slot } from './slot-queue.js';

/** Settles a promise into a readable state without awaiting it forever. */
function track<T>(p: Promise<T>) {
  const t = { state: 'pending' as 'pending' | 'resolved' | 'rejected', value: undefined as T | undefined, error: undefined as unknown };
  p.then(
    (v) => ((t.state = 'resolved'), (t.value = v)),
    (e) => ((t.state = 'rejected'), (t.error = e)),
  );
  return t;
}

const flush = () => new Promise<void>((r) => setImmediate(r));

describe('SlotQueue', () => {
  it('hands out at most `limit` slots; the rest wait and get them first come, first served', async () => {
    const q = new SlotQueue(2);
    const a = q.tryAcquire()!;
    const b = await q.acquire();
    assert.ok(a && b);
    assert.equal(q.tryAcquire(), undefined);
    const c = track(q.acquire());
    const d = track(q.acquire());
    await flush();
    assert.deepEqual([c.state, d.state, q.held, q.waiting], ['pending', 'pending', 2, 2]);
    b.release();
    await flush();
    assert.deepEqual([c.state, d.state, q.held, q.waiting], ['resolved', 'pending', 2, 1]);
    b.release(); // idempotent: not a second hand-over
    await flush();
    assert.equal(d.state, 'pending');
    a.release();
    await flush();
    assert.equal(d.state, 'resolved');
    (c.value as Slot).release();
    (d.value as Slot).release();
    assert.deepEqual([q.held, q.waiting], [0, 0]);
  });

  it('tryAcquire never jumps the line', async () => {
    const q = new SlotQueue(1);
    const a = q.tryAcquire()!;
    const waiter = track(q.acquire());
    a.release(); // handed to the waiter, not left for the next tryAcquire
    assert.equal(q.tryAcquire(), undefined);
    await flush();
    assert.equal(waiter.state, 'resolved');
  });

  it('a waiter whose signal aborts leaves the line without ever holding a slot', async () => {
    const q = new SlotQueue(1);
    const a = q.tryAcquire()!;
    const ac = new AbortController();
    const gone = track(q.acquire(ac.signal));
    const next = track(q.acquire());
    ac.abort(new Error('client left'));
    await flush();
    assert.equal(gone.state, 'rejected');
    assert.equal((gone.error as Error).message, 'client left');
    assert.equal(q.waiting, 1);
    a.release();
    await flush();
    assert.equal(next.state, 'resolved', 'the slot went to the next in line');
    assert.equal(q.held, 1);
    const pre = new AbortController();
    pre.abort(new Error('already gone'));
    await assert.rejects(q.acquire(pre.signal), /already gone/);
  });

  it('close fails every waiter and every later acquire; held slots stay valid', async () => {
    const q = new SlotQueue(1);
    const a = q.tryAcquire()!;
    const w = track(q.acquire());
    q.close(new Error('shutting down'));
    await flush();
    assert.equal(w.state, 'rejected');
    await assert.rejects(q.acquire(), /shutting down/);
    assert.equal(q.tryAcquire(), undefined);
    a.release();
    assert.equal(q.held, 0);
  });

  it('refuses a limit below 1', () => {
    assert.throws(() => new SlotQueue(0), RangeError);
  });
});
