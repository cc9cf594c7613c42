import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WriteBatcher } from './write-batcher.js';

/** A write target whose writes finish only when the test says so. */
function gatedTarget() {
  const writes: Buffer[] = [];
  const gates: Array<() => void> = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const write = async (chunks: readonly Buffer[]) => {
    const buf = Buffer.concat(chunks);
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await new Promise<void>((resolve) => gates.push(resolve));
    writes.push(buf);
    inFlight--;
  };
  return { write, writes, open: () => gates.splice(0).forEach((g) => g()), maxInFlight: () => maxInFlight, pendingGates: () => gates.length };
}

const tick = () => new Promise<void>((r) => setImmediate(r));

describe('WriteBatcher', () => {
  it('chunks pushed during a write go out together, in order, one write at a time', async () => {
    const t = gatedTarget();
    const b = new WriteBatcher(t.write, 1 << 20);
    await b.push(Buffer.from('a'));
    await b.push(Buffer.from('b'));
    await b.push(Buffer.from('c'));
    assert.equal(b.pendingBytes, 2, '"a" is being written, "b" and "c" wait');
    t.open();
    await tick();
    t.open();
    await b.flush();
    assert.deepEqual(t.writes.map(String), ['a', 'bc']);
    assert.equal(t.maxInFlight(), 1);
    assert.equal(b.pendingBytes, 0);
  });

  it('push waits once maxPendingBytes are queued (bounded memory)', async () => {
    const t = gatedTarget();
    const b = new WriteBatcher(t.write, 4);
    await b.push(Buffer.from('12'));
    await b.push(Buffer.from('34'));
    let resolved = false;
    const p = b.push(Buffer.from('56')).then(() => (resolved = true));
    await tick();
    assert.equal(resolved, false, 'four bytes are queued: the producer waits');
    while (!resolved) {
      t.open();
      await tick();
    }
    await p;
    t.open();
    await b.flush();
    assert.equal(Buffer.concat(t.writes).toString(), '123456');
  });

  it('a failed write rejects flush and later pushes, and nothing more is written', async () => {
    let calls = 0;
    const b = new WriteBatcher(async () => {
      calls++;
      throw new Error('disk full');
    }, 1 << 20);
    await b.push(Buffer.from('x'));
    await assert.rejects(b.flush(), /disk full/);
    await assert.rejects(b.push(Buffer.from('y')), /disk full/);
    assert.equal(calls, 1);
  });

  it('counts the pushes that waited for the writes and how long (the source was not read meanwhile)', async () => {
    const t = gatedTarget();
    const b = new WriteBatcher(t.write, 2);
    await b.push(Buffer.from('a')); // being written
    await b.push(Buffer.from('b')); // queued: 1 byte, no wait
    assert.deepEqual(b.waited, { count: 0, ms: 0 });
    let resumed = false;
    const full = b.push(Buffer.from('c')).then(() => (resumed = true)); // 2 bytes queued: waits
    await tick();
    assert.equal(resumed, false);
    while (!resumed) {
      t.open();
      await tick();
    }
    await full;
    await b.flush();
    assert.equal(b.waited.count, 1);
    assert.ok(b.waited.ms >= 0);
    assert.deepEqual(t.writes.map(String), ['a', 'bc']);
  });
});
