import assert from 'node:assert/strict';
import { it } from 'node:test';
import { Metrics } from './metrics.js';

it('the store gauges have no sample while the store usage is unknown, then report it at every scrape (issue #12)', async () => {
  const metrics = new Metrics({ collectDefault: false });
  const samples = async () => (await metrics.registry.metrics()).split('\n').filter((l) => /^hubcache_store_(bytes|objects) /.test(l));
  assert.deepEqual(await samples(), [], 'no store behind the facade yet');
  let usage: { bytes: number; objects: number } | undefined;
  metrics.observeStoreUsage(() => usage);
  assert.deepEqual(await samples(), [], 'not counted yet: no sample, not a 0');
  usage = { bytes: 1234, objects: 2 };
  assert.deepEqual(await samples(), ['hubcache_store_bytes 1234', 'hubcache_store_objects 2']);
  usage = { bytes: 1000, objects: 1 };
  assert.deepEqual(await samples(), ['hubcache_store_bytes 1000', 'hubcache_store_objects 1']);
});
