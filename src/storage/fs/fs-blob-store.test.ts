import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { sha256Digest } from '../../domain/digest.js';
import { describeBlobStore } from '../testing/blob-store.conformance.js';
import { dropBytes, FsBlobStore } from './fs-blob-store.js';

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
      await w1.release();
      const lost = randomBytes(200_000);
      const crashed = await before.create();
      await crashed.write(lost.subarray(0, 100_000));
      // The process dies here: no commit, no abort. A new process opens the same root.
      const after = new FsBlobStore({ root });
      assert.equal(await after.stat(sha256Digest(lost)), undefined);
      assert.equal(await after.init(), 1);
      assert.deepEqual(await readdir(join(root, 'tmp')), []);
      const listed = [];
      for await (const info of after.list()) listed.push(info);
      assert.deepEqual(listed, [{ digest: sha256Digest(committed), size: committed.length }]);
      assert.deepEqual(await listTree(join(root, 'blobs')), [after.layout.blobPath(sha256Digest(committed))]);
      await crashed.release();
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
      await writer.release();
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
      await writer.release();
      assert.deepEqual(await store.stat(sha256Digest('hello')), { digest: sha256Digest('hello'), size: 5 });
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

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
