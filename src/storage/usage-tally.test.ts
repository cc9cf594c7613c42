import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { StoreUsage } from './blob-store.js';
import { UsageTally } from './usage-tally.js';

/** A promise the test resolves by hand. */
function gate<T = void>() {
  let open!: (v: T) => void;
  const promise = new Promise<T>((r) => (open = r));
  return { promise, open };
}

const turn = () => new Promise<void>((r) => setImmediate(r));

/**
 * A store of three partitions whose contents the test holds in a map; counting a partition can be
 * held open by the test, so mutations land before, during and after it.
 */
function fixture() {
  const sizes = new Map<string, number[]>([
    ['a', [10]],
    ['b', [20, 5]],
    ['c', [40]],
  ]);
  const holds = new Map<string, ReturnType<typeof gate<void>>>();
  const started: string[] = [];
  const countPartition = async (p: string): Promise<StoreUsage> => {
    started.push(p);
    await holds.get(p)?.promise;
    const s = sizes.get(p) ?? [];
    return { bytes: s.reduce((x, y) => x + y, 0), objects: s.length };
  };
  const tally = new UsageTally(['a', 'b', 'c']);
  /** Adds a blob of `size` to partition `p` through the tally; `hold` keeps the mutation in flight. */
  const add = (p: string, size: number, hold?: Promise<void>) =>
    tally.track(
      p,
      async () => {
        await hold;
        (sizes.get(p) ?? sizes.set(p, []).get(p)!).push(size);
        return size;
      },
      (n) => ({ bytes: n, objects: 1 }),
    );
  return { tally, sizes, holds, started, countPartition, add };
}

describe('UsageTally (exact usage from a background walk while mutations go on)', () => {
  it('is unknown until counted; then counts and follows mutations', async () => {
    const f = fixture();
    await f.add('a', 1);
    assert.equal(f.tally.usage(), undefined, 'nothing known before a count');
    assert.deepEqual(await f.tally.count(f.countPartition), { bytes: 76, objects: 5 });
    await f.add('c', 100);
    assert.deepEqual(f.tally.usage(), { bytes: 176, objects: 6 });
  });

  it('during the walk: a mutation of a counted partition is applied at once, one of a partition still to count is left to the walk', async () => {
    const f = fixture();
    const holdB = gate();
    f.holds.set('b', holdB);
    const counting = f.tally.count(f.countPartition);
    while (!f.started.includes('b')) await turn();
    await f.add('a', 1000); // 'a' is counted: applied now
    await f.add('c', 3000); // 'c' is not: the walk sees it
    holdB.open();
    assert.deepEqual(await counting, { bytes: 75 + 1000 + 3000, objects: 6 });
    assert.deepEqual(f.tally.usage(), { bytes: 4075, objects: 6 });
  });

  it('a mutation waits while its partition is being counted, and lands after it (counted once)', async () => {
    const f = fixture();
    const holdB = gate();
    f.holds.set('b', holdB);
    const counting = f.tally.count(f.countPartition);
    while (!f.started.includes('b')) await turn();
    let landed = false;
    const adding = f.add('b', 7).then(() => (landed = true));
    await turn();
    assert.equal(landed, false, 'waits for the count of its partition');
    assert.deepEqual(f.sizes.get('b'), [20, 5], 'and has not touched it yet');
    holdB.open();
    await Promise.all([adding, counting]);
    assert.deepEqual(f.tally.usage(), { bytes: 82, objects: 5 });
  });

  it('a partition is not counted while a mutation in it is in flight; the walk counts its result', async () => {
    const f = fixture();
    const holdMutation = gate();
    const adding = f.add('b', 7, holdMutation.promise);
    const counting = f.tally.count(f.countPartition);
    while (!f.started.includes('a')) await turn();
    await turn();
    assert.deepEqual(f.started, ['a'], "'b' waits for the mutation in flight");
    holdMutation.open();
    await adding;
    assert.deepEqual(await counting, { bytes: 82, objects: 5 }, 'counted by the walk');
    assert.deepEqual(f.tally.usage(), { bytes: 82, objects: 5 }, 'and not applied a second time');
  });

  it('a partition the walk does not know is applied at once', async () => {
    const f = fixture();
    const holdA = gate();
    f.holds.set('a', holdA);
    const counting = f.tally.count(f.countPartition);
    await f.add('zz', 9);
    holdA.open();
    assert.deepEqual(await counting, { bytes: 84, objects: 5 });
  });

  it('an aborted or failed count leaves the usage unknown; count() is run once', async () => {
    const f = fixture();
    const ac = new AbortController();
    const holdA = gate();
    f.holds.set('a', holdA);
    const counting = f.tally.count(f.countPartition, ac.signal);
    assert.equal(f.tally.count(f.countPartition), counting, 'the same promise');
    ac.abort(new Error('stopping'));
    holdA.open();
    await assert.rejects(counting, /stopping/);
    assert.equal(f.tally.usage(), undefined);
    await f.add('a', 1); // tracked mutations still run
    assert.equal(f.tally.usage(), undefined);

    const failing = new UsageTally(['x']);
    await assert.rejects(failing.count(async () => Promise.reject(new Error('EIO'))), /EIO/);
    assert.equal(failing.usage(), undefined);
  });
});
