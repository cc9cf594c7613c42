import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseTagLists } from './tag-list-worker.js';

const doc = (tags: unknown) => Buffer.from(JSON.stringify({ name: 'org/app', tags }));

describe('parseTagLists', () => {
  it('builds the same list in a worker thread as inline', async () => {
    const pages = [doc(['b', 'a', 'c', 'a', 'no/pe']), doc(['d'])];
    for (const inlineMaxBytes of [0, 1 << 20]) {
      const parsed = await parseTagLists(pages, { inlineMaxBytes });
      assert.ok('tags' in parsed);
      assert.deepEqual(parsed.tags.toArray(), ['a', 'b', 'c', 'd']);
      assert.equal(parsed.name, 'org/app');
      assert.equal(parsed.dropped, 1);
    }
  });

  it('reports documents that are not tag lists, from the worker too', async () => {
    assert.deepEqual(await parseTagLists([Buffer.from('<html>')], { inlineMaxBytes: 0 }), { error: 'tag list is not JSON' });
  });

  it('an abort stops the worker with the abort reason', async () => {
    const ac = new AbortController();
    const p = parseTagLists([doc(Array.from({ length: 200_000 }, (_, i) => `t${i}`))], { inlineMaxBytes: 0, signal: ac.signal });
    ac.abort(new Error('nobody waits'));
    await assert.rejects(p, /nobody waits/);
  });
});
