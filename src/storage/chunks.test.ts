import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dropBytes } from './chunks.js';

describe('dropBytes (what a short pwritev left to write)', () => {
  const b = (t: string) => Buffer.from(t);
  const text = (chunks: Uint8Array[]) => chunks.map((c) => Buffer.from(c).toString());
  it('drops whole chunks and the start of the next, as views', () => {
    const abc = b('abc');
    assert.deepEqual(text(dropBytes([abc, b('de'), b('fgh')], 0)), ['abc', 'de', 'fgh']);
    assert.deepEqual(text(dropBytes([abc, b('de'), b('fgh')], 3)), ['de', 'fgh']);
    assert.deepEqual(text(dropBytes([abc, b('de'), b('fgh')], 4)), ['e', 'fgh']);
    assert.deepEqual(text(dropBytes([abc, b('de'), b('fgh')], 8)), []);
    assert.equal(dropBytes([abc], 1)[0]!.buffer, abc.buffer, 'a view, not a copy');
  });
});
