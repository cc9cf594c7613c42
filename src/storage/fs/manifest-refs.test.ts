import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { diskUsage } from '../../commands/du.js';
import { listCached } from '../../commands/ls.js';
import { sha256Digest, type Digest } from '../../domain/digest.js';
import { listingRefs } from '../../domain/manifest-refs.js';
import { MediaTypes } from '../../domain/media-types.js';
import type { RepoName, Tag } from '../../domain/reference.js';
import { silentLogger } from '../../lib/logger.js';
import { FsManifestStore } from './fs-manifest-store.js';
import { FsStorage } from './fs-storage.js';
import { formatRefsLine, parseRefs, parseRefsFile } from './manifest-refs.js';

const D = MediaTypes.dockerManifest;
const image = (config: string, ...layers: string[]) => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: D, config: { digest: config }, layers: layers.map((digest) => ({ digest })) }));
const index = (...children: string[]) => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: children.map((digest) => ({ digest })) }));
const blobRef = (n: string) => sha256Digest(`blob-${n}`);
const hexOf = (d: Digest) => d.slice('sha256:'.length);

function withRoot<T>(fn: (root: string) => Promise<T>): () => Promise<T> {
  return async () => {
    const root = mkdtempSync(join(tmpdir(), 'hubcache-mrefs-'));
    try {
      return await fn(root);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  };
}

describe('manifest-refs lines', () => {
  it('round-trips both kinds; a torn last line, a malformed line and a line of another kind are not trusted', () => {
    const hex = 'a'.repeat(64);
    const img = { index: false, blobs: ['sha256:' + 'b'.repeat(64), 'not a digest'] } as const;
    const idx = { index: true, children: [('sha256:' + 'c'.repeat(64)) as Digest, null] } as const;
    const text = formatRefsLine(hex, img) + formatRefsLine('d'.repeat(64), idx) + `${'e'.repeat(64)} b ["torn`;
    const { refs, lines } = parseRefsFile(text);
    assert.equal(lines, 2);
    assert.deepEqual(parseRefs(refs.get(hex)!), img);
    assert.deepEqual(parseRefs(refs.get('d'.repeat(64))!), idx);
    assert.equal(refs.has('e'.repeat(64)), false);
    assert.equal(parseRefs('b ["x", 1]'), undefined);
    assert.equal(parseRefs('i ["not a digest"]'), undefined);
    assert.equal(parseRefs('x []'), undefined);
    assert.equal(parseRefs('b {"a": 1}'), undefined);
  });
});

describe('FsManifestStore manifest-refs record (issue #13: du/ls without opening every manifest)', () => {
  it('put records the references; the reader answers from the record (not the body) for a stored manifest', withRoot(async (root) => {
    const store = new FsManifestStore({ root });
    await store.init();
    const body = image(blobRef('c'), blobRef('l1'), blobRef('l2'));
    const { digest } = await store.put(body, D);
    const prefix = hexOf(digest).slice(0, 2);
    assert.equal(readFileSync(store.layout.manifestRefsPath(prefix), 'utf8'), formatRefsLine(hexOf(digest), listingRefs(body)));
    // The record is what the reader uses: a line saying otherwise (hand-made here) is believed...
    writeFileSync(store.layout.manifestRefsPath(prefix), formatRefsLine(hexOf(digest), { index: false, blobs: ['sha256:' + 'f'.repeat(64)] }));
    assert.deepEqual(await store.refsReader()(digest), { index: false, blobs: ['sha256:' + 'f'.repeat(64)] });
    // ...and without a line the body is read.
    rmSync(store.layout.manifestRefsPath(prefix));
    assert.deepEqual(await store.refsReader()(digest), listingRefs(body));
  }));

  it('existence comes from the directory: a deleted manifest (eviction, gc) is not stored whatever its stale line says; a crash before the append or a torn line costs a read', withRoot(async (root) => {
    const store = new FsManifestStore({ root, blockingReads: true });
    await store.init();
    const a = await store.put(image(blobRef('a'), blobRef('base')), D);
    const b = await store.put(image(blobRef('b'), blobRef('base')), D);
    const idx = await store.put(index(a.digest, b.digest), MediaTypes.ociIndex);
    await store.delete(b.digest);
    const read = store.refsReader();
    assert.equal(await read(b.digest), undefined);
    assert.deepEqual(await read(idx.digest), { index: true, children: [a.digest, b.digest] });
    // No line at all for a (a crash between the body's rename and the append), a torn line after it.
    const path = store.layout.manifestRefsPath(hexOf(a.digest).slice(0, 2));
    const kept = readFileSync(path, 'utf8').split('\n').filter((l) => l.length > 0 && !l.startsWith(hexOf(a.digest)));
    writeFileSync(path, kept.map((l) => `${l}\n`).join('') + `${hexOf(a.digest)} b ["sha`);
    assert.deepEqual(await store.refsReader()(a.digest), { index: false, blobs: [blobRef('a'), blobRef('base')] });
    // A sidecar missing (a manifest half-deleted): not stored, as get says.
    rmSync(store.layout.manifestMediaTypePath(idx.digest));
    assert.equal(await store.get(idx.digest), undefined);
    assert.equal(await store.refsReader()(idx.digest), undefined);
  }));

  it("the owner's check rewrites a partition's file to exactly its stored manifests' lines, and leaves a complete one alone", withRoot(async (root) => {
    const store = new FsManifestStore({ root });
    await store.init();
    const digests: Digest[] = [];
    for (let i = 0; i < 40; i++) digests.push((await store.put(image(blobRef(`c${i}`), blobRef(`l${i}`)), D)).digest);
    for (const d of digests.slice(0, 10)) await store.delete(d);
    // Lines lost (a crash, an older hubcache) and garbage appended.
    const lost = digests[20]!;
    const lostPath = store.layout.manifestRefsPath(hexOf(lost).slice(0, 2));
    writeFileSync(lostPath, readFileSync(lostPath, 'utf8').split('\n').filter((l) => !l.startsWith(hexOf(lost))).join('\n'));
    appendFileSync(lostPath, 'garbage\n');
    await store.maintainRefs(new AbortController().signal);
    const live = digests.slice(10);
    const expected = new Map<string, string>();
    for (const d of live) {
      const p = hexOf(d).slice(0, 2);
      expected.set(p, (expected.get(p) ?? '') + formatRefsLine(hexOf(d), listingRefs((await store.get(d))!.body)));
    }
    for (const d of digests) {
      const p = hexOf(d).slice(0, 2);
      const path = store.layout.manifestRefsPath(p);
      const lines = existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean).sort() : [];
      assert.deepEqual(lines, (expected.get(p) ?? '').split('\n').filter(Boolean).sort(), `partition ${p}`);
    }
    const before = readFileSync(store.layout.manifestRefsPath(hexOf(live[0]!).slice(0, 2)), 'utf8');
    await store.maintainRefs(new AbortController().signal);
    assert.equal(readFileSync(store.layout.manifestRefsPath(hexOf(live[0]!).slice(0, 2)), 'utf8'), before);
  }));
});

describe('du and ls with the manifest-refs record never differ from reading the manifests (issue #13)', () => {
  it('after a put, after deletes (eviction/gc), with lines lost or torn, and after the owner rebuilt the record', withRoot(async (root) => {
    const storage = new FsStorage({ root, lockStaleMs: 30_000, logger: silentLogger() });
    await storage.init();
    await storage.manifestRefsChecked();
    const key = (repo: string) => ({ upstream: 'docker.io', repo: repo as RepoName });
    const blob = async (text: string) => {
      const w = await storage.blobs.create();
      await w.write(Buffer.from(text));
      return (await w.commit(sha256Digest(text))).digest;
    };
    const base = await blob('base');
    const images: Digest[] = [];
    for (let i = 0; i < 12; i++) {
      const m = await storage.manifests.put(image(await blob(`config-${i}`), base, await blob(`layer-${i}`)), D);
      images.push(m.digest);
      await storage.metadata.setTag(key(`r${i % 3}`), `t${i}` as Tag, { digest: m.digest, mediaType: D, size: 1, validatedAt: 1 });
    }
    const idx = await storage.manifests.put(index(images[0]!, images[1]!, sha256Digest('absent')), MediaTypes.ociIndex);
    await storage.metadata.setTag(key('multi'), 'latest' as Tag, { digest: idx.digest, mediaType: MediaTypes.ociIndex, size: 1, validatedAt: 1 });
    await storage.close();

    /** du and ls of the store as it is, and of the same store without any record (every manifest read). */
    const compare = async (what: string) => {
      const reader = new FsStorage({ root, lockStaleMs: 30_000, logger: silentLogger(), blockingReads: true });
      const withRecord = { du: await diskUsage(reader), ls: await listCached(reader) };
      const copy = mkdtempSync(join(tmpdir(), 'hubcache-mrefs-copy-'));
      try {
        const { cpSync } = await import('node:fs');
        cpSync(root, copy, { recursive: true });
        rmSync(join(copy, 'manifest-refs'), { recursive: true, force: true });
        const bare = new FsStorage({ root: copy, lockStaleMs: 30_000, logger: silentLogger(), blockingReads: true });
        assert.deepEqual(withRecord, { du: await diskUsage(bare), ls: await listCached(bare) }, what);
      } finally {
        rmSync(copy, { recursive: true, force: true });
      }
      return withRecord;
    };
    const first = await compare('as written');
    assert.deepEqual(first.du.repositories.find((r) => r.repository === 'multi')!.manifests, { stored: 3, referenced: 4 });

    // Eviction and gc delete manifests through the store (the line stays behind).
    const owner = new FsStorage({ root, lockStaleMs: 30_000, logger: silentLogger() });
    await owner.init();
    await owner.manifestRefsChecked();
    await owner.manifests.delete(images[1]!);
    await owner.manifests.delete(images[5]!);
    await compare('after deletes');
    // Lost and torn lines.
    const p0 = owner.layout.manifestRefsPath(hexOf(images[0]!).slice(0, 2));
    writeFileSync(p0, `${hexOf(images[0]!)} b ["sha256:`);
    await compare('with a torn line');
    await owner.close();
    // The next owner's check rebuilds the record; the walks agree again, and the record has no stale line.
    const next = new FsStorage({ root, lockStaleMs: 30_000, logger: silentLogger() });
    await next.init();
    await next.manifestRefsChecked();
    await next.close();
    const recorded = (d: Digest) => {
      const path = next.layout.manifestRefsPath(hexOf(d).slice(0, 2));
      return existsSync(path) && readFileSync(path, 'utf8').includes(hexOf(d));
    };
    assert.deepEqual([recorded(images[0]!), recorded(images[5]!)], [true, false]);
    const last = await compare('after the rebuild');
    assert.equal(last.du.store.manifests, first.du.store.manifests - 2);
  }));
});
