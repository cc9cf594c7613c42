import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { FILE_READ_CHUNK, FileRangeStream } from './file-range-stream.js';

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

  const stream = async (start: number, end: number) => new FileRangeStream({ handle: await open(path, 'r'), start, end });

  /** A destination that keeps what it gets and acknowledges each write after `delayTicks` turns. */
  function sink(opts: { delayTicks?: number; failAfter?: number } = {}) {
    const got: Buffer[] = [];
    let calls = 0;
    const dest = new Writable({
      highWaterMark: 16 * 1024,
      write(chunk: Buffer, _enc, cb) {
        calls++;
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
});
