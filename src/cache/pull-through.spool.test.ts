/**
 * Issue #12: following a fill in flight is the cache's business, not the store's. A store writer
 * only takes bytes (create → write → commit/abort); followers behind the in-memory window read the
 * fill's spool: the store's own temp file when the writer offers one (`localPath`, the filesystem
 * backend), else a file the cache writes alongside (MemoryBlobStore here stands for an object store).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readlinkSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sha256Digest } from '../domain/digest.js';
import type { RepoName } from '../domain/reference.js';
import { Metrics } from '../observability/metrics.js';
import type { BlobStore } from '../storage/blob-store.js';
import { FsBlobStore } from '../storage/fs/fs-blob-store.js';
import { MemoryBlobStore } from '../storage/memory/memory-blob-store.js';
import { bytesArrived, collect, decorateStore, registry, scriptedUpstream, turn } from './testing/fills.js';

const MiB = 1024 * 1024;
const key = { upstream: 'docker.io', repo: 'library/app' as RepoName };
const signal = new AbortController().signal;

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hubcache-spool-test-'));
});
after(() => rm(dir, { recursive: true, force: true }));

/** Open file descriptors of this process on files under `dir` (Linux: /proc/self/fd). */
function openFilesUnder(d: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(d + '/')) out.push(target);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

async function failures(metrics: Metrics): Promise<Record<string, number>> {
  const m = await metrics.registry.getSingleMetric('hubcache_fills_failed_total')!.get();
  return Object.fromEntries(m.values.filter((v) => v.value > 0).map((v) => [String(v.labels.reason), v.value]));
}

/** `inner` with writers that fail (like a full disk) once they have taken `afterBytes` bytes, or whose commit fails. */
function failingStore(inner: BlobStore, fail: { afterBytes?: number; commit?: boolean }): BlobStore {
  return decorateStore(inner, {
    writer: (w) => ({
      async write(data) {
        if (fail.afterBytes !== undefined && w.written >= fail.afterBytes) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        return w.write(data);
      },
      async commit(...args) {
        if (fail.commit) throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
        return w.commit(...args);
      },
    }),
  });
}

describe('fill followers read a spool owned by the cache (issue #12)', () => {
  it('a store writer without a local file (MemoryBlobStore): the cache spools to an anonymous file in spoolDir, closed once the fill committed and its last reader is done', async () => {
    const spoolDir = await mkdtemp(join(dir, 'own-'));
    const data = randomBytes(7 * MiB);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const { reader } = registry(new MemoryBlobStore(), up.upstream, { metrics: new Metrics({ collectDefault: false }), spoolDir });
    const first = collect((await reader.getBlob(key, digest, { signal })).body!);
    for (let p = 0; p < 6 * MiB; p += 64 * 1024) up.body.write(data.subarray(p, p + 64 * 1024));
    await bytesArrived(first, 6 * MiB);
    const spools = openFilesUnder(spoolDir);
    assert.equal(spools.length, 1, 'one spool file open');
    assert.match(spools[0]!, /spool-[0-9a-f-]+ \(deleted\)$/, 'unlinked at once: a crash leaves nothing');
    assert.deepEqual(await readdir(spoolDir), []);
    // Behind the 4 MiB window: the first bytes come from the spool.
    const lateStream = (await reader.getBlob(key, digest, { signal })).body!;
    lateStream.pause();
    up.body.end(data.subarray(6 * MiB));
    assert.ok((await first.done).equals(data));
    await Promise.all(reader.inFlightFills());
    assert.equal(openFilesUnder(spoolDir).length, 1, 'kept while a reader is still behind');
    const late = collect(lateStream);
    lateStream.resume();
    assert.ok((await late.done).equals(data));
    // The close runs on libuv's thread pool, which a loaded machine may keep busy for a while: wait
    // for it (generously bounded), don't count event-loop turns.
    for (let i = 0; i < 2000 && openFilesUnder(spoolDir).length > 0; i++) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(openFilesUnder(spoolDir), [], 'closed when the last reader is done');
  });

  it('a store writer with a local file (FsBlobStore): followers read its temp file, the cache writes no spool of its own (spoolDir does not even exist)', async () => {
    const root = await mkdtemp(join(dir, 'fs-'));
    const store = new FsBlobStore({ root });
    await store.init();
    const data = randomBytes(7 * MiB);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const { reader } = registry(store, up.upstream, { metrics: new Metrics({ collectDefault: false }), spoolDir: join(dir, 'never-created') });
    const first = collect((await reader.getBlob(key, digest, { signal })).body!);
    for (let p = 0; p < 6 * MiB; p += 64 * 1024) up.body.write(data.subarray(p, p + 64 * 1024));
    await bytesArrived(first, 6 * MiB);
    const late = collect((await reader.getBlob(key, digest, { signal })).body!);
    up.body.end(data.subarray(6 * MiB));
    assert.ok((await first.done).equals(data));
    assert.ok((await late.done).equals(data));
    assert.equal(up.gets(), 1);
    await Promise.all(reader.inFlightFills());
    assert.deepEqual(await store.stat(digest), { digest, size: data.length });
    assert.deepEqual(await readdir(join(root, 'tmp')), []);
  });

  it('a spool that cannot be created (spoolDir missing) fails the fill as storage_error; nothing is left in the store', async () => {
    const store = new MemoryBlobStore();
    const data = randomBytes(1000);
    const up = scriptedUpstream(data.length);
    const { reader, metrics } = registry(store, up.upstream, { metrics: new Metrics({ collectDefault: false }), spoolDir: join(dir, 'missing') });
    await assert.rejects(reader.getBlob(key, sha256Digest(data), { signal }));
    await Promise.all(reader.inFlightFills());
    assert.equal(up.gets(), 0, 'upstream never asked');
    assert.equal(store.pendingWrites, 0);
    assert.deepEqual(await failures(metrics), { storage_error: 1 });
  });
});

describe('fill failures in the store are storage_error, never resumed from upstream', () => {
  it('a store write failing mid-download (a full disk): the client is aborted, one upstream GET despite resumeAttempts, reason storage_error', async () => {
    const data = randomBytes(3 * MiB);
    const up = scriptedUpstream(data.length);
    const { reader, metrics } = registry(failingStore(new MemoryBlobStore(), { afterBytes: MiB }), up.upstream, { metrics: new Metrics({ collectDefault: false }), spoolDir: dir, resumeAttempts: 3 });
    const client = collect((await reader.getBlob(key, sha256Digest(data), { signal })).body!);
    up.body.write(data.subarray(0, 2 * MiB));
    await bytesArrived(client, MiB);
    up.body.end(data.subarray(2 * MiB));
    await assert.rejects(client.done, /store write failed: ENOSPC/);
    await Promise.all(reader.inFlightFills());
    assert.equal(up.gets(), 1);
    assert.deepEqual(await failures(metrics), { storage_error: 1 });
  });

  it('a commit failing after verification (fsync, rename, an upload completion): reason storage_error', async () => {
    const data = randomBytes(100_000);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const inner = new MemoryBlobStore();
    const { reader, metrics } = registry(failingStore(inner, { commit: true }), up.upstream, { metrics: new Metrics({ collectDefault: false }), spoolDir: dir });
    const client = collect((await reader.getBlob(key, digest, { signal })).body!);
    up.body.end(data);
    await assert.rejects(client.done, /store write failed: EIO/);
    await Promise.all(reader.inFlightFills());
    assert.deepEqual(await failures(metrics), { storage_error: 1 });
    assert.equal(await inner.stat(digest), undefined);
  });
});
