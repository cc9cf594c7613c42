/**
 * The blob paths of PullThroughRegistry against in-memory stores and a scripted upstream, where the
 * e2e tests can't pin the timing: a follower that joins behind the in-memory window, the final byte
 * released at verification (before the store commits), and a request that arrives during that commit.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { sha256Digest, type Digest } from '../domain/digest.js';
import type { RepoName } from '../domain/reference.js';
import { silentLogger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import type { BlobInfo, BlobStore, BlobWriter } from '../storage/blob-store.js';
import { MemoryBlobStore } from '../storage/memory/memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../storage/memory/memory-manifest-store.js';
import type { Upstream } from '../upstream/upstream.js';
import { PullThroughRegistry } from './pull-through.js';

const MiB = 1024 * 1024;
const key = { upstream: 'docker.io', repo: 'library/app' as RepoName };

/** An upstream whose one blob body the test feeds by hand; counts GETs. */
function scriptedUpstream(size: number) {
  const body = new PassThrough();
  let gets = 0;
  const upstream = {
    name: 'docker.io',
    getBlob: async () => {
      gets++;
      return { size, offset: 0, body: body as Readable };
    },
    close: async () => {},
  } as unknown as Upstream;
  return { upstream, body, gets: () => gets };
}

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
  const store: BlobStore = {
    stat: async (d) => (hidden.has(d) ? undefined : inner.stat(d)),
    open: (d, o) => inner.open(d, o),
    delete: (d) => inner.delete(d),
    list: () => inner.list(),
    create: async (): Promise<BlobWriter> => {
      const w = await inner.create();
      return {
        get written() {
          return w.written;
        },
        write: (data) => w.write(data),
        readAt: (...a) => w.readAt(...a),
        abort: () => w.abort(),
        release: () => w.release(),
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
      };
    },
  };
  return { store, verifiedSeen, finishCommit: () => openGate() };
}

function registry(blobs: BlobStore, upstream: Upstream, metrics = new Metrics({ collectDefault: false })) {
  const reader = new PullThroughRegistry({
    blobs,
    manifests: new MemoryManifestStore(),
    metadata: new MemoryMetadataStore(),
    upstreams: new Map([['docker.io', { upstream, tagTtlMs: 60_000 }]]),
    fillTimeoutMs: 60_000,
    resumeAttempts: 0,
    logger: silentLogger(),
    metrics,
  });
  return { reader, metrics };
}

/** Collects a stream; resolves with what arrived when it ends. */
function collect(stream: Readable): { got: Buffer[]; done: Promise<Buffer> } {
  const got: Buffer[] = [];
  stream.on('data', (c: Buffer) => got.push(c));
  return { got, done: new Promise((resolve, reject) => stream.once('end', () => resolve(Buffer.concat(got))).once('error', reject)) };
}

async function counter(metrics: Metrics, outcome: string): Promise<number> {
  const m = await metrics.registry.getSingleMetric('hubcache_cache_requests_total')!.get();
  return m.values.find((v) => v.labels.kind === 'blob' && v.labels.outcome === outcome)?.value ?? 0;
}

const signal = new AbortController().signal;
const turn = () => new Promise<void>((r) => setImmediate(r));

describe('PullThroughRegistry blob fills', () => {
  it('a follower that joins after the in-memory window moved on reads the start from the file, then follows: the whole blob, one upstream GET', async () => {
    const data = randomBytes(7 * MiB);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const { reader } = registry(new MemoryBlobStore(), up.upstream);
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

  it('the final byte goes out once the bytes are verified, before the store has committed them', async () => {
    const data = randomBytes(MiB);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const slow = slowCommitStore(new MemoryBlobStore());
    const { reader } = registry(slow.store, up.upstream);
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

  it('a request that arrives while a verified fill commits waits for the commit and is a hit, with no second download', async () => {
    const data = randomBytes(MiB);
    const digest = sha256Digest(data);
    const up = scriptedUpstream(data.length);
    const slow = slowCommitStore(new MemoryBlobStore());
    const { reader, metrics } = registry(slow.store, up.upstream);
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
