import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { sha256Digest, type Digest } from '../domain/digest.js';
import { MediaTypes } from '../domain/media-types.js';
import type { RepoName, Tag } from '../domain/reference.js';
import { silentLogger } from '../lib/logger.js';
import { FsStorage } from '../storage/fs/fs-storage.js';
import { readTrustedTagIndex } from '../storage/fs/tag-index.js';
import { writeSyntheticStore } from '../storage/fs/testing/synthetic-store.js';
import { subjectId } from '../storage/access-record.js';
import { MemoryAccessRecord } from '../storage/memory/memory-access-record.js';
import { MemoryBlobStore } from '../storage/memory/memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../storage/memory/memory-manifest-store.js';
import { diskUsage, formatDu, progressLine, type DuProgress, type DuResult } from './du.js';
import { listCached } from './ls.js';

const T0 = Date.UTC(2025, 0, 1);
const HOUR = 3_600_000;

async function stores() {
  const s = { metadata: new MemoryMetadataStore(), manifests: new MemoryManifestStore(), blobs: new MemoryBlobStore(), access: new MemoryAccessRecord() };
  const blob = async (text: string): Promise<Digest> => {
    const w = await s.blobs.create();
    await w.write(Buffer.from(text));
    return (await w.commit(sha256Digest(text))).digest;
  };
  const manifest = async (doc: unknown, mediaType: string) => (await s.manifests.put(Buffer.from(JSON.stringify(doc)), mediaType)).digest;
  const tag = async (upstream: string, repo: string, t: string, digest: Digest, mediaType: string, validatedAt = T0) =>
    s.metadata.setTag({ upstream, repo: repo as RepoName }, t as Tag, { digest, mediaType, size: 1, validatedAt });
  /** A pull of the tag at `at` (what the cache records on every hit and miss). */
  const pulled = (upstream: string, repo: string, t: string, at: number) => s.access.touch({ kind: 'tag', key: { upstream, repo: repo as RepoName }, tag: t as Tag }, at);
  return { s, blob, manifest, tag, pulled };
}

const image = (config: string, ...layers: string[]) => ({ schemaVersion: 2, mediaType: MediaTypes.dockerManifest, config: { digest: config }, layers: layers.map((digest) => ({ digest })) });
const missing = (n: string) => sha256Digest(`missing-${n}`);
const D = MediaTypes.dockerManifest;

/**
 * docker.io/library/a: tags 1 and 2 on one image (config-a, base, own-a); docker.io/library/b: an
 * index with one stored platform (config-b, base, shared-up) and one missing; ghcr.io/org/c: one
 * image (config-c, shared-up) and a tag whose manifest is gone. Plus two blobs no tag reaches.
 * Last access: library/a:1 pulled at T0+4h (validated at T0), library/a:2 and library/b:latest
 * never (no entry: their validatedAt stands in), org/c's tags at T0+4h and T0+3.5h.
 */
async function sample() {
  const { s, blob, manifest, tag, pulled } = await stores();
  const base = await blob('base-layer');
  const sharedUp = await blob('shared-across-upstreams');
  const a = await manifest(image(await blob('config-a'), base, await blob('own-a')), D);
  await tag('docker.io', 'library/a', '1', a, D, T0);
  await tag('docker.io', 'library/a', '2', a, D, T0 + HOUR);
  const child = await manifest(image(await blob('config-b'), base, sharedUp, missing('layer')), D);
  const index = await manifest({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [{ digest: child }, { digest: missing('arm64') }] }, MediaTypes.ociIndex);
  await tag('docker.io', 'library/b', 'latest', index, MediaTypes.ociIndex, T0 + 2 * HOUR);
  await tag('ghcr.io', 'org/c', 'v1', await manifest(image(await blob('config-c'), sharedUp), D), D, T0);
  await tag('ghcr.io', 'org/c', 'gone', missing('manifest'), D, T0 + 3 * HOUR);
  await blob('pulled-by-digest');
  await blob('orphan');
  pulled('docker.io', 'library/a', '1', T0 + 4 * HOUR);
  pulled('ghcr.io', 'org/c', 'v1', T0 + 4 * HOUR);
  pulled('ghcr.io', 'org/c', 'gone', T0 + 3.5 * HOUR);
  return s;
}

const len = (...texts: string[]) => texts.reduce((n, t) => n + t.length, 0);

describe('diskUsage', () => {
  it('per repository: tags, manifests and blobs reached, bytes unique and shared; per upstream; the store with its unreferenced blobs', async () => {
    const result = await diskUsage(await sample());
    assert.deepEqual(result.repositories, [
      {
        upstream: 'docker.io',
        repository: 'library/a',
        tags: 2,
        manifests: { stored: 1, referenced: 1 },
        blobs: { stored: 3, referenced: 3 },
        bytes: len('config-a', 'base-layer', 'own-a'),
        uniqueBytes: len('config-a', 'own-a'),
        sharedBytes: len('base-layer'),
        // Tag 1's pull (T0+4h), not tag 2's validatedAt (T0+1h): the latest of the two.
        lastAccessAt: new Date(T0 + 4 * HOUR).toISOString(),
        tagsWithoutAccess: 1,
      },
      {
        upstream: 'docker.io',
        repository: 'library/b',
        tags: 1,
        // The index, its stored child and its missing child; the child's missing layer is referenced, not stored.
        manifests: { stored: 2, referenced: 3 },
        blobs: { stored: 3, referenced: 4 },
        bytes: len('config-b', 'base-layer', 'shared-across-upstreams'),
        uniqueBytes: len('config-b'),
        sharedBytes: len('base-layer', 'shared-across-upstreams'),
        lastAccessAt: new Date(T0 + 2 * HOUR).toISOString(),
        tagsWithoutAccess: 1,
      },
      {
        upstream: 'ghcr.io',
        repository: 'org/c',
        tags: 2,
        manifests: { stored: 1, referenced: 2 },
        blobs: { stored: 2, referenced: 2 },
        bytes: len('config-c', 'shared-across-upstreams'),
        uniqueBytes: len('config-c'),
        sharedBytes: len('shared-across-upstreams'),
        lastAccessAt: new Date(T0 + 4 * HOUR).toISOString(),
        tagsWithoutAccess: 0,
      },
    ]);
    assert.deepEqual(result.upstreams, [
      { upstream: 'docker.io', repositories: 2, tags: 3, blobs: 5, bytes: len('config-a', 'base-layer', 'own-a', 'config-b', 'shared-across-upstreams'), uniqueBytes: len('config-a', 'base-layer', 'own-a', 'config-b') },
      { upstream: 'ghcr.io', repositories: 1, tags: 2, blobs: 2, bytes: len('config-c', 'shared-across-upstreams'), uniqueBytes: len('config-c') },
    ]);
    const referenced = len('config-a', 'base-layer', 'own-a', 'config-b', 'shared-across-upstreams', 'config-c');
    assert.deepEqual(result.store, {
      blobs: 8,
      bytes: referenced + len('pulled-by-digest', 'orphan'),
      manifests: 4,
      referenced: { blobs: 6, bytes: referenced },
      unreferenced: { blobs: 2, bytes: len('pulled-by-digest', 'orphan') },
    });
  });

  it('a filter selects rows only: sharing is still judged against every repository, the totals are the whole store', async () => {
    const s = await sample();
    const all = await diskUsage(s);
    const only = await diskUsage(s, { filter: 'library/b' });
    assert.deepEqual(only.repositories, [all.repositories[1]]);
    assert.deepEqual(only.store, all.store);
    assert.deepEqual(only.upstreams, all.upstreams);
    assert.deepEqual((await diskUsage(s, { filter: 'ghcr.io/org' })).repositories.map((r) => r.repository), ['org/c']);
    assert.deepEqual((await diskUsage(s, { filter: 'a' })).repositories.map((r) => r.repository), ['library/a']);
  });

  it('an empty store: no rows, zero totals', async () => {
    const { s } = await stores();
    const result = await diskUsage(s);
    assert.deepEqual(result, { repositories: [], upstreams: [], store: { blobs: 0, bytes: 0, manifests: 0, referenced: { blobs: 0, bytes: 0 }, unreferenced: { blobs: 0, bytes: 0 } } });
    assert.equal(formatDu(result, { now: T0, location: '/data' }), 'no cached repository in /data\nstore /data: 0 B in 0 blobs, 0 tagged manifests; unreferenced (no cached tag\'s manifest references them): 0 B in 0 blobs\n');
  });

  it('an aborted walk rejects with the reason', async () => {
    const s = await sample();
    const controller = new AbortController();
    const reason = new Error('client left');
    controller.abort(reason);
    await assert.rejects(diskUsage(s, { signal: controller.signal }), (err) => err === reason);
  });

  it('a pull moves LAST ACCESS forward while validatedAt stays older; a tag without an entry counts with its validatedAt until pulled', async () => {
    const { s, blob, manifest, tag, pulled } = await stores();
    const d = await manifest(image(await blob('config'), await blob('layer')), D);
    await tag('docker.io', 'library/x', 'old', d, D, T0);
    await tag('docker.io', 'library/x', 'new', d, D, T0 + HOUR);
    const row = async () => {
      const [r] = (await diskUsage(s)).repositories;
      return [r!.lastAccessAt, r!.tagsWithoutAccess];
    };
    assert.deepEqual(await row(), [new Date(T0 + HOUR).toISOString(), 2]);
    // Pulled (a hit: only the access record moves, validatedAt stays T0); still older than the other tag's stand-in.
    pulled('docker.io', 'library/x', 'old', T0 + HOUR / 2);
    assert.deepEqual(await row(), [new Date(T0 + HOUR).toISOString(), 1]);
    pulled('docker.io', 'library/x', 'old', T0 + 3 * HOUR);
    assert.deepEqual(await row(), [new Date(T0 + 3 * HOUR).toISOString(), 1]);
    pulled('docker.io', 'library/x', 'new', T0 + 2 * HOUR);
    assert.deepEqual(await row(), [new Date(T0 + 3 * HOUR).toISOString(), 0]);
    assert.equal((await s.metadata.getTag({ upstream: 'docker.io', repo: 'library/x' as RepoName }, 'old' as Tag))?.validatedAt, T0);
  });
});

describe('formatDu', () => {
  it('an aligned table, a line per upstream, the store, and a footnote when a tag without an access entry stood in with its validatedAt', async () => {
    const result = await diskUsage(await sample());
    const lines = formatDu(result, { now: T0 + 5 * HOUR, location: '/data' }).trimEnd().split('\n');
    assert.deepEqual(lines[0]!.split(/ {2,}/), ['UPSTREAM', 'REPOSITORY', 'TAGS', 'MANIFESTS', 'BLOBS', 'SIZE', 'UNIQUE', 'SHARED', 'LAST ACCESS']);
    assert.deepEqual(lines[2]!.split(/ {2,}/), ['docker.io', 'library/b', '1', '2/3', '3/4', '41 B', '8 B', '33 B', '3h ago']);
    assert.deepEqual(lines[1]!.split(/ {2,}/).at(-1), '1h ago');
    assert.deepEqual(lines[3]!.split(/ {2,}/), ['ghcr.io', 'org/c', '2', '1/2', '2', '31 B', '8 B', '23 B', '1h ago']);
    // Columns line up: every row's SIZE starts where the header's does.
    const at = lines[0]!.indexOf('SIZE');
    for (const line of lines.slice(1, 4)) assert.match(line.slice(at), /^\d+ B /);
    assert.equal(lines[4], 'docker.io: 2 repositories, 3 tags, 54 B in 5 blobs (31 B not shared with other upstreams)');
    assert.equal(lines[5], 'ghcr.io: 1 repository, 2 tags, 31 B in 2 blobs (8 B not shared with other upstreams)');
    assert.equal(lines[6], "store /data: 84 B in 8 blobs, 4 tagged manifests; unreferenced (no cached tag's manifest references them): 22 B in 2 blobs");
    assert.equal(lines[7], 'LAST ACCESS: 2 tags with no recorded access counted with when upstream last confirmed them');
    assert.equal(lines.length, 8);
  });

  it('no footnote when every shown tag has an access entry', async () => {
    const text = formatDu(await diskUsage(await sample(), { filter: 'ghcr.io/org' }), { now: T0 + 5 * HOUR, location: '/data' });
    assert.doesNotMatch(text, /LAST ACCESS:|validat|recorded/);
    assert.match(text.split('\n')[1]!, / {2}1h ago$/);
  });

  it('no match for a filter says so', async () => {
    const result = await diskUsage(await sample(), { filter: 'nothing' });
    assert.match(formatDu(result, { now: T0, location: '/data', filter: 'nothing' }), /^no cached repository matching "nothing" in \/data\n/);
  });
});

describe('progressLine', () => {
  it('writes on a TTY at most every 100 ms, and erases its line at the end; nothing elsewhere', () => {
    let clock = 0;
    const written: string[] = [];
    const tty = { isTTY: true, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
    const p = progressLine(tty, () => clock);
    const at = (blobs: number): DuProgress => ({ phase: 'blobs', blobs, repositories: 0, tags: 0 });
    clock = 100;
    p.update(at(1));
    clock = 150;
    p.update(at(2));
    clock = 200;
    p.update({ phase: 'tags', blobs: 2, repositories: 1, tags: 64 });
    p.done();
    assert.deepEqual(written, ['\r\x1b[Kreading blobs: 1', '\r\x1b[K2 blobs; reading tags: 64 in 1 repository', '\r\x1b[K']);
    const pipe = { isTTY: false, write: () => assert.fail('written to a pipe') } as unknown as NodeJS.WriteStream;
    const q = progressLine(pipe, () => 1000);
    q.update(at(1));
    q.done();
  });
});

describe('hubcache du (CLI) on a stopped store in the real layout', () => {
  it('--json: every repository and the totals of the synthetic store, last access from access.log; the table; nothing written to the store', async () => {
    const root = mkdtempSync(join(tmpdir(), 'hubcache-du-'));
    try {
      const store = writeSyntheticStore({ root, blobs: 4100, blobSize: 64, validatedAt: T0 });
      // A stopped store's record, as a server flushed it: one tag of the first repository pulled at T0+1h.
      const accessLog = join(root, 'access.log');
      const pulledTag = { kind: 'tag' as const, key: { upstream: 'docker.io', repo: 'bench/r0000' as RepoName }, tag: store.images[0]!.tags[1]! as Tag };
      writeFileSync(accessLog, `${T0 + HOUR} ${subjectId(pulledTag)}\n`);
      const logBefore = { text: readFileSync(accessLog, 'utf8'), mtimeMs: statSync(accessLog).mtimeMs };
      const bin = fileURLToPath(new URL('../../bin/hubcache.js', import.meta.url));
      const run = (...args: string[]) => promisify(execFile)(process.execPath, [bin, 'du', '--storage-path', root, ...args], { maxBuffer: 16 * 1024 * 1024 });
      const json = JSON.parse((await run('--json')).stdout) as DuResult;
      assert.equal(json.repositories.length, store.repositories);
      assert.equal(
        json.repositories.reduce((n, r) => n + r.tags, 0),
        store.tags,
      );
      assert.deepEqual(json.store, {
        blobs: 4100,
        bytes: 4100 * 64,
        manifests: store.images.length,
        referenced: { blobs: 4100 - store.unreferenced, bytes: (4100 - store.unreferenced) * 64 },
        unreferenced: { blobs: store.unreferenced, bytes: store.unreferenced * 64 },
      });
      // The shared base layers live in the first repository's images: only it has them as its own.
      const [first, second] = json.repositories;
      assert.deepEqual([first!.repository, first!.manifests, first!.blobs.stored, first!.sharedBytes], ['bench/r0000', { stored: 250, referenced: 250 }, 1000, 8 * 64]);
      assert.deepEqual([second!.blobs.stored, second!.bytes - second!.uniqueBytes], [1008, 8 * 64]);
      assert.deepEqual([first!.lastAccessAt, first!.tagsWithoutAccess], [new Date(T0 + HOUR).toISOString(), first!.tags - 1]);
      assert.deepEqual([second!.lastAccessAt, second!.tagsWithoutAccess], [new Date(T0).toISOString(), second!.tags]);

      const table = (await run('bench/r0001')).stdout.split('\n');
      assert.deepEqual(table[1]!.split(/ {2,}/).slice(0, 5), ['docker.io', 'bench/r0001', '1000', '250', '1008']);
      assert.match(table[2]!, /^docker\.io: 5 repositories, 4096 tags, /);
      assert.match(table.at(-2)!, /^LAST ACCESS: 1000 tags with no recorded access counted with when upstream last confirmed them$/);
      assert.equal(existsSync(join(root, 'hubcache.lock')), false);
      assert.deepEqual({ text: readFileSync(accessLog, 'utf8'), mtimeMs: statSync(accessLog).mtimeMs }, logBefore, 'access.log untouched');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('ls and du read the tag indexes and blob sizes files (issue #13)', () => {
  it('the same store with and without its indexes gives the same du and ls, and with them the tag indexes are trusted', async () => {
    const results = [];
    for (const indexes of [true, false]) {
      const root = mkdtempSync(join(tmpdir(), 'hubcache-du-idx-'));
      try {
        const store = writeSyntheticStore({ root, blobs: 2100, blobSize: 64, validatedAt: T0, indexes });
        const storage = new FsStorage({ root, lockStaleMs: 30_000, logger: silentLogger(), blockingReads: true });
        const trusted = await readTrustedTagIndex(
          { indexPath: storage.layout.tagIndexPath({ upstream: 'docker.io', repo: store.images[0]!.repository as RepoName }), tagsDir: storage.layout.tagsDir({ upstream: 'docker.io', repo: store.images[0]!.repository as RepoName }) },
          true,
        );
        assert.equal(trusted !== undefined, indexes);
        const du = await diskUsage(storage);
        const ls = await listCached(storage);
        assert.equal(ls.rows.length, store.tags);
        results.push({ du, ls });
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    }
    assert.deepEqual(results[0], results[1]);
  });
});
