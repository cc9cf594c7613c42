import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { sha256Digest, type Digest } from '../../domain/digest.js';
import { MediaTypes } from '../../domain/media-types.js';
import { HOSTED_UPSTREAM, type RepoKey } from '../../domain/reference.js';
import type { ManifestStore, MetadataStore } from '../manifest-store.js';
import { fixtureTest, key, rejectsWithCode, tag, tagEntry as entry, type StoreFixture } from './helpers.js';

// Whitespace, CRLF and non-ASCII: any re-serialisation would change these bytes and the digest.
const BODY = Buffer.from('{\r\n  "schemaVersion": 2,\t"mediaType": "application/vnd.oci.image.index.v1+json", "n": "é☃" ,"manifests": [] }  \n');

/** The behaviour every `ManifestStore` must have. */
export function describeManifestStore(name: string, makeStore: () => Promise<StoreFixture<ManifestStore>>): void {
  const test = fixtureTest(makeStore);
  describe(`ManifestStore conformance: ${name}`, () => {
    test('get of a missing manifest is undefined; delete of one is not an error', async (store) => {
      assert.equal(await store.get(sha256Digest('none')), undefined);
      await store.delete(sha256Digest('none'));
    });

    test('round trip is byte-exact and keeps the media type', async (store) => {
      const digest = sha256Digest(BODY);
      const descriptor = await store.put(BODY, MediaTypes.ociIndex, digest);
      assert.deepEqual(descriptor, { digest, size: BODY.length, mediaType: MediaTypes.ociIndex });
      const got = await store.get(digest);
      assert.deepEqual(got?.descriptor, descriptor);
      assert.ok(got?.body.equals(BODY));
    });

    test('put without an expected digest stores under the sha256 of the body', async (store) => {
      const { digest } = await store.put(BODY, MediaTypes.ociIndex);
      assert.equal(digest, sha256Digest(BODY));
      assert.equal((await store.get(digest))?.descriptor.mediaType, MediaTypes.ociIndex);
    });

    test('a digest mismatch is refused with DIGEST_INVALID and nothing is stored', async (store) => {
      const wrong = sha256Digest('other');
      await rejectsWithCode(store.put(BODY, MediaTypes.ociIndex, wrong), 'DIGEST_INVALID');
      assert.equal(await store.get(wrong), undefined);
      assert.equal(await store.get(sha256Digest(BODY)), undefined);
    });

    test('an empty media type is refused with MANIFEST_INVALID', async (store) => {
      await rejectsWithCode(store.put(BODY, ''), 'MANIFEST_INVALID');
      assert.equal(await store.get(sha256Digest(BODY)), undefined);
    });

    test('what is not a manifest of its media type is refused with MANIFEST_INVALID and nothing is stored', async (store) => {
      const html = Buffer.from('<html><body>sign in</body></html>');
      for (const [body, mediaType] of [
        [BODY, 'text/html'], // a genuine manifest under a type that isn't a manifest's (issue #11 point 4)
        [BODY, MediaTypes.dockerManifestList], // its mediaType field says otherwise
        [BODY, MediaTypes.ociManifest], // an index is not shaped like an image manifest
        [html, MediaTypes.ociManifest], // not JSON (point 5)
        [html, 'text/html'],
        [Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json\\r\\nX: 1","manifests":[]}'), MediaTypes.ociIndex],
      ] as const) {
        await rejectsWithCode(store.put(body, mediaType), 'MANIFEST_INVALID');
        assert.equal(await store.get(sha256Digest(body)), undefined);
      }
    });

    test('put is idempotent, and a stored media type never changes: the first put wins (issue #11 point 4)', async (store) => {
      const a = await store.put(BODY, MediaTypes.ociIndex);
      assert.deepEqual(await store.put(BODY, MediaTypes.ociIndex), a);
      assert.deepEqual((await store.get(a.digest))?.descriptor, a);
      // A document without a mediaType field is an index in both dialects.
      const unnamed = Buffer.from('{"schemaVersion":2,"manifests":[]}');
      const first = await store.put(unnamed, MediaTypes.ociIndex);
      assert.deepEqual(await store.put(unnamed, MediaTypes.dockerManifestList), first, 'the stored descriptor is returned');
      assert.equal((await store.get(first.digest))?.descriptor.mediaType, MediaTypes.ociIndex);
    });

    test('stored bytes do not change when callers mutate their buffers', async (store) => {
      const body = Buffer.from(BODY);
      const { digest } = await store.put(body, MediaTypes.ociIndex);
      body.fill(0);
      (await store.get(digest))!.body.fill(0);
      assert.ok((await store.get(digest))?.body.equals(BODY));
    });

    test('list walks every stored manifest with its size, in digest order; deleted ones are gone (issue #13)', async (store) => {
      const other = Buffer.from(`{"schemaVersion":2,"mediaType":"${MediaTypes.ociIndex}","manifests":[]}`);
      await store.put(BODY, MediaTypes.ociIndex);
      await store.put(other, MediaTypes.ociIndex);
      const listed = [];
      for await (const m of store.list()) {
        if (m.modifiedAt !== undefined) assert.ok(m.modifiedAt > 0 && m.modifiedAt <= Date.now() + 1_000);
        listed.push({ digest: m.digest, size: m.size });
      }
      assert.deepEqual(listed, [{ digest: sha256Digest(BODY), size: BODY.length }, { digest: sha256Digest(other), size: other.length }].sort((a, b) => a.digest.localeCompare(b.digest)));
      await store.delete(sha256Digest(BODY));
      const after = [];
      for await (const m of store.list()) after.push(m.digest);
      assert.deepEqual(after, [sha256Digest(other)]);
    });

    test('delete removes the manifest', async (store) => {
      const { digest } = await store.put(BODY, MediaTypes.ociIndex);
      await store.delete(digest);
      assert.equal(await store.get(digest), undefined);
    });
  });
}

/** The behaviour every `MetadataStore` must have besides its tags (`describeTagStore`, tag-store.conformance.ts). */
export function describeMetadataStore(name: string, makeStore: () => Promise<StoreFixture<MetadataStore>>): void {
  const test = fixtureTest(makeStore);
  const alpine = key('docker.io', 'library/alpine');
  describe(`MetadataStore conformance: ${name}`, () => {
    test('unknown repositories have no manifests', async (store) => {
      assert.equal(await store.hasManifest(alpine, sha256Digest('x')), false);
      assert.equal(await store.hasManifest(key('ghcr.io', 'nobody/here'), sha256Digest('x')), false);
    });

    test('manifest links are per repository and idempotent', async (store) => {
      const d: Digest = sha256Digest('manifest');
      await store.linkManifest(alpine, d);
      await store.linkManifest(alpine, d);
      assert.equal(await store.hasManifest(alpine, d), true);
      assert.equal(await store.hasManifest(key('docker.io', 'library/busybox'), d), false);
      assert.equal(await store.hasManifest(key('ghcr.io', 'library/alpine'), d), false);
      assert.equal(await store.hasManifest(alpine, sha256Digest('other')), false);
    });

    test('listManifests lists a repository\'s links; unlinkManifest and deleteTag remove one, missing ones are not an error (issue #13)', async (store) => {
      const k = key('docker.io', 'library/alpine');
      const [a, b] = [sha256Digest('a'), sha256Digest('b')];
      assert.deepEqual(await store.listManifests(k), []);
      await store.linkManifest(k, a);
      await store.linkManifest(k, b);
      assert.deepEqual(await store.listManifests(k), [a, b].sort());
      await store.unlinkManifest(k, a);
      await store.unlinkManifest(k, a);
      await store.unlinkManifest(key('docker.io', 'library/none'), a);
      assert.deepEqual(await store.listManifests(k), [b]);
      assert.equal(await store.hasManifest(k, a), false);
      await store.setTag(k, tag('1'), entry('x'));
      await store.setTag(k, tag('2'), entry('y'));
      await store.deleteTag(k, tag('1'));
      await store.deleteTag(k, tag('1'));
      await store.deleteTag(key('docker.io', 'library/none'), tag('1'));
      assert.deepEqual(await store.listTags(k), ['2']);
      assert.equal(await store.getTag(k, tag('1')), undefined);
      await rejectsWithCode(store.deleteTag(k, tag('../x')), 'TAG_INVALID');
    });

    test('listRepositories finds nested names on several upstreams', async (store) => {
      const expected = [
        key('docker.io', 'library/alpine'),
        key('docker.io', 'library'),
        key('docker.io', 'org/team/app'),
        key('docker.io', 'org/team/app/sub'),
        key('docker.io', 'a-b'),
        key('ghcr.io', 'org/app'),
        key('registry.example.com:5000', 'x'),
      ];
      for (const [i, k] of expected.entries()) {
        // Some with tags only, some with links only: either makes a repository.
        if (i % 2 === 0) await store.setTag(k, tag('t'), entry(String(i)));
        else await store.linkManifest(k, sha256Digest(String(i)));
      }
      const found: RepoKey[] = [];
      for await (const k of store.listRepositories()) found.push({ upstream: k.upstream, repo: k.repo });
      const order = (a: RepoKey, b: RepoKey) => `${a.upstream} ${a.repo}`.localeCompare(`${b.upstream} ${b.repo}`);
      assert.deepEqual(found.sort(order), [...expected].sort(order));
    });

    test('hosted keys (`_hosted`) are a key space of their own: tags, manifest and blob links, removal', async (store) => {
      const hosted = key(HOSTED_UPSTREAM, 'library/alpine');
      const [m1, m2, b1] = [sha256Digest('m1'), sha256Digest('m2'), sha256Digest('b1')];
      await store.linkManifest(hosted, m2);
      await store.linkManifest(hosted, m1);
      await store.setTag(hosted, tag('v1'), entry('m1'));
      await store.linkBlob(hosted, b1);
      await store.linkBlob(hosted, b1);
      assert.equal(await store.hasManifest(alpine, m1), false, 'the hosted key space is not docker.io');
      assert.equal(await store.hasBlob(alpine, b1), false);
      assert.deepEqual(await store.listManifests(hosted), [m1, m2].sort());
      assert.deepEqual(await store.listBlobs(hosted), [b1]);
      assert.deepEqual(await store.listTags(hosted), ['v1']);
      const found: RepoKey[] = [];
      for await (const k of store.listRepositories()) found.push({ upstream: k.upstream, repo: k.repo });
      assert.deepEqual(found, [hosted]);

      await store.deleteTag(hosted, tag('v1'));
      await store.deleteTag(hosted, tag('v1'));
      await store.unlinkManifest(hosted, m1);
      await store.unlinkManifest(hosted, m1);
      await store.unlinkBlob(hosted, b1);
      assert.deepEqual(await store.listTags(hosted), []);
      assert.deepEqual(await store.listManifests(hosted), [m2]);
      assert.equal(await store.hasBlob(hosted, b1), false);
      assert.deepEqual(await store.listBlobs(hosted), []);
      assert.deepEqual(await store.listManifests(key('docker.io', 'never/seen')), []);
      assert.deepEqual(await store.listBlobs(key('docker.io', 'never/seen')), []);
    });

    test('invalid upstream and repository names are refused; nothing is created', async (store) => {
      for (const upstream of ['_other', '__hosted', '../etc', 'Docker.io', 'docker.io/x', '', '.', 'host:0', 'host:65536', '[::1]:5000']) {
        await rejectsWithCode(store.linkManifest(key(upstream, 'library/alpine'), sha256Digest('a')), 'NAME_INVALID');
      }
      for (const repo of ['../x', 'library/../../x', 'Library/alpine', '/abs', 'a//b', '_tags']) {
        await rejectsWithCode(store.linkManifest(key('docker.io', repo), sha256Digest('a')), 'NAME_INVALID');
      }
      const found = [];
      for await (const k of store.listRepositories()) found.push(k);
      assert.deepEqual(found, []);
    });
  });
}
