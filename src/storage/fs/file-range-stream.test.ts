import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { getEventListeners } from 'node:events';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { BufferPool } from '../buffer-pool.js';
import { FALLBACK_READ_CHUNK, FILE_READ_CHUNK, FileRangeStream } from './file-range-stream.js';

describe('FileRangeStream', () => {
  let dir: string;
  let path: string;
  const data = randomBytes(FILE_READ_CHUNK * 2 + 12_345);
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'hubcache-frs-'));
    path = join(dir, 'blob');
    writeFileSync(path, data);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const stream = async (start: number, end: number, buffers?: BufferPool) => new FileRangeStream({ handle: await open(path, 'r'), start, end, buffers });

  /** A destination that keeps what it gets and acknowledges each write after `delayTicks` turns. */
  function sink(opts: { delayTicks?: number; failAfter?: number; onWrite?: (chunk: Buffer) => void } = {}) {
    const got: Buffer[] = [];
    let calls = 0;
    const dest = new Writable({
      highWaterMark: 16 * 1024,
      write(chunk: Buffer, _enc, cb) {
        calls++;
        opts.onWrite?.(chunk);
        if (opts.failAfter !== undefined && calls > opts.failAfter) return cb(new Error('client went away'));
        got.push(Buffer.from(chunk)); // copy: the source reuses its buffers once we acknowledge
        let ticks = opts.delayTicks ?? 0;
        const ack = () => (ticks-- > 0 ? setImmediate(ack) : cb());
        ack();
      },
    });
    dest.on('error', () => {}); // the failure is asserted through writeTo's rejection
    return { dest, body: () => Buffer.concat(got) };
  }

  it('reads a range as a stream, chunk by chunk', async () => {
    const chunks: Buffer[] = [];
    for await (const c of await stream(10, data.length - 2)) chunks.push(c as Buffer);
    assert.deepEqual(Buffer.concat(chunks), data.subarray(10, data.length - 1));
    assert.equal(chunks[0]!.length, FILE_READ_CHUNK);
  });

  it('an empty range is an empty stream', async () => {
    const chunks: Buffer[] = [];
    for await (const c of await stream(0, -1)) chunks.push(c as Buffer);
    assert.equal(chunks.length, 0);
  });

  it('writeTo: the exact bytes, with reused buffers only after each write is flushed, and the file closed', async () => {
    const s = await stream(5, data.length - 1);
    const { dest, body } = sink({ delayTicks: 3 });
    let counted = 0;
    await s.writeTo(dest, (n) => (counted += n));
    assert.deepEqual(body(), data.subarray(5));
    assert.equal(counted, data.length - 5);
    assert.equal(s.destroyed, true, 'the stream (and its file handle) is closed');
  });

  it('a signal aborted during writeTo stops it: AbortError (the reason as its cause), the destination destroyed, the file closed', async () => {
    const ac = new AbortController();
    const s = new FileRangeStream({ handle: await open(path, 'r'), start: 0, end: data.length - 1, signal: ac.signal });
    const errors: Error[] = [];
    s.on('error', (err) => errors.push(err));
    let writes = 0;
    const { dest } = sink({ delayTicks: 1_000_000, onWrite: () => ++writes === 1 && ac.abort(new Error('client left')) });
    const closed = new Promise((resolve) => s.once('close', resolve));
    await assert.rejects(s.writeTo(dest));
    await closed;
    assert.equal(s.destroyed, true);
    assert.equal(dest.destroyed, true);
    assert.equal(errors[0]?.name, 'AbortError');
    assert.equal(((errors[0] as Error).cause as Error).message, 'client left');
    assert.equal(getEventListeners(ac.signal, 'abort').length, 0);
  });

  it("an abort while writeTo writes, with nobody listening for 'error' (a blob response whose client left), is no uncaught exception", async () => {
    const ac = new AbortController();
    const s = new FileRangeStream({ handle: await open(path, 'r'), start: 0, end: data.length - 1, signal: ac.signal });
    const { dest } = sink({ delayTicks: 1_000_000, onWrite: () => ac.abort() });
    const closed = new Promise((resolve) => s.once('close', resolve));
    await assert.rejects(s.writeTo(dest));
    await closed;
    // An 'error' without a listener would have thrown on the next tick: give it that tick.
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(s.destroyed, true);
  });

  it("the stream's abort listener goes with it (written out, read to the end, destroyed), and an aborted signal destroys it at once", async () => {
    const ac = new AbortController();
    const written = new FileRangeStream({ handle: await open(path, 'r'), start: 0, end: 100, signal: ac.signal });
    assert.equal(getEventListeners(ac.signal, 'abort').length, 1);
    await written.writeTo(sink().dest);
    const read = new FileRangeStream({ handle: await open(path, 'r'), start: 0, end: 100, signal: ac.signal });
    for await (const _ of read);
    const dropped = new FileRangeStream({ handle: await open(path, 'r'), start: 0, end: 100, signal: ac.signal });
    dropped.destroy();
    await new Promise((resolve) => dropped.once('close', resolve));
    assert.equal(getEventListeners(ac.signal, 'abort').length, 0, 'no listener left behind on a long-lived signal');

    const late = new FileRangeStream({ handle: await open(path, 'r'), start: 0, end: 100, signal: AbortSignal.abort() });
    const [err] = (await new Promise((resolve) => late.once('error', (e) => resolve([e])))) as Error[];
    assert.equal(err!.name, 'AbortError');
    assert.equal(late.destroyed, true);
  });

  it('writeTo rejects when a write fails or the destination closes, and closes the file', async () => {
    const failing = await stream(0, data.length - 1);
    await assert.rejects(failing.writeTo(sink({ failAfter: 1 }).dest), /client went away|closed/);
    assert.equal(failing.destroyed, true);

    const closing = await stream(0, data.length - 1);
    const { dest } = sink({ delayTicks: 1_000_000 });
    const writing = closing.writeTo(dest);
    setImmediate(() => dest.destroy());
    await assert.rejects(writing, /closed|destroyed/);
    assert.equal(closing.destroyed, true);
  });

  it('is read one way only', async () => {
    const s = await stream(0, 10);
    s.read(0);
    await new Promise((r) => s.once('readable', r));
    await assert.rejects(s.writeTo(sink().dest), /already being read/);
    s.destroy();
  });

  describe('writeTo with a shared buffer pool (issue #11)', () => {
    const pooled = (buffers: number) => new BufferPool({ bufferSize: FILE_READ_CHUNK, maxBytes: buffers * FILE_READ_CHUNK });

    it('reads ahead with two pooled buffers and returns them, whether it ends, fails or its destination closes', async () => {
      const pool = pooled(8);
      let most = 0;
      const { dest, body } = sink({ delayTicks: 2, onWrite: () => (most = Math.max(most, pool.stats().inUseBytes)) });
      await (await stream(0, data.length - 1, pool)).writeTo(dest);
      assert.deepEqual(body(), data);
      assert.equal(most, 2 * FILE_READ_CHUNK);
      assert.equal(pool.stats().inUseBytes, 0);

      await assert.rejects((await stream(0, data.length - 1, pool)).writeTo(sink({ failAfter: 1 }).dest));
      assert.equal(pool.stats().inUseBytes, 0);

      const stalled = sink({ delayTicks: 1_000_000 }).dest;
      const writing = (await stream(0, data.length - 1, pool)).writeTo(stalled);
      setImmediate(() => stalled.destroy());
      await assert.rejects(writing, /closed|destroyed/);
      assert.equal(pool.stats().inUseBytes, 0, 'a destination that closed mid-write gives the buffers back');
      assert.equal(pool.stats().fallbacks, 0);
    });

    it('with the pool all in use: the exact bytes through one small buffer of its own, and pooled ones again once they are returned', async () => {
      const pool = pooled(1);
      const held = pool.tryAcquire()!;
      const sizes: number[] = [];
      let writes = 0;
      const { dest, body } = sink({
        onWrite: (chunk) => {
          sizes.push(chunk.length);
          if (++writes === 3) pool.release(held);
        },
      });
      await (await stream(0, data.length - 1, pool)).writeTo(dest);
      assert.deepEqual(body(), data);
      assert.deepEqual(sizes.slice(0, 3), [FALLBACK_READ_CHUNK, FALLBACK_READ_CHUNK, FALLBACK_READ_CHUNK]);
      assert.equal(sizes[3], FILE_READ_CHUNK, 'the pooled buffer is taken as soon as it is free');
      assert.equal(pool.stats().fallbacks, 1);
      assert.equal(pool.stats().inUseBytes, 0);
    });

    it('many responses at once never hold more than the pool, and each gets its exact bytes', async () => {
      const pool = pooled(4);
      let most = 0;
      const sinks = Array.from({ length: 6 }, () => sink({ delayTicks: 3, onWrite: () => (most = Math.max(most, pool.stats().inUseBytes)) }));
      await Promise.all(sinks.map(async (s, i) => (await stream(i, data.length - 1, pool)).writeTo(s.dest)));
      sinks.forEach((s, i) => assert.deepEqual(s.body(), data.subarray(i)));
      assert.equal(most, 4 * FILE_READ_CHUNK, 'the whole pool was used, never more');
      assert.ok(pool.stats().fallbacks >= 2);
      assert.equal(pool.stats().inUseBytes, 0);
    });
  });
});
