/**
 * The blob paths of PullThroughRegistry against in-memory stores and a scripted upstream, where the
 * e2e tests can't pin the timing: a follower that joins behind the in-memory window (reading the
 * cache's own spool: MemoryBlobStore's writers offer no local file), the final byte
 * released at verification (before the store commits), and a request that arrives during that commit.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { sha256Digest, type Digest } from '../domain/digest.js';
import type { RepoName } from '../domain/reference.js';
import { createLogger, silentLogger } from '../lib/logger.js';
import { Metrics } from '../observability/metrics.js';
import { isDirectBody, type BlobInfo, type BlobStore, type BlobWriter } from '../storage/blob-store.js';
import { MemoryBlobStore } from '../storage/memory/memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../storage/memory/memory-manifest-store.js';
import { StoreHealth } from '../storage/store-health.js';
import { VerifyingBlobWriter } from '../storage/verifying-writer.js';
import { storageErrnoError } from '../storage/testing/storage-faults.js';
import type { Upstream } from '../upstream/upstream.js';
import { PullThroughRegistry } from './pull-through.js';
import { bytesArrived, collect, collectDirect, decorateStore, registry, scriptedUpstream, turn } from './testing/fills.js';

const MiB = 1024 * 1024;
const key = { upstream: 'docker.io', repo: 'library/app' as RepoName };

/**
 * A store whose commits, once the bytes are verified, stay invisible until `open()` is called:
 * the time a real store spends in fsync and rename.
 */
function slowCommitStore(inner: MemoryBlobStore) {
  const hidden = new Set<Digest>();
  let openGate!: () => void;
  const gate = new Promise<void>((r) => (openGate = r));
  let verified!: () => void;
  const verifiedSeen = new Promise<void>((r) => (verified = r));
  const store = decorateStore(inner, {
    stat: async (d) => (hidden.has(d) ? undefined : inner.stat(d)),
    writer: (w) => ({
      async commit(expected, expectedSize, opts): Promise<BlobInfo> {
        hidden.add(expected);
        const info = await w.commit(expected, expectedSize, {
          onVerified: () => {
            opts?.onVerified?.();
            verified();
          },
        });
        await gate;
        hidden.delete(expected);
        return info;
      },
    }),
  });
  return { store, verifiedSeen, finishCommit: () => openGate() };
}

async function counter(metrics: Metrics, outcome: string): Promise<number> {
  const m = await metrics.registry.getSingleMetric('hubcache_cache_requests_total')!.get();
  return m.values.find((v) => v.labels.kind === 'blob' && v.labels.outcome === outcome)?.value ?? 0;
}

const signal = new AbortController().signal;

describe('PullThroughRegistry blob fills', () => {
  it('a follower that joins after the in-memory window moved on reads the start from the spool, then follows: the whole blob, one upstream GET', async () => {
    const data = randomBytes(7 * MiB);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const { reader } = registry(new MemoryBlobStore(), up.upstream, { metrics: new Metrics({ collectDefault: false }) });
    const first = collect((await reader.getBlob(key, digest, { signal })).body!);
    // 6 MiB in: more than the 4 MiB window, so its oldest bytes were evicted once written.
    for (let p = 0; p < 6 * MiB; p += 64 * 1024) up.body.write(data.subarray(p, p + 64 * 1024));
    while (first.got.reduce((n, c) => n + c.length, 0) < 6 * MiB) await turn();
    const late = collect((await reader.getBlob(key, digest, { signal })).body!);
    up.body.end(data.subarray(6 * MiB));
    assert.ok((await first.done).equals(data));
    assert.ok((await late.done).equals(data));
    assert.equal(up.gets(), 1);
  });

  it('a fill creates its store writer for the digest it downloads (an S3 store then uploads straight to the blob\'s key)', async () => {
    const data = randomBytes(MiB);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const inner = new MemoryBlobStore();
    const created: Array<Digest | undefined> = [];
    const store: BlobStore = {
      ...decorateStore(inner, {}),
      create: (opts) => {
        created.push(opts?.digest);
        return inner.create(opts);
      },
    };
    const { reader } = registry(store, up.upstream, { metrics: new Metrics({ collectDefault: false }) });
    const client = collect((await reader.getBlob(key, digest, { signal })).body!);
    up.body.end(data);
    assert.ok((await client.done).equals(data));
    await Promise.all(reader.inFlightFills());
    assert.deepEqual(created, [digest]);
    assert.deepEqual(await inner.stat(digest), { digest, size: data.length });
  });

  it('a store that fails at the commit after the bytes were verified (fsync EIO): the reader still gets every byte; storage_error; nothing stored', async () => {
    const data = randomBytes(MiB);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const inner = new MemoryBlobStore();
    const store = decorateStore(inner, {
      writer: (w) => ({
        commit: async (_d, _s, o) => {
          o?.onVerified?.();
          await w.abort();
          throw storageErrnoError('EIO', 'fsync');
        },
      }),
    });
    const metrics = new Metrics({ collectDefault: false });
    const { reader } = registry(store, up.upstream, { metrics });
    const client = collect((await reader.getBlob(key, digest, { signal })).body!);
    up.body.end(data);
    assert.ok((await client.done).equals(data));
    await Promise.all(reader.inFlightFills());
    assert.equal(await metric(metrics, 'hubcache_fills_failed_total', { reason: 'storage_error' }), 1);
    assert.equal(await metric(metrics, 'hubcache_fills_in_flight'), 0);
    assert.equal(await inner.stat(digest), undefined);
  });

  it("'fill committed' says how often and how long the download waited for the store: a slow store's 8 MiB fill waits, a 1 MiB fill never does", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({ level: 'info', format: 'json', stream: new Writable({ write: (chunk: Buffer, _e, cb) => (lines.push(JSON.parse(chunk.toString())), cb()) }) });
    const committed = async (digest: Digest) => {
      while (!lines.some((l) => l.message === 'fill committed' && l.digest === digest)) await turn();
      return lines.find((l) => l.message === 'fill committed' && l.digest === digest)!;
    };
    // Each write of the slow store finishes 50 event-loop turns late: the fill reads on meanwhile until 2 MiB (8 pieces) are queued.
    const slow = decorateStore(new MemoryBlobStore(), {
      writer: (w) => ({
        write: async (d) => {
          for (let i = 0; i < 50; i++) await turn();
          return w.write(d);
        },
      }),
    });
    for (const [store, size, waits] of [
      [slow, 8 * MiB, 'some'],
      [new MemoryBlobStore(), MiB, 'none'],
    ] as const) {
      const data = randomBytes(size);
      const digest = sha256Digest(data);
      const up = scriptedUpstream(data.length);
      const { reader } = registry(store, up.upstream, { metrics: new Metrics({ collectDefault: false }), logger });
      const client = collect((await reader.getBlob(key, digest, { signal })).body!);
      // 256 KiB a turn, as a socket delivers: the fill reads each piece while the store's first write is still out.
      for (let at = 0; at < data.length; at += 256 * 1024) {
        up.body.write(data.subarray(at, at + 256 * 1024));
        await turn();
      }
      up.body.end();
      assert.ok((await client.done).equals(data));
      await Promise.all(reader.inFlightFills());
      const line = await committed(digest);
      assert.equal(typeof line.storeWaitMs, 'number');
      if (waits === 'some') assert.ok((line.storeWaits as number) >= 1, `storeWaits ${String(line.storeWaits)}`);
      else assert.deepEqual([line.storeWaits, line.storeWaitMs], [0, 0]);
    }
  });

  it('the final byte goes out once the bytes are verified, before the store has committed them', async () => {
    const data = randomBytes(MiB);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const slow = slowCommitStore(new MemoryBlobStore());
    const { reader } = registry(slow.store, up.upstream, { metrics: new Metrics({ collectDefault: false }) });
    const client = collect((await reader.getBlob(key, digest, { signal })).body!);
    up.body.write(data.subarray(0, data.length - 1));
    while (client.got.reduce((n, c) => n + c.length, 0) < data.length - 1) await turn();
    await turn();
    assert.equal(client.got.reduce((n, c) => n + c.length, 0), data.length - 1, 'the last byte waits for verification');
    up.body.end(data.subarray(data.length - 1));
    await slow.verifiedSeen;
    for (let i = 0; i < 50 && client.got.reduce((n, c) => n + c.length, 0) < data.length; i++) await turn();
    assert.ok(Buffer.concat(client.got).equals(data), 'every byte out while the commit is still pending');
    assert.equal(await slow.store.stat(digest), undefined, 'not visible yet');
    slow.finishCommit();
    assert.ok((await client.done).equals(data));
  });

  it('the final byte goes out as soon as every byte arrived and hashes to the digest, while the store still writes them; the commit follows', async () => {
    const data = randomBytes(MiB);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const inner = new MemoryBlobStore();
    // A backend whose writes stay in flight until released: a slow disk or a busy thread pool.
    let hold = false;
    let release!: () => void;
    let holding!: () => void;
    const held = new Promise<void>((r) => (holding = r));
    const stored: Buffer[] = [];
    const store: BlobStore = {
      ...decorateStore(inner, {}),
      create: async () =>
        new VerifyingBlobWriter({
          write: async (chunks) => {
            if (hold) {
              holding();
              await new Promise<void>((r) => (release = r));
            }
            stored.push(...chunks.map((c) => Buffer.from(c)));
          },
          publish: async (d) => {
            const w = await inner.create();
            await w.write(Buffer.concat(stored));
            await w.commit(d);
          },
          discard: async () => {},
        }),
    };
    const { reader } = registry(store, up.upstream, { metrics: new Metrics({ collectDefault: false }) });
    const client = collect((await reader.getBlob(key, digest, { signal })).body!);
    up.body.write(data.subarray(0, data.length / 2));
    await bytesArrived(client, data.length / 2);
    hold = true;
    up.body.end(data.subarray(data.length / 2));
    await held;
    assert.ok((await client.done).equals(data), 'every byte out, the last one included, with a write still in flight');
    assert.equal(await inner.stat(digest), undefined, 'not committed: the store has not written everything');
    release();
    await Promise.all(reader.inFlightFills());
    assert.equal((await inner.stat(digest))?.size, data.length);
  });

  it('bytes that do not hash to the digest: the final byte is held until the commit finds the mismatch, and the client is aborted', async () => {
    const data = randomBytes(MiB);
    const wrong = Buffer.from(data);
    wrong[wrong.length - 1]! ^= 0xff;
    const up = scriptedUpstream(data.length);
    const { reader } = registry(new MemoryBlobStore(), up.upstream, { metrics: new Metrics({ collectDefault: false }) });
    const client = collect((await reader.getBlob(key, sha256Digest(data), { signal })).body!);
    up.body.end(wrong);
    await assert.rejects(client.done);
    assert.ok(client.got.reduce((n, c) => n + c.length, 0) < data.length, 'the final byte never went out');
  });

  it('a request that arrives while a verified fill commits waits for the commit and is a hit, with no second download', async () => {
    const data = randomBytes(MiB);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const slow = slowCommitStore(new MemoryBlobStore());
    const { reader, metrics } = registry(slow.store, up.upstream, { metrics: new Metrics({ collectDefault: false }) });
    const first = collect((await reader.getBlob(key, digest, { signal })).body!);
    up.body.end(data);
    await slow.verifiedSeen;
    let answered = false;
    const second = reader.getBlob(key, digest, { signal }).then((r) => ((answered = true), r));
    await turn();
    assert.equal(answered, false, 'it waits for the commit');
    slow.finishCommit();
    const result = await second;
    assert.equal(result.source, 'cache');
    assert.ok((await collect(result.body!).done).equals(data));
    assert.ok((await first.done).equals(data));
    assert.equal(up.gets(), 1);
    assert.equal(await counter(metrics, 'miss'), 1);
    assert.equal(await counter(metrics, 'hit'), 1);
  });
});

// ---- issue #11, point 8: bounded concurrent fills, a fair queue, the abandoned-fill budget -------

interface ScriptedGet {
  readonly digest: Digest;
  readonly body: PassThrough;
  readonly data: Buffer;
  /** Resolves when the fill aborted this upstream request (it never does for a finished one). */
  readonly aborted: Promise<void>;
}

/** An upstream of several blobs whose bodies the test feeds by hand; records GETs and HEADs. */
function scriptedBlobs(blobs: readonly Buffer[]) {
  const byDigest = new Map(blobs.map((b) => [sha256Digest(b), b] as const));
  const gets: ScriptedGet[] = [];
  const heads: Digest[] = [];
  const getWaiters: Array<() => void> = [];
  const upstream = {
    name: 'docker.io',
    headBlob: async (_repo: RepoName, digest: Digest) => {
      heads.push(digest);
      return { size: byDigest.get(digest)!.length };
    },
    getBlob: async (_repo: RepoName, digest: Digest, opts: { signal?: AbortSignal } = {}) => {
      opts.signal?.throwIfAborted();
      const data = byDigest.get(digest)!;
      const body = new PassThrough();
      // Like undici: aborting the request's signal destroys the body being read.
      const aborted = new Promise<void>((resolve) =>
        opts.signal?.addEventListener('abort', () => {
          body.destroy(opts.signal!.reason as Error);
          resolve();
        }),
      );
      gets.push({ digest, body, data, aborted });
      for (const w of getWaiters.splice(0)) w();
      return { size: data.length, offset: 0, body: body as Readable };
    },
    close: async () => {},
  } as unknown as Upstream;
  return {
    upstream,
    gets,
    heads,
    getsOf: (d: Digest) => gets.filter((g) => g.digest === d),
    /** Resolves once `n` GETs have been made in all. */
    async getCount(n: number): Promise<ScriptedGet[]> {
      while (gets.length < n) await new Promise<void>((r) => getWaiters.push(r));
      return gets;
    },
  };
}

/** The abandoned-fill grace, fired by the test instead of a clock. */
function manualTimers() {
  const pending = new Set<() => void>();
  return {
    schedule: (_ms: number, fn: () => void) => {
      pending.add(fn);
      return () => void pending.delete(fn);
    },
    get pending() {
      return pending.size;
    },
    /** The grace ends now for every download waiting on one. */
    fire() {
      const due = [...pending];
      pending.clear();
      for (const fn of due) fn();
    },
  };
}

function limitedRegistry(opts: { blobs?: MemoryBlobStore; upstream: Upstream; maxConcurrentFills?: number; minProgressToFinish?: number; maxRemainingToFinish?: number; storeHealth?: StoreHealth }) {
  const metrics = new Metrics({ collectDefault: false });
  const timers = manualTimers();
  const store = opts.blobs ?? new MemoryBlobStore();
  const reader = new PullThroughRegistry({
    blobs: store,
    manifests: new MemoryManifestStore(),
    metadata: new MemoryMetadataStore(),
    upstreams: new Map([['docker.io', { upstream: opts.upstream, tagTtlMs: 60_000 }]]),
    fillTimeoutMs: 60_000,
    resumeAttempts: 0,
    maxConcurrentFills: opts.maxConcurrentFills ?? 32,
    abandonedFills: { graceMs: 5_000, minProgressToFinish: opts.minProgressToFinish ?? 0.5, maxRemainingToFinish: opts.maxRemainingToFinish ?? 0 },
    schedule: timers.schedule,
    logger: silentLogger(),
    metrics,
    ...(opts.storeHealth ? { storeHealth: opts.storeHealth } : {}),
  });
  return { reader, metrics, timers, store };
}

/** A metric's value (a counter or gauge; a histogram's `_count`), optionally for one label set. */
async function metric(metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = await metrics.registry.getSingleMetric(name)!.get();
  const want = name.endsWith('_seconds') ? `${name}_count` : name;
  const v = m.values.find((x) => ((x as { metricName?: string }).metricName ?? name) === want && Object.entries(labels).every(([k, val]) => x.labels[k] === val));
  return v?.value ?? 0;
}

async function fillCounters(metrics: Metrics) {
  return {
    queued: await metric(metrics, 'hubcache_fills_queued'),
    inFlight: await metric(metrics, 'hubcache_fills_in_flight'),
    dropped: await metric(metrics, 'hubcache_fills_abandoned_total', { decision: 'dropped' }),
    cancelled: await metric(metrics, 'hubcache_fills_abandoned_total', { decision: 'cancelled' }),
    continued: await metric(metrics, 'hubcache_fills_abandoned_total', { decision: 'continued' }),
    failed: (await metrics.registry.getSingleMetric('hubcache_fills_failed_total')!.get()).values.reduce((n, v) => n + v.value, 0),
    committed: await metric(metrics, 'hubcache_fills_committed_total'),
  };
}

const blob = (n: number) => randomBytes(n);

describe('PullThroughRegistry blob fills read through writeTo (the HTTP handler\'s path, issue #16)', () => {
  it('followers behind the window read the spool into a reused buffer, then follow from memory: every byte, in order, one upstream GET', async () => {
    const data = randomBytes(7 * MiB);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const { reader } = registry(new MemoryBlobStore(), up.upstream, { metrics: new Metrics({ collectDefault: false }) });
    const first = collectDirect((await reader.getBlob(key, digest, { signal })).body!);
    for (let p = 0; p < 6 * MiB; p += 64 * 1024) up.body.write(data.subarray(p, p + 64 * 1024));
    await bytesArrived(first, 6 * MiB);
    // Two late followers: 6 MiB behind, more than the window holds, read in several spool reads.
    const late = [collectDirect((await reader.getBlob(key, digest, { signal })).body!), collectDirect((await reader.getBlob(key, digest, { signal })).body!)];
    up.body.end(data.subarray(6 * MiB));
    assert.ok((await first.done).equals(data));
    for (const l of late) assert.ok((await l.done).equals(data));
    assert.equal(up.gets(), 1);
  });

  it('counts the bytes it wrote once per batch, not once per upstream chunk: the counts add up to the blob', async () => {
    const data = randomBytes(2 * MiB);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const { reader } = registry(new MemoryBlobStore(), up.upstream, { metrics: new Metrics({ collectDefault: false }) });
    const body = (await reader.getBlob(key, digest, { signal })).body!;
    assert.ok(isDirectBody(body));
    const counts: number[] = [];
    const got: Buffer[] = [];
    const dest = new Writable({
      write(chunk: Buffer, _enc, cb) {
        got.push(Buffer.from(chunk));
        cb();
      },
    });
    const done = body.writeTo(dest, (n) => counts.push(n));
    // 32 upstream chunks of 16 KiB, one per event-loop turn (each its own chunk in the window),
    // then the rest: followers are woken per 256 KiB, so they go out in a few batches.
    for (let p = 0; p < 512 * 1024; p += 16 * 1024) {
      up.body.write(data.subarray(p, p + 16 * 1024));
      await turn();
    }
    up.body.end(data.subarray(512 * 1024));
    await done;
    assert.ok(Buffer.concat(got).equals(data));
    assert.equal(counts.reduce((a, b) => a + b, 0), data.length);
    assert.ok(counts.length < 16, `one count per batch (${counts.length} counts for 33 upstream chunks)`);
  });

  it('the final byte waits for verification: bytes that do not hash to the digest reject writeTo without it', async () => {
    const data = randomBytes(MiB);
    const wrong = Buffer.from(data);
    wrong[wrong.length - 1]! ^= 0xff;
    const up = scriptedUpstream(data.length);
    const { reader } = registry(new MemoryBlobStore(), up.upstream, { metrics: new Metrics({ collectDefault: false }) });
    const client = collectDirect((await reader.getBlob(key, sha256Digest(data), { signal })).body!);
    up.body.end(wrong);
    await assert.rejects(client.done);
    assert.ok(client.got.reduce((n, c) => n + c.length, 0) < data.length, 'the final byte never went out');
  });

  it('a destination that closes mid-blob rejects writeTo and lets go of the fill (its reader is no longer counted)', async () => {
    const data = randomBytes(2 * MiB);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const { reader } = registry(new MemoryBlobStore(), up.upstream, { metrics: new Metrics({ collectDefault: false }) });
    const body = (await reader.getBlob(key, digest, { signal })).body!;
    assert.ok(isDirectBody(body));
    const dest = new PassThrough();
    const done = body.writeTo(dest);
    up.body.write(data.subarray(0, MiB));
    await new Promise((r) => dest.once('data', r));
    dest.destroy();
    await assert.rejects(done, /closed/);
    assert.ok(body.destroyed, 'the reader is destroyed once writeTo ends');
    up.body.end(data.subarray(MiB));
    await Promise.all(reader.inFlightFills());
  });
});

describe('PullThroughRegistry blob fills: bounded concurrency and abandoned downloads (issue #11, point 8)', () => {
  it('at most maxConcurrentFills downloads run at once; the others wait, untouched upstream, and start first come, first served', async () => {
    const data = [blob(64 * 1024), blob(64 * 1024), blob(64 * 1024), blob(64 * 1024)];
    const [a, b, c, d] = data.map((x) => sha256Digest(x)) as [Digest, Digest, Digest, Digest];
    const up = scriptedBlobs(data);
    const { reader, metrics } = limitedRegistry({ upstream: up.upstream, maxConcurrentFills: 2 });
    const ra = collect((await reader.getBlob(key, a, { signal })).body!);
    const rb = collect((await reader.getBlob(key, b, { signal })).body!);
    const pc = reader.getBlob(key, c, { signal });
    const pd = reader.getBlob(key, d, { signal });
    await turn();
    assert.deepEqual(up.gets.map((g) => g.digest), [a, b], 'two downloads, nothing asked for c and d yet');
    assert.equal((await fillCounters(metrics)).queued, 2);
    up.gets[0]!.body.end(data[0]);
    assert.ok((await ra.done).equals(data[0]!));
    await up.getCount(3);
    assert.equal(up.gets[2]!.digest, c, 'c was queued first, so it goes first');
    const rc = collect((await pc).body!);
    assert.equal(up.gets.length, 3, 'd still waits: b and c hold the slots');
    assert.equal((await fillCounters(metrics)).queued, 1);
    up.gets[1]!.body.end(data[1]);
    assert.ok((await rb.done).equals(data[1]!));
    await up.getCount(4);
    const rd = collect((await pd).body!);
    up.gets[2]!.body.end(data[2]);
    assert.ok((await rc.done).equals(data[2]!));
    up.gets[3]!.body.end(data[3]);
    assert.ok((await rd.done).equals(data[3]!));
    await Promise.all(reader.inFlightFills());
    const m = await fillCounters(metrics);
    assert.deepEqual([m.queued, m.inFlight, m.committed, m.dropped, m.cancelled], [0, 0, 4, 0, 0]);
    assert.equal(await metric(metrics, 'hubcache_fills_queue_wait_seconds'), 4, 'every started download observed its wait');
  });

  it('while the store is degraded, each client of a blob gets its own verified pass-through, holding a download slot until its body ends', async () => {
    const data = [blob(64 * 1024), blob(64 * 1024)];
    const [a, b] = data.map((x) => sha256Digest(x)) as [Digest, Digest];
    const up = scriptedBlobs(data);
    const health = new StoreHealth({ probe: () => Promise.reject(storageErrnoError('ENOSPC', 'write')), recheckMs: 60_000 });
    health.fault(storageErrnoError('ENOSPC', 'write'));
    const { reader, metrics, store } = limitedRegistry({ upstream: up.upstream, maxConcurrentFills: 1, storeHealth: health });
    const first = collect((await reader.getBlob(key, a, { signal })).body!);
    const second = reader.getBlob(key, a, { signal });
    const other = reader.getBlob(key, b, { signal });
    await turn();
    assert.equal(up.gets.length, 1, 'one slot: the others wait for it, upstream not asked yet');
    up.gets[0]!.body.end(data[0]);
    assert.ok((await first.done).equals(data[0]!));
    await up.getCount(2);
    assert.equal(up.gets[1]!.digest, a, 'the same blob again: a pass-through is not shared');
    up.gets[1]!.body.end(data[0]);
    assert.ok((await collect((await second).body!).done).equals(data[0]!));
    await up.getCount(3);
    up.gets[2]!.body.end(data[1]);
    assert.ok((await collect((await other).body!).done).equals(data[1]!));
    assert.equal(await metric(metrics, 'hubcache_passthrough_requests_total', { kind: 'blob' }), 3);
    assert.equal(await metric(metrics, 'hubcache_passthrough_bytes_total', { kind: 'blob' }), 3 * 64 * 1024);
    assert.equal(await metric(metrics, 'hubcache_fills_in_flight'), 0, 'pass-throughs are not fills');
    assert.equal(await store.stat(a), undefined);
    assert.equal(await store.stat(b), undefined);
  });

  it('requests for a digest already queued join the queued download: one upstream GET; one of its clients leaving keeps it queued', async () => {
    const first = blob(64 * 1024);
    const queued = blob(256 * 1024);
    const q = sha256Digest(queued);
    const up = scriptedBlobs([first, queued]);
    const { reader, metrics, timers } = limitedRegistry({ upstream: up.upstream, maxConcurrentFills: 1 });
    const ra = collect((await reader.getBlob(key, sha256Digest(first), { signal })).body!);
    const leaver = new AbortController();
    const gone = reader.getBlob(key, q, { signal: leaver.signal });
    const stays = reader.getBlob(key, q, { signal });
    assert.equal(await metric(metrics, 'hubcache_coalesced_requests_total', { kind: 'blob' }), 1);
    leaver.abort();
    await assert.rejects(gone, (err: Error & { code?: string }) => err.code === 'UNAVAILABLE');
    assert.equal(timers.pending, 0);
    up.gets[0]!.body.end(first);
    await ra.done;
    await up.getCount(2);
    up.gets[1]!.body.end(queued);
    assert.ok((await collect((await stays).body!).done).equals(queued));
    assert.equal(up.getsOf(q).length, 1);
    // The client has the last byte once the bytes are verified, before the store has written them all.
    await Promise.all(reader.inFlightFills());
    const m = await fillCounters(metrics);
    assert.deepEqual([m.queued, m.dropped, m.committed], [0, 0, 2]);
  });

  it('a queued download whose clients all leave is dropped at once without asking upstream; the next request starts afresh', async () => {
    const first = blob(64 * 1024);
    const queued = blob(64 * 1024);
    const q = sha256Digest(queued);
    const up = scriptedBlobs([first, queued]);
    const { reader, metrics, timers } = limitedRegistry({ upstream: up.upstream, maxConcurrentFills: 1 });
    const ra = collect((await reader.getBlob(key, sha256Digest(first), { signal })).body!);
    const client = new AbortController();
    const waiting = reader.getBlob(key, q, { signal: client.signal });
    assert.equal((await fillCounters(metrics)).queued, 1);
    client.abort();
    await assert.rejects(waiting, (err: Error & { code?: string }) => err.code === 'UNAVAILABLE');
    assert.equal(timers.pending, 0, 'no grace for a queued download: nothing was downloaded');
    let m = await fillCounters(metrics);
    assert.deepEqual([m.queued, m.dropped, m.failed], [0, 1, 0]);
    up.gets[0]!.body.end(first);
    await ra.done;
    await Promise.all(reader.inFlightFills());
    assert.equal(up.getsOf(q).length, 0, 'upstream never asked for the dropped blob');
    const again = reader.getBlob(key, q, { signal });
    await up.getCount(2);
    up.gets[1]!.body.end(queued);
    assert.ok((await collect((await again).body!).done).equals(queued));
    await Promise.all(reader.inFlightFills());
    m = await fillCounters(metrics);
    assert.deepEqual([m.queued, m.inFlight, m.committed], [0, 0, 2]);
  });

  it('a running download whose clients all left is cancelled when the grace ends, outside the budget: upstream request aborted, temp data removed, the next request downloads afresh', async () => {
    const data = blob(MiB);
    const digest = sha256Digest(data);
    const up = scriptedBlobs([data]);
    const store = new MemoryBlobStore();
    const { reader, metrics, timers } = limitedRegistry({ blobs: store, upstream: up.upstream, minProgressToFinish: 0.5, maxRemainingToFinish: 0 });
    const stream = (await reader.getBlob(key, digest, { signal })).body!;
    const client = collect(stream);
    const fills = reader.inFlightFills();
    up.gets[0]!.body.write(data.subarray(0, 256 * 1024));
    await bytesArrived(client, 256 * 1024);
    stream.destroy(); // the client walks away
    assert.equal(timers.pending, 1, 'the grace runs');
    assert.equal(store.pendingWrites, 1);
    timers.fire();
    await up.gets[0]!.aborted;
    await Promise.all(fills);
    assert.equal(store.pendingWrites, 0, 'the temp data is gone');
    assert.equal(await store.stat(digest), undefined);
    let m = await fillCounters(metrics);
    assert.deepEqual([m.cancelled, m.inFlight, m.failed, m.committed], [1, 0, 0, 0]);
    const again = collect((await reader.getBlob(key, digest, { signal })).body!);
    assert.equal(up.gets.length, 2, 'a fresh download');
    up.gets[1]!.body.end(data);
    assert.ok((await again.done).equals(data));
    await Promise.all(reader.inFlightFills());
    m = await fillCounters(metrics);
    assert.deepEqual([m.cancelled, m.committed], [1, 1]);
  });

  it('a client that comes back within the grace (a resumed Range request) keeps the download: one upstream GET, nothing cancelled', async () => {
    const data = blob(MiB);
    const digest = sha256Digest(data);
    const up = scriptedBlobs([data]);
    const { reader, metrics, timers } = limitedRegistry({ upstream: up.upstream, minProgressToFinish: 1, maxRemainingToFinish: 0 });
    const stream = (await reader.getBlob(key, digest, { signal })).body!;
    const client = collect(stream);
    up.gets[0]!.body.write(data.subarray(0, 256 * 1024));
    await bytesArrived(client, 256 * 1024);
    stream.destroy();
    assert.equal(timers.pending, 1);
    const resumed = await reader.getBlob(key, digest, { signal, range: (size) => ({ start: 256 * 1024, end: size - 1 }) });
    assert.equal(timers.pending, 0, 'a client is back: the grace stops');
    timers.fire();
    const rest = collect(resumed.body!);
    up.gets[0]!.body.end(data.subarray(256 * 1024));
    assert.ok((await rest.done).equals(data.subarray(256 * 1024)));
    await Promise.all(reader.inFlightFills());
    assert.equal(up.gets.length, 1);
    const m = await fillCounters(metrics);
    assert.deepEqual([m.cancelled, m.continued, m.committed], [0, 0, 1]);
  });

  it('one client leaving never stops a download another client reads: no grace even starts', async () => {
    const data = blob(MiB);
    const digest = sha256Digest(data);
    const up = scriptedBlobs([data]);
    const { reader, metrics, timers } = limitedRegistry({ upstream: up.upstream, minProgressToFinish: 1, maxRemainingToFinish: 0 });
    const leaving = (await reader.getBlob(key, digest, { signal })).body!;
    const staying = collect((await reader.getBlob(key, digest, { signal })).body!);
    up.gets[0]!.body.write(data.subarray(0, 1024));
    await bytesArrived(staying, 1024);
    leaving.destroy();
    assert.equal(timers.pending, 0);
    up.gets[0]!.body.end(data.subarray(1024));
    assert.ok((await staying.done).equals(data));
    await Promise.all(reader.inFlightFills());
    const m = await fillCounters(metrics);
    assert.deepEqual([m.cancelled, m.continued, m.committed], [0, 0, 1]);
  });

  for (const c of [
    { why: 'at least minProgressToFinish has arrived', size: MiB, sent: 600 * 1024, budget: { minProgressToFinish: 0.5, maxRemainingToFinish: 0 } },
    { why: 'at most maxRemainingToFinish is left (a small blob)', size: 512 * 1024, sent: 1024, budget: { minProgressToFinish: 1, maxRemainingToFinish: MiB } },
  ]) {
    it(`an abandoned download goes on and is committed when ${c.why}`, async () => {
      const data = blob(c.size);
      const digest = sha256Digest(data);
      const up = scriptedBlobs([data]);
      const store = new MemoryBlobStore();
      const { reader, metrics, timers } = limitedRegistry({ blobs: store, upstream: up.upstream, ...c.budget });
      const stream = (await reader.getBlob(key, digest, { signal })).body!;
      const client = collect(stream);
      const fills = reader.inFlightFills();
      up.gets[0]!.body.write(data.subarray(0, c.sent));
      await bytesArrived(client, c.sent);
      stream.destroy();
      timers.fire();
      assert.equal((await fillCounters(metrics)).continued, 1);
      up.gets[0]!.body.end(data.subarray(c.sent));
      await Promise.all(fills);
      assert.deepEqual(await store.stat(digest), { digest, size: c.size });
      const m = await fillCounters(metrics);
      assert.deepEqual([m.cancelled, m.continued, m.committed, m.inFlight], [0, 1, 1, 0]);
    });
  }

  it('a HEAD of a blob whose download is queued asks upstream instead of waiting, and a HEAD never starts a download', async () => {
    const first = blob(64 * 1024);
    const other = blob(1000);
    const o = sha256Digest(other);
    const up = scriptedBlobs([first, other]);
    const { reader, metrics } = limitedRegistry({ upstream: up.upstream, maxConcurrentFills: 1 });
    const ra = collect((await reader.getBlob(key, sha256Digest(first), { signal })).body!);
    const queued = reader.getBlob(key, o, { signal });
    const head = await reader.getBlob(key, o, { signal, head: true });
    assert.equal(head.size, 1000);
    assert.deepEqual(up.heads, [o]);
    assert.equal(up.getsOf(o).length, 0);
    up.gets[0]!.body.end(first);
    await ra.done;
    await up.getCount(2);
    up.gets[1]!.body.end(other);
    await collect((await queued).body!).done;
    await Promise.all(reader.inFlightFills());
    const m = await fillCounters(metrics);
    assert.deepEqual([m.committed, m.queued], [2, 0]);
  });

  it('shutdown (closeFillQueue) drops queued downloads with UNAVAILABLE, refuses new ones, and lets the running one finish', async () => {
    const first = blob(64 * 1024);
    const queued = blob(64 * 1024);
    const later = blob(64 * 1024);
    const up = scriptedBlobs([first, queued, later]);
    const { reader, metrics } = limitedRegistry({ upstream: up.upstream, maxConcurrentFills: 1 });
    const ra = collect((await reader.getBlob(key, sha256Digest(first), { signal })).body!);
    const waiting = reader.getBlob(key, sha256Digest(queued), { signal });
    reader.closeFillQueue();
    await assert.rejects(waiting, (err: Error & { code?: string }) => err.code === 'UNAVAILABLE');
    await assert.rejects(reader.getBlob(key, sha256Digest(later), { signal }), (err: Error & { code?: string }) => err.code === 'UNAVAILABLE');
    up.gets[0]!.body.end(first);
    assert.ok((await ra.done).equals(first));
    await Promise.all(reader.inFlightFills());
    assert.equal(up.gets.length, 1);
    const m = await fillCounters(metrics);
    assert.deepEqual([m.queued, m.inFlight, m.committed, m.dropped], [0, 0, 1, 0], 'shutdown drops are not abandoned downloads');
  });
});
