/**
 * Pins through the whole server (in-process tier: config loader, filesystem store, server.ts): a
 * pinned image is fetched after start in the background, before any client asks, and served with
 * the upstream gone; the state is on /metrics; a restart during the outage still serves it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FakeRegistry, LoopbackServer } from '../../src/upstream/testing/fake-registry.js';
import { startInProcess } from '../support/in-process.js';
import { ALL_MANIFESTS, blobRequests, putIndex } from '../support/oci-fixtures.js';

describe('pins in the server', () => {
  it('cache.pin: warm after start without a client, served with the upstream stopped, and after a restart during the outage', async () => {
    const registry = new FakeRegistry();
    const index = putIndex(registry, 'library/nginx', '1.27', { seed: 'pins-server' });
    const upstream = await LoopbackServer.start(registry.handle);
    const config = { cache: { pin: ['nginx:1.27'], pinConcurrency: 2 } };
    const storagePath = mkdtempSync(join(tmpdir(), 'hubcache-pins-'));
    const hc = await startInProcess({ storagePath, flags: { 'upstream-url': upstream.url }, config });
    try {
      const refreshed = await hc.waitForLog((l) => l.message === 'pins refreshed');
      assert.equal(refreshed.warm, 1);
      assert.equal(refreshed.result_updated, 1);
      const blobs = index.children.flatMap((c) => [c.config, ...c.layers]);
      assert.equal(upstream.count(blobRequests('GET')), blobs.length, 'every blob fetched once, before any client');
      for (const d of [index.digest, ...index.children.map((c) => c.digest), ...blobs.map((b) => b.digest)]) assert.ok(hc.hub.pins.protects(d));
      const metrics = await (await fetch(`${hc.url}/metrics`)).text();
      assert.match(metrics, /^hubcache_pins\{state="warm"\} 1$/m);
      assert.match(metrics, /^hubcache_pin_refresh_total\{result="updated"\} 1$/m);
    } finally {
      await upstream.close();
    }
    const served = async (url: string) => {
      const tag = await fetch(`${url}/v2/library/nginx/manifests/1.27`, { headers: { accept: ALL_MANIFESTS } });
      assert.equal(tag.status, 200);
      assert.equal(tag.headers.get('docker-content-digest'), index.digest);
      for (const child of index.children) {
        assert.equal((await fetch(`${url}/v2/library/nginx/manifests/${child.digest}`, { headers: { accept: ALL_MANIFESTS } })).status, 200);
        for (const b of [child.config, ...child.layers]) {
          const res = await fetch(`${url}/v2/library/nginx/blobs/${b.digest}`);
          assert.equal(res.status, 200);
          assert.ok(Buffer.from(await res.arrayBuffer()).equals(b.bytes));
        }
      }
    };
    try {
      await served(hc.url);
    } finally {
      await hc.close();
    }
    // A restart while the upstream is still down.
    const again = await startInProcess({ storagePath, flags: { 'upstream-url': upstream.url }, config: { ...config, upstreamClient: { retries: 1 } } });
    try {
      await again.hub.pins.loaded();
      assert.ok(again.hub.pins.protects(index.digest), 'protected from the store before the upstream answered');
      const refreshed = await again.waitForLog((l) => l.message === 'pins refreshed');
      assert.equal(refreshed.warm, 1, 'still warm: everything is stored');
      await served(again.url);
    } finally {
      await again.close();
      rmSync(storagePath, { recursive: true, force: true });
    }
  });
});
