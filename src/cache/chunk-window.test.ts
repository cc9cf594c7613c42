import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChunkWindow } from './chunk-window.js';

const b = (s: string) => Buffer.from(s);

describe('ChunkWindow', () => {
  it('slices within one chunk, up to a limit, and says when a position is not held', () => {
    const w = new ChunkWindow(100);
    const abc = b('abc');
    w.append(abc);
    w.append(b('defg'));
    const view = w.slice(1, 10)!;
    assert.equal(view.toString(), 'bc', 'a view ends at its chunk');
    assert.equal(view.buffer, abc.buffer, 'a view, not a copy');
    assert.equal(w.slice(1, 2)?.toString(), 'b');
    assert.equal(w.slice(3, 10)?.toString(), 'defg');
    assert.equal(w.slice(5, 6)?.toString(), 'f');
    assert.equal(w.slice(7, 10), undefined, 'not received yet');
    assert.equal(w.slice(2, 2), undefined, 'empty range');
    assert.equal(w.end, 7);
  });

  it('evicts only written chunks, and only while over its size', () => {
    const w = new ChunkWindow(4);
    w.append(b('abc'));
    w.append(b('def'));
    w.evict(0);
    assert.equal(w.start, 0, 'nothing written: nothing may go');
    w.evict(3);
    assert.equal(w.start, 3, 'the first chunk is on disk and the window is over its size');
    assert.equal(w.slice(1, 6), undefined, 'evicted bytes come from the file');
    assert.equal(w.slice(4, 6)?.toString(), 'ef');
    w.evict(6);
    assert.equal(w.start, 3, 'within its size: kept');
    w.clear(6);
    assert.equal(w.slice(4, 6), undefined);
    assert.equal(w.end, 6);
  });
});
