/**
 * Eviction through the HTTP layer (issue #13): evicted content is fetched again transparently with
 * identical bytes, a blob being served or downloaded is never evicted, and under a concurrent pull
 * load with a tight cap the store never exceeds the cap by more than the blobs in flight.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { get, type IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import type { Digest } from '../../src/domain/digest.js';
import type { BlobStore, BlobWriter, CreateOptions } from '../../src/storage/blob-store.js';
import { MemoryBlobStore } from '../../src/storage/memory/memory-blob-store.js';
import { Evictor } from '../../src/cache/evictor.js';
import { silentLogger } from '../../src/lib/logger.js';
import { withApp, type AppHarness } from '../support/app-harness.js';
import { holdUpstream, putImage, seededBytes } from '../support/oci-fixtures.js';

const KiB = 1024;

/** An evictor with a 1-byte cap over the harness's stores: a gc pass evicts everything evictable. */
const evictAll = (hc: AppHarness) =>
  new Evictor({ storage: hc.stores, maxBytes: 1, highWatermark: 95, lowWatermark: 85, tagRetentionMs: 90 * 86_400_000, concurrency: 4, clock: hc.clock.now, logger: silentLogger(), claimBlob: (d) => hc.cache.claimForEviction(d) });

describe('eviction', () => {
  it('evicted blobs and manifests are fetched again transparently: identical bytes, upstream asked once more', async () => {
    await withApp({}, async (hc) => {
      const img = putImage(hc.registry, 'library/app', 'v1', { seed: 'evict-again', layerSizes: [200 * KiB, 50 * KiB] });
      const paths = [`/v2/library/app/manifests/v1`, ...[img.config, ...img.layers].map((b) => `/v2/library/app/blobs/${b.digest}`)];
      const first = [];
      for (const p of paths) first.push(await hc.pull(p));
      await hc.settle();
      const gets = () => hc.upstreamServer.count((r) => r.method === 'GET');
      const before = gets();
      hc.clock.advance(60_000);
      const report = await evictAll(hc).run({ mode: 'gc' });
      assert.deepEqual(new Set(report.removed.map((r) => r.kind)), new Set(['blob', 'manifest', 'tag']));
      assert.equal(hc.stores.blobs.usage!()!.bytes, 0);
      assert.equal(await hc.stores.manifests.get(img.digest as Digest), undefined);
      assert.deepEqual(await hc.stores.metadata.listTags({ upstream: 'docker.io', repo: 'library/app' as never }), []);
      for (const [i, p] of paths.entries()) {
        const again = await hc.pull(p);
        assert.equal(again.status, 200, p);
        assert.ok(again.body.equals(first[i]!.body), `${p}: identical bytes`);
        assert.equal(again.cache, 'miss');
      }
      await hc.settle();
      assert.equal(gets() - before, paths.length, 'each asked upstream exactly once more');
    });
  });

  it('a blob being served is not evicted until its response is over; one being downloaded is never claimed', async () => {
    await withApp({}, async (hc) => {
      const evictor = evictAll(hc);
      const big = seededBytes('served', 32 * 1024 * KiB);
      const digest = hc.registry.putBlob(big);
      const path = `/v2/library/app/blobs/${digest}`;
      assert.ok((await hc.pull(path)).body.equals(big));
      await hc.settle();
      // A client reads the first chunk and stops (TCP backpressure): its response holds the blob.
      const res = await new Promise<IncomingMessage>((resolve, reject) => get(`${hc.url}${path}`, resolve).on('error', reject));
      const firstChunk = await new Promise<Buffer>((resolve) => res.once('data', (c: Buffer) => (res.pause(), resolve(c))));
      const during = await evictor.run({ mode: 'gc' });
      assert.deepEqual(during.removed.filter((r) => r.kind === 'blob'), []);
      assert.ok(await hc.stores.blobs.stat(digest), 'kept while served');
      const rest: Buffer[] = [firstChunk];
      res.on('data', (c: Buffer) => rest.push(c));
      res.resume();
      await once(res, 'end');
      assert.ok(Buffer.concat(rest).equals(big), 'the response finished whole');
      const after = await evictor.run({ mode: 'gc' });
      assert.deepEqual(after.removed.filter((r) => r.kind === 'blob').map((r) => r.digest), [digest]);

      // A download in flight: not claimable while it runs.
      const other = hc.registry.putBlob(seededBytes('filling', 100 * KiB));
      const hold = holdUpstream(hc.registry, (req) => req.method === 'GET' && req.url!.endsWith(other));
      const pending = hc.pull(`/v2/library/app/blobs/${other}`);
      await hold.parked(1);
      assert.equal(hc.cache.claimForEviction(other as Digest), undefined);
      hold.release();
      assert.equal((await pending).status, 200);
    });
  });

  it('the cap holds under a concurrent pull load: the store never exceeds it by more than the blobs in flight', async () => {
    const blobSize = 20 * KiB;
    const cap = 30 * blobSize;
    const fills = 4;
    const inner = new MemoryBlobStore();
    let maxSeen = 0;
    // Reads the store's size right after every commit: the moment it peaks.
    const observed: BlobStore = {
      stat: (d) => inner.stat(d),
      open: (d, o) => inner.open(d, o),
      delete: (d) => inner.delete(d),
      list: () => inner.list(),
      usage: () => inner.usage(),
      create: async (opts?: CreateOptions): Promise<BlobWriter> => {
        const w = await inner.create(opts);
        return {
          get written() {
            return w.written;
          },
          write: (data) => w.write(data),
          commit: async (...args) => {
            const info = await w.commit(...args);
            maxSeen = Math.max(maxSeen, inner.usage().bytes);
            return info;
          },
          abort: () => w.abort(),
        };
      },
    };
    await withApp({ stores: { blobs: observed }, maxConcurrentFills: fills, eviction: { maxBytes: cap } }, async (hc) => {
      const digests = Array.from({ length: 150 }, (_, i) => hc.registry.putBlob(seededBytes(`load-${i}`, blobSize)));
      // 8 clients, each pulling its share of the blobs one after the other.
      await Promise.all(
        Array.from({ length: 8 }, async (_, c) => {
          for (let i = c; i < digests.length; i += 8) {
            const res = await hc.pull(`/v2/library/app/blobs/${digests[i]}`);
            assert.equal(res.status, 200);
            hc.clock.advance(1);
          }
        }),
      );
      await hc.settle();
      await hc.evictor!.stop();
      const evicted = await hc.metrics.registry.getSingleMetric('hubcache_evictions_total')!.get();
      assert.ok(evicted.values.find((v) => v.labels.kind === 'blob' && v.labels.reason === 'lru')!.value >= 150 - 30, 'most blobs were evicted along the way');
      assert.ok(maxSeen > cap * 0.9, `the store filled up to the cap (${maxSeen})`);
      assert.ok(maxSeen <= cap + fills * blobSize, `max ${maxSeen} bytes: at most the cap (${cap}) plus ${fills} blobs in flight`);
      assert.ok(inner.usage().bytes <= (cap * 95) / 100, 'below the high watermark once the load is over');
    });
  });

  it('tag retention: a tag not pulled for cache.tagRetention expires with its manifest (by the injected clock); pulling it again fetches it again', async () => {
    await withApp({ eviction: { tagRetentionMs: 30 * 86_400_000 } }, async (hc) => {
      const old = putImage(hc.registry, 'library/app', 'old', { seed: 'retention-old' });
      const fresh = putImage(hc.registry, 'library/app', 'fresh', { seed: 'retention-fresh' });
      assert.equal((await hc.pull('/v2/library/app/manifests/old')).status, 200);
      hc.clock.advance(20 * 86_400_000);
      assert.equal((await hc.pull('/v2/library/app/manifests/fresh')).status, 200);
      hc.clock.advance(11 * 86_400_000); // old: 31 days without a pull; fresh: 11
      const report = await hc.evictor!.run({ mode: 'gc' });
      assert.deepEqual(
        report.removed.map((r) => `${r.kind} ${r.reason} ${r.tag ?? r.digest}`),
        ['tag retention old', `manifest retention ${old.digest}`],
      );
      assert.ok(await hc.stores.manifests.get(fresh.digest as Digest));
      const manifestGets = () => hc.upstreamServer.count((r) => r.method === 'GET' && r.url.includes('/manifests/'));
      const before = manifestGets();
      const again = await hc.pull('/v2/library/app/manifests/old');
      assert.equal(again.status, 200);
      assert.equal(again.digest, old.digest);
      assert.equal(again.cache, 'miss');
      assert.equal(manifestGets() - before, 1);
    });
  });
});
