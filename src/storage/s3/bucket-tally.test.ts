import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BucketTally, type ListedPage } from './bucket-tally.js';

/** A listing whose pages the test hands out one at a time (`next`), then ends (`end`). */
function listing() {
  const queue: Array<(p: IteratorResult<ListedPage>) => void> = [];
  const ready: IteratorResult<ListedPage>[] = [];
  let asked!: () => void;
  let wanted = new Promise<void>((r) => (asked = r));
  const iterable: AsyncIterable<ListedPage> = {
    [Symbol.asyncIterator]: () => ({
      next: () => {
        asked();
        const r = ready.shift();
        return r ? Promise.resolve(r) : new Promise((res) => queue.push(res));
      },
    }),
  };
  const give = (r: IteratorResult<ListedPage>) => {
    const waiting = queue.shift();
    if (waiting) waiting(r);
    else ready.push(r);
  };
  return {
    pages: () => iterable,
    /** Resolves once the tally asked for the next page (the previous one is counted). */
    asked: async () => {
      await wanted;
      wanted = new Promise<void>((r) => (asked = r));
    },
    next: (entries: Array<[string, number]>) => give({ done: false, value: { entries: entries.map(([key, size]) => ({ key, size })), lastKey: entries.at(-1)?.[0] } }),
    end: () => give({ done: true, value: undefined }),
  };
}

/** A mutation the test ends when it wants (`finish`), reporting `before` → `after`. */
function mutation(tally: BucketTally, key: string, before: number | undefined, after: number | undefined) {
  let finish!: () => void;
  const gate = new Promise<void>((r) => (finish = r));
  let started!: () => void;
  const running = new Promise<void>((r) => (started = r));
  const done = tally.track(
    key,
    async () => {
      started();
      await gate;
    },
    () => ({ before, after }),
  );
  return { finish, running, done };
}

const commit = (tally: BucketTally, key: string, size: number, existed = false) =>
  tally.track(key, async () => !existed, (created) => ({ before: created ? undefined : size, after: size }));
const remove = (tally: BucketTally, key: string, had: number | undefined) => tally.track(key, async () => had, (h) => ({ before: h, after: undefined }));

describe('BucketTally: a listing kept current by this replica\'s own mutations', () => {
  it('unknown until the first listing ends; then commits and deletes move it, one that found the object there changes nothing', async () => {
    const tally = new BucketTally();
    assert.equal(tally.usage(), undefined);
    await commit(tally, 'b/01', 10);
    assert.equal(tally.usage(), undefined, 'not counted yet: still unknown');
    const l = listing();
    const counted = tally.recount(l.pages);
    l.next([['b/01', 10], ['b/02', 20]]);
    l.end();
    assert.deepEqual(await counted, { bytes: 30, objects: 2 });
    await commit(tally, 'b/03', 5);
    await commit(tally, 'b/03', 5, true);
    await commit(tally, 'b/02', 20, true);
    assert.deepEqual(tally.usage(), { bytes: 35, objects: 3 });
    await remove(tally, 'b/01', 10);
    await remove(tally, 'b/01', undefined);
    assert.deepEqual(tally.usage(), { bytes: 25, objects: 2 });
  });

  it('mutations during a listing count exactly once: before the listing reaches the key, after it passed it, and across the page being fetched', async () => {
    const tally = new BucketTally();
    const l = listing();
    const counted = tally.recount(l.pages);
    await l.asked();
    // b/05 committed before the listing reaches it: the listing shows it, no second count.
    await commit(tally, 'b/05', 7);
    // b/09 deleted while the page covering it is fetched; whichever state the page shows, it ends gone.
    const del = mutation(tally, 'b/09', 9, undefined);
    await del.running;
    l.next([['b/01', 1], ['b/05', 7], ['b/09', 9]]);
    await l.asked();
    del.finish();
    await del.done;
    // b/02 committed after the listing passed it: the listing didn't see it.
    await commit(tally, 'b/02', 2);
    // b/20 is in flight when the listing ends: it corrects the usage when it ends.
    const late = mutation(tally, 'b/20', undefined, 20);
    await late.running;
    l.next([['b/15', 15]]);
    l.end();
    assert.deepEqual(await counted, { bytes: 1 + 7 + 2 + 15, objects: 4 });
    late.finish();
    await late.done;
    assert.deepEqual(tally.usage(), { bytes: 45, objects: 5 });
  });

  it("a commit racing another replica's (it found nothing, then overwrote the other's object) whose key the listing shows counts once", async () => {
    const tally = new BucketTally();
    const l = listing();
    const counted = tally.recount(l.pages);
    await l.asked();
    const fill = mutation(tally, 'b/07', undefined, 70); // HEAD missed the other replica's object
    await fill.running;
    l.next([['b/07', 70]]); // the other replica's object, listed
    l.end();
    fill.finish();
    await fill.done;
    assert.deepEqual(await counted, { bytes: 70, objects: 1 });
    assert.deepEqual(tally.usage(), { bytes: 70, objects: 1 });
  });

  it("a recount replaces what this replica believed by what the bucket holds (other replicas' commits and deletes); a failed one keeps the usage", async () => {
    const tally = new BucketTally();
    const first = listing();
    const one = tally.recount(first.pages);
    first.next([['b/01', 1]]);
    first.end();
    await one;
    const second = listing();
    const two = tally.recount(second.pages);
    second.next([['b/02', 2], ['b/03', 3]]);
    second.end();
    assert.deepEqual(await two, { bytes: 5, objects: 2 });
    const failing = tally.recount(() => ({
      [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(new Error('ListObjectsV2 failed')) }),
    }));
    await assert.rejects(failing, /ListObjectsV2 failed/);
    assert.deepEqual(tally.usage(), { bytes: 5, objects: 2 });
    assert.equal(tally.counting, false);
  });

  it('mutations of one key by this replica run one at a time', async () => {
    const tally = new BucketTally();
    const order: string[] = [];
    const a = mutation(tally, 'b/01', undefined, 1);
    const b = tally.track(
      'b/01',
      async () => void order.push('second'),
      () => ({ before: 1, after: 1 }),
    );
    await a.running;
    order.push('first');
    a.finish();
    await Promise.all([a.done, b]);
    assert.deepEqual(order, ['first', 'second']);
  });
});
