import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PartBuffers, type Schedule } from './part-buffers.js';

/** A schedule the test fires by hand. */
function manual(): { schedule: Schedule; pending: () => number; fire: () => void } {
  let due: Array<{ fn: () => void; live: boolean }> = [];
  return {
    schedule: (_ms, fn) => {
      const t = { fn, live: true };
      due.push(t);
      return () => (t.live = false);
    },
    pending: () => due.filter((t) => t.live).length,
    fire: () => {
      const now = due;
      due = [];
      for (const t of now) if (t.live) t.fn();
    },
  };
}

describe('PartBuffers', () => {
  it('hands a given-back buffer out again instead of allocating a fresh one', () => {
    const p = new PartBuffers(1024, 2, { schedule: manual().schedule });
    const a = p.take();
    assert.equal(a.length, 1024);
    p.give(a);
    assert.equal(p.idle, 1);
    assert.equal(p.take(), a);
    assert.equal(p.idle, 0);
    assert.notEqual(p.take(), a, 'a fresh one when none is idle');
  });

  it('keeps at most `keep` idle buffers, never one of another size, never one twice', () => {
    const p = new PartBuffers(64, 2, { schedule: manual().schedule });
    const [a, b, c] = [p.take(), p.take(), p.take()];
    p.give(a);
    p.give(a);
    assert.equal(p.idle, 1, 'the same buffer is not kept twice');
    p.give(b);
    p.give(c);
    assert.equal(p.idle, 2, 'the third goes to the garbage collector');
    p.give(Buffer.alloc(32));
    assert.equal(p.idle, 2);
  });

  it('drops every idle buffer once none was given back for the idle time; each give restarts the wait', () => {
    const clock = manual();
    const p = new PartBuffers(64, 4, { idleMs: 10_000, schedule: clock.schedule });
    p.give(p.take());
    p.give(p.take());
    assert.equal(clock.pending(), 1, 'one drop pending, restarted by the second give');
    assert.equal(p.idle, 1, 'the second take reused the first buffer');
    const [x, y] = [p.take(), p.take()];
    p.give(x);
    p.give(y);
    assert.equal(p.idle, 2);
    clock.fire();
    assert.equal(p.idle, 0);
    assert.equal(clock.pending(), 0);
  });
});
