import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { sha256Digest, type Digest } from '../domain/digest.js';
import { MediaTypes } from '../domain/media-types.js';
import type { RepoName, Tag } from '../domain/reference.js';
import { MemoryBlobStore } from '../storage/memory/memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../storage/memory/memory-manifest-store.js';
import { writeManyTags } from '../storage/fs/testing/many-tags.js';
import { formatAge, formatLs, listCached, matchesFilter, WIDTH_SAMPLE_ROWS, writeLs } from './ls.js';

const T0 = Date.UTC(2025, 0, 1);

async function stores() {
  const s = { metadata: new MemoryMetadataStore(), manifests: new MemoryManifestStore(), blobs: new MemoryBlobStore() };
  const blob = async (text: string): Promise<Digest> => {
    const w = await s.blobs.create();
    await w.write(Buffer.from(text));
    return (await w.commit(sha256Digest(text))).digest;
  };
  const manifest = async (doc: unknown, mediaType: string) => (await s.manifests.put(Buffer.from(JSON.stringify(doc)), mediaType)).digest;
  const tag = async (repo: string, t: string, digest: Digest, mediaType: string, upstream = 'docker.io') =>
    s.metadata.setTag({ upstream, repo: repo as RepoName }, t as Tag, { digest, mediaType, size: 1, validatedAt: T0 });
  return { s, blob, manifest, tag };
}

const image = (config: string, ...layers: string[]) => ({ schemaVersion: 2, mediaType: MediaTypes.dockerManifest, config: { digest: config }, layers: layers.map((digest) => ({ digest })) });
const missing = (n: string) => sha256Digest(`missing-${n}`);

describe('listCached', () => {
  it('counts blobs once per image and once in the summary; missing blobs are referenced, not cached', async () => {
    const { s, blob, manifest, tag } = await stores();
    const config = await blob('config-a');
    const shared = await blob('shared-layer');
    const a = await manifest(image(config, shared, shared, missing('a')), MediaTypes.dockerManifest);
    const b = await manifest(image(await blob('config-b'), shared), MediaTypes.dockerManifest);
    await tag('library/a', '1', a, MediaTypes.dockerManifest);
    await tag('library/b', '1', b, MediaTypes.dockerManifest);
    await blob('unreferenced');
    const { rows, summary } = await listCached(s);
    assert.deepEqual(
      rows.map((r) => [r.repository, r.size, r.blobs, r.manifests, r.validatedAt]),
      [
        ['library/a', 'config-a'.length + 'shared-layer'.length, { cached: 2, referenced: 3 }, { cached: 1, referenced: 1 }, '2025-01-01T00:00:00.000Z'],
        ['library/b', 'config-b'.length + 'shared-layer'.length, { cached: 2, referenced: 2 }, { cached: 1, referenced: 1 }, '2025-01-01T00:00:00.000Z'],
      ],
    );
    const listed = 'config-a'.length + 'config-b'.length + 'shared-layer'.length;
    assert.deepEqual(summary, { repositories: 2, tags: 2, blobs: 3, bytes: listed, store: { blobs: 4, bytes: listed + 'unreferenced'.length } });
  });

  it('an index: blobs of the stored children only, children counted as manifests; a tag whose manifest is gone is 0/1', async () => {
    const { s, blob, manifest, tag } = await stores();
    const child = await manifest(image(await blob('cfg'), await blob('layer')), MediaTypes.dockerManifest);
    const index = await manifest({ schemaVersion: 2, manifests: [{ digest: child }, { digest: missing('arm64') }, { digest: 'not-a-digest' }] }, MediaTypes.ociIndex);
    await tag('library/multi', 'latest', index, MediaTypes.ociIndex);
    await tag('library/gone', '1', missing('manifest'), MediaTypes.dockerManifest);
    const { rows } = await listCached(s);
    assert.deepEqual(
      rows.map((r) => [r.repository, r.size, r.blobs, r.manifests]),
      [
        ['library/gone', 0, { cached: 0, referenced: 0 }, { cached: 0, referenced: 1 }],
        ['library/multi', 'cfg'.length + 'layer'.length, { cached: 2, referenced: 2 }, { cached: 1, referenced: 3 }],
      ],
    );
    const text = formatLs(await listCached(s), { now: T0 + 90_000, root: '/data' });
    assert.match(text, /library\/gone +1 +sha256:\S{12} +0 B +0\/0 blobs, 0\/1 manifests +1m ago/);
    assert.match(text, /library\/multi +latest +sha256:\S{12} +8 B +2\/2 blobs, 1\/3 manifests +1m ago/);
  });

  it('Docker schema 1 manifests reference their fsLayers', async () => {
    const { s, blob, manifest, tag } = await stores();
    const layer = await blob('v1-layer');
    const m = await manifest({ schemaVersion: 1, fsLayers: [{ blobSum: layer }, { blobSum: layer }, { blobSum: missing('v1') }] }, MediaTypes.dockerSchema1Signed);
    await tag('old/app', 'v1', m, MediaTypes.dockerSchema1Signed);
    const [row] = (await listCached(s)).rows;
    assert.deepEqual([row!.size, row!.blobs], ['v1-layer'.length, { cached: 1, referenced: 2 }]);
  });

  it('filters by prefix of the name, of upstream/name, or of the Docker Hub short name', async () => {
    const { s, blob, manifest, tag } = await stores();
    const m = await manifest(image(await blob('c')), MediaTypes.dockerManifest);
    await tag('library/alpine', '3', m, MediaTypes.dockerManifest);
    await tag('org/app', '1', m, MediaTypes.dockerManifest, 'ghcr.io');
    const repos = async (filter: string) => (await listCached(s, { filter })).rows.map((r) => `${r.upstream}/${r.repository}`);
    assert.deepEqual(await repos('alp'), ['docker.io/library/alpine']);
    assert.deepEqual(await repos('ghcr.io/'), ['ghcr.io/org/app']);
    assert.deepEqual(await repos('org/'), ['ghcr.io/org/app']);
    assert.deepEqual(await repos('app'), []);
    assert.equal(matchesFilter('ghcr.io', 'library/x', 'x'), false, 'short names are a Docker Hub convention only');
  });

  it('an empty store: no rows and a one-line message', async () => {
    const { s } = await stores();
    const result = await listCached(s);
    assert.deepEqual(result.rows, []);
    assert.equal(formatLs(result, { now: T0, root: '/data' }), 'nothing cached in /data (store: 0 blobs, 0 B)\n');
  });

  it('formats ages coarsely', () => {
    assert.deepEqual([0, 59_999, 60_000, 3_600_000, 86_400_000 * 3, -5].map(formatAge), ['0s', '59s', '1m', '1h', '3d', '0s']);
  });
});

/** Collects what is written, one chunk at a time: `write` returns false until the next tick drains it. */
class SlowSink extends Writable {
  text = '';
  writes = 0;
  constructor() {
    super({ highWaterMark: 1, decodeStrings: false });
  }
  override _write(chunk: string, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk;
    this.writes++;
    setImmediate(cb);
  }
}

describe('writeLs (issue #13: streamed)', () => {
  async function manyRows(n: number) {
    const { s, blob, manifest, tag } = await stores();
    const m = await manifest(image(await blob('c'), await blob('l')), MediaTypes.dockerManifest);
    for (let i = 0; i < n; i++) await tag(`library/r${Math.floor(i / 500)}`, `t${String(i).padStart(5, '0')}`, m, MediaTypes.dockerManifest);
    // A long tag after the width sample: only its own line (and later ones) widen.
    await tag('library/zz', 'a-tag-longer-than-any-in-the-first-rows', m, MediaTypes.dockerManifest);
    await tag('library/zz', 'b', m, MediaTypes.dockerManifest);
    return s;
  }

  it('--json: the document listCached gives, written in chunks through backpressure', async () => {
    const s = await manyRows(3000);
    const out = new SlowSink();
    const summary = await writeLs(s, out, { json: true, now: T0, root: '/data' });
    assert.deepEqual(JSON.parse(out.text), await listCached(s));
    assert.equal(summary.tags, 3002);
    assert.ok(out.writes > 1, 'more than one chunk');
  });

  it('table: widths from the first rows; a longer cell later shifts its line only; the same text as formatLs', async () => {
    const s = await manyRows(WIDTH_SAMPLE_ROWS + 10);
    const out = new SlowSink();
    await writeLs(s, out, { now: T0 + 60_000, root: '/data' });
    assert.equal(out.text, formatLs(await listCached(s), { now: T0 + 60_000, root: '/data' }));
    const lines = out.text.trimEnd().split('\n');
    assert.equal(lines.length, 1 + WIDTH_SAMPLE_ROWS + 12 + 1);
    const digestAt = lines[0]!.indexOf('DIGEST');
    assert.equal(lines[1]!.indexOf('sha256:'), digestAt);
    assert.equal(lines[WIDTH_SAMPLE_ROWS + 10]!.indexOf('sha256:'), digestAt, 'rows after the sample keep the columns');
    assert.ok(lines.at(-3)!.indexOf('sha256:') > digestAt, 'the long tag pushes its own DIGEST right');
    assert.deepEqual(lines.at(-2)!.split(/ {2,}/).slice(1, 3), ['library/zz', 'b']);
    assert.equal(lines.at(-1), '4 repositories, 1012 tags, 2 B in 2 blobs (whole store: 2 B in 2 blobs)');
  });
});

describe('hubcache ls at scale (issue #13)', () => {
  it('more than 124k tags in the real layout: the CLI lists every one, in order, under a 64 MB heap', async () => {
    // 124k rows crashed the column widths (Math.max(...rows)); and the whole listing was held in memory.
    const TAGS = 125_000;
    const root = mkdtempSync(join(tmpdir(), 'hubcache-ls-many-'));
    try {
      const store = await writeManyTags({ root, tags: TAGS });
      const bin = fileURLToPath(new URL('../../bin/hubcache.js', import.meta.url));
      // A heap cap well under what holding the rows takes: streaming completes, collecting runs out of memory.
      const child = spawn(process.execPath, ['--max-old-space-size=64', bin, 'ls', '--storage-path', root], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      let n = -1;
      let last = '';
      for await (const line of createInterface({ input: child.stdout })) {
        if (n >= 0 && n < TAGS) {
          const cells = line.split(/ {2,}/);
          if (cells[1] !== store.repository(n) || cells[2] !== store.tag(n)) assert.fail(`row ${n}: ${line}`);
        } else if (n < 0) assert.match(line, /^UPSTREAM +REPOSITORY +TAG/);
        last = line;
        n++;
      }
      assert.equal(await exited, 0, stderr);
      assert.equal(n, TAGS + 1, 'header, every tag, the summary line');
      assert.match(last, new RegExp(`^${store.repositories} repositories, ${TAGS} tags, .* in ${store.blobs} blobs `));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
