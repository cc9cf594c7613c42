import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { sha256Digest } from '../../domain/digest.js';
import { MediaTypes } from '../../domain/media-types.js';
import type { RepoName, Tag } from '../../domain/reference.js';
import { describeManifestStore, describeMetadataStore } from '../testing/manifest-store.conformance.js';
import { describeTagStore } from '../testing/tag-store.conformance.js';
import { FsManifestStore, FsMetadataStore } from './fs-manifest-store.js';

async function withRoot<T>(fn: (root: string) => Promise<T>): Promise<T> {
  const root = await mkdtemp(join(tmpdir(), 'hubcache-meta-'));
  try {
    return await fn(root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

async function fixture<S extends { init(): Promise<void> }>(make: (root: string) => S) {
  const root = await mkdtemp(join(tmpdir(), 'hubcache-meta-'));
  const store = make(root);
  await store.init();
  return {
    store,
    cleanup: async () => {
      // Every write went through tmp/ and was renamed: nothing may stay there.
      const left = await readdir(join(root, 'tmp'));
      await rm(root, { recursive: true, force: true });
      assert.deepEqual(left, [], 'temp files left behind');
    },
  };
}

describeManifestStore('FsManifestStore', () => fixture((root) => new FsManifestStore({ root })));
describeMetadataStore('FsMetadataStore', () => fixture((root) => new FsMetadataStore({ root })));
describeTagStore('FsMetadataStore', () => fixture((root) => new FsMetadataStore({ root })));

describe('FsManifestStore / FsMetadataStore on disk', () => {
  it('stores manifest bytes and a media-type sidecar at manifests/sha256/<ab>/<hex>', () =>
    withRoot(async (root) => {
      const store = new FsManifestStore({ root });
      await store.init();
      const body = Buffer.from('{"schemaVersion":2,"config":{},"layers":[]}');
      const { digest } = await store.put(body, MediaTypes.ociManifest);
      const hex = digest.slice('sha256:'.length);
      const dir = join(root, 'manifests', 'sha256', hex.slice(0, 2));
      assert.deepEqual((await readdir(dir)).sort(), [hex, `${hex}.json`]);
      assert.ok((await readFile(join(dir, hex))).equals(body));
      assert.deepEqual(JSON.parse(await readFile(join(dir, `${hex}.json`), 'utf8')), { mediaType: MediaTypes.ociManifest });
    }));

  it('a sidecar without its body (crash between the two renames) is not a stored manifest', () =>
    withRoot(async (root) => {
      const store = new FsManifestStore({ root });
      const body = Buffer.from('{"schemaVersion":2,"config":{},"layers":[]}');
      const { digest } = await store.put(body, MediaTypes.ociManifest);
      await rm(store.layout.manifestPath(digest));
      assert.equal(await new FsManifestStore({ root }).get(digest), undefined);
      // Putting it again repairs it.
      await store.put(body, MediaTypes.ociManifest);
      assert.ok((await store.get(digest))?.body.equals(body));
    }));

  it('a sidecar from before media types were checked (text/html, or one the body contradicts) is not a stored manifest; a put replaces it', () =>
    withRoot(async (root) => {
      const store = new FsManifestStore({ root });
      await store.init();
      const body = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}');
      const { digest } = await store.put(body, MediaTypes.ociManifest);
      for (const poisoned of ['text/html', MediaTypes.dockerManifest, 'application/octet-stream']) {
        await writeFile(store.layout.manifestMediaTypePath(digest), JSON.stringify({ mediaType: poisoned }));
        assert.equal(await store.get(digest), undefined, poisoned);
        assert.equal((await store.put(body, MediaTypes.ociManifest)).mediaType, MediaTypes.ociManifest);
        assert.equal((await new FsManifestStore({ root }).get(digest))?.descriptor.mediaType, MediaTypes.ociManifest);
      }
      // A body that is no manifest at all (HTML stored by an older version) is not served either.
      const html = Buffer.from('<html></html>');
      const htmlDigest = sha256Digest(html);
      await mkdir(dirname(store.layout.manifestPath(htmlDigest)), { recursive: true });
      await writeFile(store.layout.manifestMediaTypePath(htmlDigest), JSON.stringify({ mediaType: 'text/html' }));
      await writeFile(store.layout.manifestPath(htmlDigest), html);
      assert.equal(await store.get(htmlDigest), undefined);
    }));

  it('keeps tags and links under repositories/<upstream>/<repo>/{_tags,_manifests}', () =>
    withRoot(async (root) => {
      const store = new FsMetadataStore({ root });
      const key = { upstream: 'registry.example.com:5000', repo: 'org/team/app' as RepoName };
      const entry = { digest: sha256Digest('m'), mediaType: MediaTypes.ociIndex, size: 1, validatedAt: 5 };
      await store.setTag(key, '1.0' as Tag, entry);
      await store.linkManifest(key, entry.digest);
      const repoDir = join(root, 'repositories', 'registry.example.com:5000', 'org', 'team', 'app');
      assert.deepEqual(JSON.parse(await readFile(join(repoDir, '_tags', '1.0'), 'utf8')), entry);
      assert.equal(await readFile(join(repoDir, '_manifests', entry.digest.slice(7)), 'utf8'), entry.digest);
    }));

  it('an unreadable tag file reads as not cached', () =>
    withRoot(async (root) => {
      const store = new FsMetadataStore({ root });
      const key = { upstream: 'docker.io', repo: 'library/alpine' as RepoName };
      await store.setTag(key, 'latest' as Tag, { digest: sha256Digest('m'), mediaType: MediaTypes.ociIndex, size: 1, validatedAt: 5 });
      await writeFile(store.layout.tagPath(key, 'latest' as Tag), '{"digest": trunc');
      assert.equal(await store.getTag(key, 'latest' as Tag), undefined);
    }));

  for (const blockingReads of [false, true]) {
    it(`getTags${blockingReads ? ' (blocking reads)' : ''}: the entries getTag gives, in order; missing, unreadable and invalid names are undefined`, () =>
      withRoot(async (root) => {
        const store = new FsMetadataStore({ root, blockingReads });
        const key = { upstream: 'docker.io', repo: 'library/alpine' as RepoName };
        const entries = ['a', 'b', 'c'].map((t, i) => ({ digest: sha256Digest(t), mediaType: MediaTypes.ociManifest, size: i + 1, validatedAt: 10 + i }));
        for (const [i, t] of ['a', 'b', 'c'].entries()) await store.setTag(key, t as Tag, entries[i]!);
        // A tag file larger than the reused read buffer is read whole.
        const big = { ...entries[0]!, mediaType: `application/vnd.example+json; x=${'y'.repeat(100_000)}` };
        await writeFile(store.layout.tagPath(key, 'big' as Tag), JSON.stringify(big));
        await writeFile(store.layout.tagPath(key, 'broken' as Tag), '{"digest": trunc');
        const names = ['c', '../a', 'missing', 'a', 'broken', 'big', '.', 'b'];
        const got = await store.getTags(key, names);
        assert.equal(got.length, names.length);
        assert.deepEqual(got, [entries[2], undefined, undefined, entries[0], undefined, await store.getTag(key, 'big' as Tag), undefined, entries[1]]);
        assert.equal(got[5]?.mediaType, big.mediaType);
      }));
  }

  it('blocking reads (ls, du): a manifest bigger than the reused read buffer and a small one read back byte-exact, each its own copy', () =>
    withRoot(async (root) => {
      const writer = new FsManifestStore({ root });
      await writer.init();
      const layer = (i: number) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256Digest(`layer-${i}`), size: i + 1 });
      const doc = (n: number) => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest('c'), size: 2 }, layers: Array.from({ length: n }, (_, i) => layer(i)) }));
      const big = doc(1000);
      const small = doc(1);
      assert.ok(big.length > 64 * 1024);
      const bigDigest = (await writer.put(big, MediaTypes.ociManifest)).digest;
      const smallDigest = (await writer.put(small, MediaTypes.ociManifest)).digest;
      const reader = new FsManifestStore({ root, blockingReads: true });
      const [a, b] = [await reader.get(smallDigest), await reader.get(bigDigest)];
      assert.deepEqual(a?.body, small);
      assert.deepEqual(b?.body, big);
      assert.equal(a?.descriptor.mediaType, MediaTypes.ociManifest);
      // The first body is not overwritten by the later reads through the same buffer.
      assert.deepEqual((await reader.get(smallDigest))?.body, small);
      assert.deepEqual(a?.body, small);
      assert.equal(await reader.get(sha256Digest('absent')), undefined);
    }));
});
