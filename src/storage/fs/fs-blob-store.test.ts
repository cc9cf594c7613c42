import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { sha256Digest } from '../../domain/digest.js';
import { describeBlobStore } from '../testing/blob-store.conformance.js';
import { FsBlobStore } from './fs-blob-store.js';

async function tempRoot(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'hubcache-blobs-'));
}

async function listTree(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath ?? e.path, e.name));
}

describeBlobStore('FsBlobStore', async () => {
  const root = await tempRoot();
  const store = new FsBlobStore({ root });
  await store.init();
  return {
    store,
    cleanup: () => rm(root, { recursive: true, force: true }),
    leftovers: async () => (await readdir(join(root, 'tmp'))).length,
    countUsage: () => store.countUsage(),
  };
});

describe('FsBlobStore on disk', () => {
  it('init() creates the directories and removes leftover temp files, returning how many', async () => {
    const root = await tempRoot();
    try {
      const store = new FsBlobStore({ root });
      assert.equal(await store.init(), 0);
      await writeFile(join(root, 'tmp', 'blob-leftover-1'), 'x');
      await writeFile(join(root, 'tmp', 'manifest-leftover-2'), 'y');
      await mkdir(join(root, 'tmp', 'odd-dir'));
      assert.equal(await new FsBlobStore({ root }).init(), 3);
      assert.deepEqual(await readdir(join(root, 'tmp')), []);
      assert.deepEqual(await readdir(join(root, 'blobs', 'sha256')), []);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('a writer that never committed (crash) leaves nothing visible, and init() on restart cleans tmp/', async () => {
    const root = await tempRoot();
    try {
      const before = new FsBlobStore({ root });
      await before.init();
      const committed = randomBytes(1000);
      const w1 = await before.create();
      await w1.write(committed);
      await w1.commit(sha256Digest(committed));
      const lost = randomBytes(200_000);
      const crashed = await before.create();
      await crashed.write(lost.subarray(0, 100_000));
      // The process dies here: no commit, no abort. A new process opens the same root.
      const after = new FsBlobStore({ root });
      assert.equal(await after.stat(sha256Digest(lost)), undefined);
      assert.equal(await after.init(), 1);
      assert.deepEqual(await readdir(join(root, 'tmp')), []);
      const listed = [];
      for await (const info of after.list()) listed.push({ digest: info.digest, size: info.size });
      assert.deepEqual(listed, [{ digest: sha256Digest(committed), size: committed.length }]);
      assert.deepEqual(await listTree(join(root, 'blobs')), [after.layout.blobPath(sha256Digest(committed))]);
      await crashed.abort();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('committed blobs live at blobs/sha256/<ab>/<hex> and nothing partial ever appears under blobs/', async () => {
    const root = await tempRoot();
    try {
      const store = new FsBlobStore({ root });
      await store.init();
      const data = randomBytes(300_000);
      const digest = sha256Digest(data);
      const writer = await store.create();
      for (let p = 0; p < data.length; p += 50_000) {
        await writer.write(data.subarray(p, p + 50_000));
        assert.deepEqual(await listTree(join(root, 'blobs')), []);
      }
      await writer.commit(digest, data.length);
      const hex = digest.slice('sha256:'.length);
      assert.deepEqual(await listTree(join(root, 'blobs')), [join(root, 'blobs', 'sha256', hex.slice(0, 2), hex)]);
      assert.deepEqual(await readdir(join(root, 'tmp')), []);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('create() works without init() (tmp/ is created on demand)', async () => {
    const root = await tempRoot();
    try {
      const store = new FsBlobStore({ root });
      const writer = await store.create();
      await writer.write(Buffer.from('hello'));
      await writer.commit(sha256Digest('hello'));
      assert.deepEqual(await store.stat(sha256Digest('hello')), { digest: sha256Digest('hello'), size: 5 });
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('FsBlobStore usage (issue #12: no full listing at start)', () => {
  it('init() neither lists nor counts the blobs; countUsage() walks them once, without list()', async () => {
    const root = await tempRoot();
    try {
      const before = new FsBlobStore({ root });
      const sizes = [0, 1, 1000, 70_000];
      for (const n of sizes) await commitBlob(before, randomBytes(n));
      const store = new FsBlobStore({ root });
      store.list = () => {
        throw new Error('list() called');
      };
      await store.init();
      assert.equal(store.usage(), undefined, 'unknown until counted');
      assert.deepEqual(await store.countUsage(), { bytes: 71_001, objects: 4 });
      assert.deepEqual(store.usage(), { bytes: 71_001, objects: 4 });
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('commits and deletes running during the count end up counted exactly once', async () => {
    const root = await tempRoot();
    try {
      const store = new FsBlobStore({ root });
      await store.init();
      const old = [];
      for (let i = 0; i < 300; i++) old.push(await commitBlob(store, randomBytes(100 + i)));
      // 300 new blobs committed and 150 old ones deleted while the walk runs.
      const counting = store.countUsage();
      await Promise.all([
        ...Array.from({ length: 300 }, (_, i) => commitBlob(store, randomBytes(5000 + i))),
        ...old.slice(0, 150).map((d) => store.delete(d)),
      ]);
      await counting;
      let bytes = 0;
      let objects = 0;
      for await (const info of new FsBlobStore({ root }).list()) {
        bytes += info.size;
        objects++;
      }
      assert.equal(objects, 450);
      assert.deepEqual(store.usage(), { bytes, objects });
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('a blob replaced because it was damaged (another size) counts once, with its right size', async () => {
    const root = await tempRoot();
    try {
      const data = randomBytes(5000);
      const digest = await commitBlob(new FsBlobStore({ root }), data);
      await writeFile(new FsBlobStore({ root }).layout.blobPath(digest), data.subarray(0, 10));
      const store = new FsBlobStore({ root });
      await store.init();
      assert.deepEqual(await store.countUsage(), { bytes: 10, objects: 1 });
      await commitBlob(store, data);
      assert.deepEqual(store.usage(), { bytes: 5000, objects: 1 });
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

async function commitBlob(store: FsBlobStore, data: Buffer) {
  const writer = await store.create();
  await writer.write(data);
  return (await writer.commit(sha256Digest(data), data.length)).digest;
}

describe('FsBlobStore sizes files (issue #13: du/ls learn sizes without a stat per blob)', () => {
  const commit = async (store: FsBlobStore, text: string) => {
    const w = await store.create();
    await w.write(Buffer.from(text));
    return w.commit(sha256Digest(text));
  };

  it('a commit records its size; listSizes lists what readdir finds: deleted blobs drop out, blobs without a line are stat\'ed', async () => {
    const root = await tempRoot();
    try {
      const store = new FsBlobStore({ root });
      await store.init();
      const a = await commit(store, 'aaaa');
      const b = await commit(store, 'bbbbbbbb');
      const hexA = a.digest.slice(7);
      const { readFile } = await import('node:fs/promises');
      assert.match(await readFile(store.layout.blobSizesPath(hexA.slice(0, 2)), 'utf8'), new RegExp(`^${hexA} 4$`, 'm'));
      await store.delete(b.digest);
      // A blob put there behind the store's back (no line): stat'ed.
      const hand = sha256Digest('by hand!!');
      await mkdir(join(store.layout.blobsDir, hand.slice(7, 9)), { recursive: true });
      await writeFile(store.layout.blobPath(hand), 'by hand!!');
      const listed = [];
      for await (const batch of new FsBlobStore({ root, blockingReads: true }).listSizes()) listed.push(...batch);
      assert.deepEqual(listed, [{ digest: a.digest, size: 4 }, { digest: hand, size: 9 }].sort((x, y) => (x.digest < y.digest ? -1 : 1)));
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it("the sizes file is what listSizes reads (no stat of a blob it names), and the owner's count rewrites stale and missing lines", async () => {
    const root = await tempRoot();
    try {
      const store = new FsBlobStore({ root });
      await store.init();
      const a = await commit(store, 'sized');
      const prefix = a.digest.slice(7, 9);
      const { readFile } = await import('node:fs/promises');
      // The recorded size wins over the file's (a blob's size never changes: its name is its hash).
      await writeFile(store.layout.blobSizesPath(prefix), `${a.digest.slice(7)} 12345\n${'f'.repeat(64)} 7\n${a.digest.slice(7, 40)}`);
      const listed = [];
      for await (const batch of store.listSizes()) listed.push(...batch);
      assert.deepEqual(listed, [{ digest: a.digest, size: 12345 }], 'a torn line and a line without a blob are ignored');
      // Start over: the count stats what lacks a line and rewrites the file with the live blobs only.
      await writeFile(store.layout.blobSizesPath(prefix), `${'f'.repeat(64)} 7\n`);
      const fresh = new FsBlobStore({ root });
      assert.deepEqual(await fresh.countUsage(), { bytes: 5, objects: 1 });
      assert.equal(await readFile(store.layout.blobSizesPath(prefix), 'utf8'), `${a.digest.slice(7)} 5\n`);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
