import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { skipBytes } from './blob-response.js';

const chunks = () => Readable.from([Buffer.from('0123'), Buffer.from('4567'), Buffer.from('89ab')]);

test('skipBytes drops exactly n bytes across chunk boundaries', async () => {
  for (const [n, want] of [[0, '0123456789ab'], [3, '3456789ab'], [4, '456789ab'], [9, '9ab'], [12, '']] as const) {
    assert.equal((await buffer(skipBytes(chunks(), n))).toString(), want, `n=${n}`);
  }
});

test('skipBytes passes source errors on', async () => {
  const src = new Readable({ read() {} });
  const out = skipBytes(src, 1);
  src.push(Buffer.from('abc'));
  src.destroy(new Error('socket reset'));
  await assert.rejects(buffer(out), /socket reset/);
});
