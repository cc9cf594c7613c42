import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferPool } from './buffer-pool.js';

describe('BufferPool', () => {
  it('hands out at most maxBytes in whole buffers, allocated on first use and reused once returned', () => {
    const pool = new BufferPool({ bufferSize: 1024, maxBytes: 3 * 1024 + 100 });
    assert.equal(pool.capacity, 3);
    assert.deepEqual(pool.stats(), { inUseBytes: 0, idleBytes: 0, capacityBytes: 3072, fallbacks: 0 });
    const a = pool.tryAcquire()!;
    const b = pool.tryAcquire()!;
    const c = pool.tryAcquire()!;
    assert.equal(a.length, 1024);
    assert.equal(pool.tryAcquire(), undefined, 'the bound holds');
    pool.release(b);
    assert.equal(pool.tryAcquire(), b, 'a returned buffer is reused, not reallocated');
    pool.release(a);
    pool.release(c);
    assert.deepEqual(pool.stats(), { inUseBytes: 1024, idleBytes: 2048, capacityBytes: 3072, fallbacks: 0 });
  });

  it('a reserve leaves that many buffers for others', () => {
    const pool = new BufferPool({ bufferSize: 8, maxBytes: 32 });
    assert.ok(pool.tryAcquire(2));
    assert.ok(pool.tryAcquire(2));
    assert.equal(pool.tryAcquire(2), undefined);
    assert.ok(pool.tryAcquire(), 'without a reserve the last ones are handed out');
  });

  it('acquire falls back to a buffer of its own, counted, never returned to the pool', () => {
    let fallbacks = 0;
    const pool = new BufferPool({ bufferSize: 16, maxBytes: 16, onFallback: () => fallbacks++ });
    const pooled = pool.acquire(4);
    assert.deepEqual([pooled.pooled, pooled.buffer.length], [true, 16]);
    const own = pool.acquire(4);
    assert.deepEqual([own.pooled, own.buffer.length], [false, 4]);
    pool.release(own.buffer);
    assert.equal(pool.stats().idleBytes, 0, 'a foreign buffer is not taken in');
    assert.equal(fallbacks, 1);
    assert.equal(pool.stats().fallbacks, 1);
  });

  it('returning a buffer twice is ignored; an empty pool only falls back', () => {
    const pool = new BufferPool({ bufferSize: 16, maxBytes: 16 });
    const b = pool.tryAcquire()!;
    pool.release(b);
    pool.release(b);
    assert.equal(pool.stats().idleBytes, 16);
    assert.equal(pool.tryAcquire(), b);
    assert.equal(pool.tryAcquire(), undefined);
    const empty = new BufferPool({ bufferSize: 16, maxBytes: 0 });
    assert.equal(empty.capacity, 0);
    assert.equal(empty.acquire(8).pooled, false);
  });
});
