/**
 * Pins (cache.pin, issue #13) over the light in-process tier: a PinSet on the harness's cache and
 * stores, in front of a FakeRegistry, refreshed by hand (`refresh()`) while the manual clock moves
 * the tag TTL. Pinned content is fetched before any client asks, a moved tag is followed with both
 * images protected until the new one is complete, an upstream outage changes nothing for clients,
 * and the pin refresher never has more upstream requests open than cache.pinConcurrency.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Digest } from '../../src/domain/digest.js';
import { PinSet, type PinSetOptions } from '../../src/cache/pins.js';
import { StoreHealth } from '../../src/storage/store-health.js';
import { storageErrnoError } from '../../src/storage/testing/storage-faults.js';
import { withApp, type AppHarness } from '../support/app-harness.js';
import { blobRequests, holdUpstream, manifestRequests, putImage, putIndex, type FakeImage } from '../support/oci-fixtures.js';

const TTL = 10 * 60_000;

function pinSet(hc: AppHarness, pins: string[], opts: Partial<PinSetOptions> = {}): PinSet {
  return new PinSet({
    pins,
    source: hc.cache,
    manifests: hc.stores.manifests,
    metadata: hc.stores.metadata,
    tagTtls: new Map([...hc.upstreams.keys()].map((name) => [name, TTL])),
    concurrency: 2,
    logger: hc.logger,
    metrics: hc.metrics,
    ...opts,
  });
}

const digestsOf = (image: FakeImage): Digest[] => [image.digest, image.config.digest, ...image.layers.map((l) => l.digest)];

describe('pins', () => {
  it('a pinned multi-platform image is fetched before any client asks: every platform, config and layer; then clients get hits', async () => {
    await withApp({ tagTtlMs: TTL }, async (hc) => {
      const index = putIndex(hc.registry, 'library/nginx', '1.27', { seed: 'pin-index' });
      const pins = pinSet(hc, ['nginx:1.27']);
      const report = await pins.refresh();
      assert.deepEqual(report.results, { fresh: 0, updated: 1, stale: 0, failed: 0 });
      assert.deepEqual(report.states, { warm: 1, cold: 0, failed: 0 });
      const all = [index.digest, ...index.children.flatMap(digestsOf)];
      for (const d of all) assert.ok(pins.protects(d), `${d} protected`);
      assert.equal(pins.protectedCount, all.length);
      for (const child of index.children) for (const b of [child.config, ...child.layers]) assert.ok(await hc.stores.blobs.stat(b.digest), 'stored ahead of demand');
      assert.equal(await hc.metrics.value('hubcache_pins', { state: 'warm' }), 1);
      assert.equal(await hc.metrics.value('hubcache_pin_refresh_total', { result: 'updated' }), 1);
      assert.equal(await hc.metrics.value('hubcache_pinned_digests'), all.length);
      await hc.waitForLog((l) => l.message === 'pins refreshed' && l.upstream === 'docker.io' && l.warm === 1);

      const before = hc.upstreamServer.requests.length;
      const tag = await hc.pull('/v2/library/nginx/manifests/1.27');
      assert.equal(tag.cache, 'hit');
      for (const child of index.children) {
        assert.equal((await hc.pull(`/v2/library/nginx/manifests/${child.digest}`)).cache, 'hit');
        for (const b of [child.config, ...child.layers]) {
          const got = await hc.pull(`/v2/library/nginx/blobs/${b.digest}`);
          assert.equal(got.status, 200);
          assert.equal(got.cache, 'hit');
          assert.ok(got.body.equals(b.bytes));
        }
      }
      assert.equal(hc.upstreamServer.requests.length, before, 'the clients cost nothing upstream');

      // Within the TTL a second refresh asks nothing upstream either.
      assert.deepEqual((await pins.refresh()).results, { fresh: 1, updated: 0, stale: 0, failed: 0 });
      assert.equal(hc.upstreamServer.requests.length, before);
    });
  });

  it('cache.pinPlatforms: only the platforms named are fetched and protected (the index always is)', async () => {
    await withApp({ tagTtlMs: TTL }, async (hc) => {
      const index = putIndex(hc.registry, 'library/redis', '7.2', { seed: 'pin-platforms' });
      const [amd64, arm64] = index.children;
      const pins = pinSet(hc, ['redis:7.2'], { platforms: ['linux/arm64'] });
      await pins.refresh();
      assert.ok(pins.protects(index.digest));
      for (const d of digestsOf(arm64!)) assert.ok(pins.protects(d));
      for (const d of digestsOf(amd64!)) assert.ok(!pins.protects(d));
      assert.equal(hc.upstreamServer.count((r) => r.url.includes(amd64!.digest) || r.url.includes(amd64!.layers[0]!.digest)), 0, 'the other platform is never asked for');
    });
  });

  it('a moved tag is picked up at the next refresh (one HEAD): old and new are both protected until the new image is complete, then the old one is let go unless another pin keeps it', async () => {
    await withApp({ tagTtlMs: TTL }, async (hc) => {
      const old = putImage(hc.registry, 'myorg/base', 'v1', { seed: 'base-old', layerSizes: [3000] });
      const pins = pinSet(hc, ['myorg/base:v1']);
      const keepsOld = pinSet(hc, [`myorg/base@${old.digest}`]);
      await pins.refresh();
      await keepsOld.refresh();
      for (const d of digestsOf(old)) assert.ok(pins.protects(d));

      const moved = putImage(hc.registry, 'myorg/base', 'v1', { seed: 'base-new', layerSizes: [4000] });
      hc.clock.advance(TTL + 1);
      const heads = hc.upstreamServer.count(manifestRequests('HEAD'));
      const held = holdUpstream(hc.registry, (req) => req.method === 'GET' && req.url!.includes(moved.layers[0]!.digest));
      const refreshing = pins.refresh();
      await held.parked(1);
      // Mid-refresh: the new image is being fetched, the old one still serves.
      for (const d of [...digestsOf(old), ...digestsOf(moved)]) assert.ok(pins.protects(d), `${d} protected while the tag moves`);
      held.release();
      assert.deepEqual((await refreshing).results, { fresh: 0, updated: 1, stale: 0, failed: 0 });
      assert.equal(hc.upstreamServer.count(manifestRequests('HEAD')), heads + 1, 'revalidated with one HEAD');
      for (const d of digestsOf(moved)) assert.ok(pins.protects(d), 'the new image is kept');
      for (const d of digestsOf(old)) assert.ok(!pins.protects(d), 'the old one is let go by the tag pin');
      for (const d of digestsOf(old)) assert.ok(keepsOld.protects(d), '… and kept by the digest pin');
      assert.equal((await hc.pull('/v2/myorg/base/manifests/v1')).digest, moved.digest);
      await hc.waitForLog((l) => l.message === 'pin updated' && l.pin === 'myorg/base:v1' && l.digest === moved.digest && l.released === 3);
    });
  });

  it('upstream down: pinned content stays served from the store and protected; a restart during the outage protects it from the store alone', async () => {
    await withApp({ tagTtlMs: TTL }, async (hc) => {
      const image = putImage(hc.registry, 'library/alpine', '3.20', { seed: 'pin-outage', layerSizes: [2000, 3000] });
      const pins = pinSet(hc, ['alpine:3.20']);
      await pins.refresh();
      await hc.upstreamServer.close();
      hc.clock.advance(TTL + 1);
      const report = await pins.refresh();
      assert.deepEqual(report.results, { fresh: 0, updated: 0, stale: 1, failed: 0 });
      assert.deepEqual(report.states, { warm: 1, cold: 0, failed: 0 });
      for (const d of digestsOf(image)) assert.ok(pins.protects(d));
      const tag = await hc.pull('/v2/library/alpine/manifests/3.20');
      assert.equal(tag.status, 200);
      assert.equal(tag.cache, 'stale');
      for (const b of [image.config, ...image.layers]) assert.equal((await hc.pull(`/v2/library/alpine/blobs/${b.digest}`)).cache, 'hit');
      assert.equal(await hc.metrics.value('hubcache_pin_refresh_total', { result: 'stale' }), 1);

      const restarted = pinSet(hc, ['alpine:3.20']);
      await restarted.loaded();
      for (const d of digestsOf(image)) assert.ok(restarted.protects(d), 'protected before the upstream answered anything');
      assert.deepEqual((await restarted.refresh()).states, { warm: 1, cold: 0, failed: 0 });
    });
  });

  it('content the upstream can no longer give fails the pin (counted, logged) and keeps what it held', async () => {
    await withApp({ tagTtlMs: TTL }, async (hc) => {
      const image = putImage(hc.registry, 'library/busybox', '1', { seed: 'pin-fail', layerSizes: [1000, 1000] });
      hc.registry.blobs.delete(image.layers[1]!.digest);
      const pins = pinSet(hc, ['busybox:1']);
      const report = await pins.refresh();
      assert.deepEqual(report.results, { fresh: 0, updated: 0, stale: 0, failed: 1 });
      assert.deepEqual(report.states, { warm: 0, cold: 0, failed: 1 });
      for (const d of digestsOf(image)) assert.ok(pins.protects(d));
      assert.ok(await hc.stores.blobs.stat(image.layers[0]!.digest), 'what could be fetched was');
      await hc.waitForLog((l) => l.message === 'pin refresh failed' && l.pin === 'busybox:1' && /blob unknown/i.test(String(l.error)));
      assert.equal(await hc.metrics.value('hubcache_pins', { state: 'failed' }), 1);
    });
  });

  it('a degraded store (disk full): the refresh downloads nothing and fails; once the store takes writes again the next refresh warms the pin', async () => {
    let full = true;
    const health = new StoreHealth({
      probe: async () => {
        if (full) throw storageErrnoError('ENOSPC', 'write', '/store/tmp/.ready');
      },
      onChange: () => {},
      onStorageFull: () => {},
      recheckMs: 0,
    });
    health.fault(storageErrnoError('ENOSPC', 'write', '/store/tmp/x'));
    await withApp({ tagTtlMs: TTL, storeHealth: health }, async (hc) => {
      const image = putImage(hc.registry, 'library/debian', '12', { seed: 'pin-full', layerSizes: [1000] });
      const pins = pinSet(hc, ['debian:12']);
      assert.deepEqual((await pins.refresh()).results, { fresh: 0, updated: 0, stale: 0, failed: 1 });
      assert.equal(hc.upstreamServer.count(blobRequests()), 0, 'no download the store could not take');
      await hc.waitForLog((l) => l.message === 'pin refresh failed' && /cannot be written/.test(String(l.error)));
      for (const d of digestsOf(image)) assert.ok(pins.protects(d), 'what it needs is still protected');
      full = false;
      assert.deepEqual((await pins.refresh()).states, { warm: 1, cold: 0, failed: 0 });
      for (const b of [image.config, ...image.layers]) assert.ok(await hc.stores.blobs.stat(b.digest));
    });
  });

  it('a tag pattern pins every matching tag, listed through the cache; a tag that stops matching is let go', async () => {
    await withApp({ tagTtlMs: TTL }, async (hc) => {
      const images = new Map(['7.0', '7.2', '6.2', 'latest'].map((t) => [t, putImage(hc.registry, 'library/redis', t, { seed: `redis-${t}` })]));
      hc.registry.tags.set('library/redis', ['7.0', '7.2', '6.2', 'latest']);
      const pins = pinSet(hc, ['redis:7.*']);
      assert.deepEqual((await pins.refresh()).states, { warm: 2, cold: 0, failed: 0 });
      for (const t of ['7.0', '7.2']) for (const d of digestsOf(images.get(t)!)) assert.ok(pins.protects(d));
      for (const t of ['6.2', 'latest']) assert.ok(!pins.protects(images.get(t)!.digest));
      assert.deepEqual(
        pins.snapshot().map((s) => [s.reference, s.state]),
        [
          ['7.0', 'warm'],
          ['7.2', 'warm'],
        ],
      );

      hc.registry.tags.set('library/redis', ['7.2', '6.2', 'latest']);
      hc.clock.advance(TTL + 1);
      assert.deepEqual((await pins.refresh()).states, { warm: 1, cold: 0, failed: 0 });
      assert.ok(!pins.protects(images.get('7.0')!.digest), 'a tag gone upstream is no longer pinned');
      assert.ok(pins.protects(images.get('7.2')!.digest));
    });
  });

  it('cache.pinMaxTags: a pattern matching too many tags fails rather than pinning them all', async () => {
    await withApp({ tagTtlMs: TTL }, async (hc) => {
      hc.registry.tags.set('library/node', ['20.1', '20.2', '20.3']);
      const pins = pinSet(hc, ['node:20.*'], { maxTags: 2 });
      assert.deepEqual((await pins.refresh()).states, { warm: 0, cold: 0, failed: 1 });
      assert.equal(pins.protectedCount, 0);
      assert.equal(hc.upstreamServer.count(manifestRequests()), 0, 'nothing fetched');
      await hc.waitForLog((l) => l.message === 'pin failed' && /matches 3 tags, more than cache\.pinMaxTags \(2\)/.test(String(l.error)));
    });
  });

  it('cache.pinConcurrency bounds the upstream requests the refresher has open at once', async () => {
    await withApp({ tagTtlMs: TTL }, async (hc) => {
      const image = putImage(hc.registry, 'library/many', 'v', { seed: 'pin-bound', layerSizes: [500, 600, 700, 800, 900, 1000] });
      let open = 0;
      let max = 0;
      const seen = new WeakSet<object>(); // a held request passes the hook again when released
      hc.registry.hook = (req, res) => {
        if (!blobRequests('GET')(req as { method: string; url: string }) || seen.has(req)) return false;
        seen.add(req);
        open++;
        max = Math.max(max, open);
        res.once('close', () => open--);
        return false;
      };
      // The first two downloads are held until both are open: the bound is reached, not merely respected.
      const held = holdUpstream(hc.registry, blobRequests('GET') as never);
      const pins = pinSet(hc, ['many:v'], { concurrency: 2 });
      const refreshing = pins.refresh();
      await held.parked(2);
      assert.equal(open, 2);
      held.release();
      assert.deepEqual((await refreshing).states, { warm: 1, cold: 0, failed: 0 });
      assert.equal(hc.upstreamServer.count(blobRequests('GET')), 7, 'config and six layers, once each');
      assert.equal(max, 2, 'never more than cache.pinConcurrency blob downloads at once');
      for (const b of [image.config, ...image.layers]) assert.ok(await hc.stores.blobs.stat(b.digest));
    });
  });
});
