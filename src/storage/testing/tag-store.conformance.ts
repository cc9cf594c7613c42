import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { TagEntry, TagStore } from '../tag-store.js';
import { fixtureTest, key, rejectsWithCode, tag, tagEntry as entry, type StoreFixture } from './helpers.js';

/** The behaviour every `TagStore` must have. */
export function describeTagStore(name: string, makeStore: () => Promise<StoreFixture<TagStore>>): void {
  const test = fixtureTest(makeStore);
  const alpine = key('docker.io', 'library/alpine');
  describe(`TagStore conformance: ${name}`, () => {
    test('unknown tags and repositories read as empty', async (store) => {
      assert.equal(await store.getTag(alpine, tag('latest')), undefined);
      assert.deepEqual(await store.listTags(alpine), []);
    });

    test('set, get, overwrite; only the TagEntry fields are kept; a malformed entry is a TypeError', async (store) => {
      await store.setTag(alpine, tag('3.20'), entry('a'));
      assert.deepEqual(await store.getTag(alpine, tag('3.20')), entry('a'));
      const withExtra = { ...entry('b', 42), extra: 'dropped' } as TagEntry;
      await store.setTag(alpine, tag('3.20'), withExtra);
      assert.deepEqual(await store.getTag(alpine, tag('3.20')), entry('b', 42));
      await assert.rejects(store.setTag(alpine, tag('3.20'), { ...entry('c'), size: -1 }), TypeError);
      assert.deepEqual(await store.getTag(alpine, tag('3.20')), entry('b', 42));
    });

    test('listTags is sorted and per repository and upstream', async (store) => {
      const tags = ['latest', '1.10', '1.0', 'Alpha', '_private', '3.20-rc.1'];
      for (const t of tags) await store.setTag(alpine, tag(t), entry(t));
      await store.setTag(key('docker.io', 'library/busybox'), tag('other'), entry('o'));
      await store.setTag(key('ghcr.io', 'library/alpine'), tag('ghcr-only'), entry('g'));
      assert.deepEqual(await store.listTags(alpine), [...tags].sort());
      assert.equal(await store.getTag(key('ghcr.io', 'library/alpine'), tag('latest')), undefined);
    });

    test('invalid upstream, repository and tag names are refused', async (store) => {
      for (const upstream of ['../etc', 'Docker.io', 'docker.io/x', '', '.', 'host:0', 'host:65536', '[::1]:5000']) {
        await rejectsWithCode(store.setTag(key(upstream, 'library/alpine'), tag('latest'), entry('a')), 'NAME_INVALID');
      }
      for (const repo of ['../x', 'library/../../x', 'Library/alpine', '/abs', 'a//b', '_tags']) {
        await rejectsWithCode(store.setTag(key('docker.io', repo), tag('latest'), entry('a')), 'NAME_INVALID');
      }
      for (const t of ['..', '.hidden', 'a/b', '-x', '']) {
        await rejectsWithCode(store.setTag(alpine, tag(t), entry('a')), 'TAG_INVALID');
        await rejectsWithCode(store.getTag(alpine, tag(t)), 'TAG_INVALID');
      }
      assert.deepEqual(await store.listTags(alpine), []);
    });
  });
}
