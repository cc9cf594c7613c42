import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { sha256Digest } from '../../domain/digest.js';
import { silentLogger } from '../../lib/logger.js';
import type { RepoKey, RepoName, Tag } from '../../domain/reference.js';
import type { TagEntry } from '../tag-store.js';
import { FsMetadataStore } from './fs-manifest-store.js';
import { FsStorage } from './fs-storage.js';
import { parseTagIndex, readTrustedTagIndex, tagsDirMtime, TAG_INDEX_HEADER } from './tag-index.js';

const key: RepoKey = { upstream: 'docker.io', repo: 'library/alpine' as RepoName };
const entry = (n: number): TagEntry => ({ digest: sha256Digest(`m${n}`), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 100 + n, validatedAt: 1_000 + n });

async function fixture() {
  const root = await mkdtemp(join(tmpdir(), 'hubcache-tagindex-'));
  const stop = new AbortController();
  /** A store whose owner maintains the indexes (as `FsStorage.init` does), with every repository checked. */
  const owner = async () => {
    const m = new FsMetadataStore({ root });
    await m.init();
    await m.maintainTagIndexes(stop.signal);
    await m.tagIndexes.idle();
    return m;
  };
  const files = (m: FsMetadataStore) => ({ indexPath: m.layout.tagIndexPath(key), tagsDir: m.layout.tagsDir(key) });
  return {
    root,
    owner,
    files,
    /** What a listing sees, as the CLI reads it (blocking reads). */
    listed: async () => Object.fromEntries(await new FsMetadataStore({ root, blockingReads: true }).listTagEntries(key)),
    trusted: async (m: FsMetadataStore) => (await readTrustedTagIndex(files(m), false)) !== undefined,
    cleanup: async () => {
      stop.abort();
      await rm(root, { recursive: true, force: true });
    },
  };
}

describe('tag index (issue #13: ls/du read one file per repository)', () => {
  it('setTag and deleteTag keep a trusted index that lists exactly the tag files', async () => {
    const fx = await fixture();
    try {
      const m = await fx.owner();
      await m.setTag(key, 'a' as Tag, entry(1));
      // The first write of a repository without an index: the owner builds it in the background.
      await m.tagIndexes.idle();
      assert.equal(await fx.trusted(m), true);
      await m.setTag(key, 'b' as Tag, entry(2));
      await m.setTag(key, 'a' as Tag, entry(3));
      await m.setTag(key, 'c' as Tag, entry(4));
      await m.deleteTag(key, 'b' as Tag);
      assert.equal(await fx.trusted(m), true, 'every change is recorded: the index stays trusted');
      assert.deepEqual(await fx.listed(), { a: entry(3), c: entry(4) });
      assert.deepEqual(await m.listTags(key), ['a', 'c']);
      const parsed = parseTagIndex(await readFile(fx.files(m).indexPath, 'utf8'));
      assert.deepEqual([...parsed.entries.keys()].sort(), ['a', 'c']);
      assert.equal(parsed.pending.size, 0);
    } finally {
      await fx.cleanup();
    }
  });

  it('a trusted index is what a listing reads: no tag file is opened', async () => {
    const fx = await fixture();
    try {
      const m = await fx.owner();
      for (let i = 0; i < 5; i++) await m.setTag(key, `t${i}` as Tag, entry(i));
      await m.tagIndexes.idle();
      assert.equal(await fx.trusted(m), true);
      // Make the tag files unreadable as entries without touching the directory (its mtime stays):
      // a listing that read them would lose the tags.
      for (let i = 0; i < 5; i++) await writeFile(m.layout.tagPath(key, `t${i}` as Tag), 'not json');
      assert.equal(await fx.trusted(m), true);
      assert.deepEqual(Object.keys(await fx.listed()), ['t0', 't1', 't2', 't3', 't4']);
    } finally {
      await fx.cleanup();
    }
  });

  it('a crash after the tag write and before its index line: the tag is listed (index untrusted), and the next owner rebuilds it', async () => {
    const fx = await fixture();
    try {
      const m = await fx.owner();
      await m.setTag(key, 'old' as Tag, entry(1));
      await m.tagIndexes.idle();
      const { indexPath } = fx.files(m);
      // What a change does up to the crash: `? tag` (durable), then the tag file's atomic write. No `=`/`@` line.
      await appendFile(indexPath, '? new\n');
      await writeFile(join(m.layout.tmpDir, 'x'), JSON.stringify(entry(2)));
      const { rename } = await import('node:fs/promises');
      await rename(join(m.layout.tmpDir, 'x'), m.layout.tagPath(key, 'new' as Tag));
      assert.equal(await fx.trusted(m), false, "the last '@' no longer matches _tags/");
      assert.deepEqual(await fx.listed(), { new: entry(2), old: entry(1) });
      // The next start's owner finds it untrusted and rebuilds it from the tag files.
      const next = await fx.owner();
      assert.equal(await fx.trusted(next), true);
      assert.deepEqual(await fx.listed(), { new: entry(2), old: entry(1) });
    } finally {
      await fx.cleanup();
    }
  });

  it("a change whose _tags/ mtime equals the recorded one (coarse timestamps) is still listed: its '?' line makes the reader read its file", async () => {
    const fx = await fixture();
    try {
      const m = await fx.owner();
      await m.setTag(key, 'a' as Tag, entry(1));
      await m.tagIndexes.idle();
      const { indexPath, tagsDir } = fx.files(m);
      await appendFile(indexPath, '? b\n');
      await writeFile(m.layout.tagPath(key, 'b' as Tag), JSON.stringify(entry(2)));
      // As if the directory's mtime had not moved: the index records the current one.
      await appendFile(indexPath, `@ ${await tagsDirMtime(tagsDir)}\n`);
      assert.equal(await fx.trusted(m), true);
      assert.deepEqual(await fx.listed(), { a: entry(1), b: entry(2) });
    } finally {
      await fx.cleanup();
    }
  });

  it('a tag written behind its back (an older hubcache, by hand) or a missing or headless index: the tag files are read', async () => {
    const fx = await fixture();
    try {
      const m = await fx.owner();
      await m.setTag(key, 'a' as Tag, entry(1));
      await m.tagIndexes.idle();
      await writeFile(m.layout.tagPath(key, 'hand' as Tag), JSON.stringify(entry(9)));
      assert.deepEqual(await fx.listed(), { a: entry(1), hand: entry(9) });
      const { indexPath } = fx.files(m);
      await writeFile(indexPath, `= ghost ${JSON.stringify(entry(5))}\n@ ${await tagsDirMtime(fx.files(m).tagsDir)}\n`);
      assert.deepEqual(await fx.listed(), { a: entry(1), hand: entry(9) }, 'no header: never trusted');
      await rm(indexPath);
      assert.deepEqual(await fx.listed(), { a: entry(1), hand: entry(9) });
    } finally {
      await fx.cleanup();
    }
  });

  it('a failed tag write leaves the tag pending: the listing reads its file, the rest stays trusted', async () => {
    const fx = await fixture();
    try {
      const m = await fx.owner();
      await m.setTag(key, 'a' as Tag, entry(1));
      await m.tagIndexes.idle();
      await assert.rejects(
        m.tagIndexes.change(fx.files(m), 'a', `= a ${JSON.stringify(entry(2))}`, async () => {
          throw Object.assign(new Error('no space'), { code: 'ENOSPC' });
        }),
        /no space/,
      );
      assert.equal(await fx.trusted(m), true);
      assert.ok(parseTagIndex(await readFile(fx.files(m).indexPath, 'utf8')).pending.has('a'));
      assert.deepEqual(await fx.listed(), { a: entry(1) }, 'the file (unchanged) wins');
    } finally {
      await fx.cleanup();
    }
  });

  it('a torn last line is ignored, and a long index is compacted to one line per tag', async () => {
    assert.deepEqual(parseTagIndex(`${TAG_INDEX_HEADER}\n= a ${JSON.stringify(entry(1))}\n@ 5\n= b {"dig`).at, '5');
    const fx = await fixture();
    try {
      const m = await fx.owner();
      await m.setTag(key, 'a' as Tag, entry(0));
      await m.tagIndexes.idle();
      for (let i = 1; i <= 600; i++) await m.setTag(key, 'a' as Tag, entry(i));
      await m.tagIndexes.idle();
      const parsed = parseTagIndex(await readFile(fx.files(m).indexPath, 'utf8'));
      assert.ok(parsed.lines < 1200, `compacted: ${parsed.lines} lines`);
      assert.equal(await fx.trusted(m), true);
      assert.deepEqual(await fx.listed(), { a: entry(600) });
    } finally {
      await fx.cleanup();
    }
  });

  it("FsStorage's owner builds missing indexes after its start (a store written before them), and close waits for it", async () => {
    const fx = await fixture();
    try {
      const m = new FsMetadataStore({ root: fx.root });
      await m.init();
      const { mkdir } = await import('node:fs/promises');
      await mkdir(m.layout.tagsDir(key), { recursive: true });
      for (let i = 0; i < 3; i++) await writeFile(m.layout.tagPath(key, `v${i}` as Tag), JSON.stringify(entry(i)));
      await assert.rejects(stat(m.layout.tagIndexPath(key)), { code: 'ENOENT' });
      const storage = new FsStorage({ root: fx.root, lockStaleMs: 30_000, logger: silentLogger() });
      await storage.init();
      await storage.tagIndexesChecked();
      await storage.close();
      assert.equal(await fx.trusted(m), true);
      assert.deepEqual(Object.keys(await fx.listed()), ['v0', 'v1', 'v2']);
    } finally {
      await fx.cleanup();
    }
  });
});
