/**
 * Hosted garbage collection through a running server (issue #14): POST /admin/gc (what
 * `hubcache gc --server` calls) removes what a deleted image alone used and reports it, the
 * metrics count it, the other image still pulls; and pushes racing the passes never end with a
 * manifest whose blobs are missing. The server's clock is moved two hours ahead of the store's
 * file times, so every link is past the grace period without waiting.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PassReport } from '../../src/cache/evictor.js';
import { gcServer } from '../../src/commands/gc.js';
import { sha256Digest } from '../../src/domain/digest.js';
import { MediaTypes } from '../../src/domain/media-types.js';
import { startInProcess } from '../support/in-process.js';
import { imageManifestOf } from '../../src/storage/testing/helpers.js';

const HOUR = 3_600_000;

describe('hosted garbage collection in a running server', () => {
  /** How far the server's clock is ahead of the store's file times. */
  let ahead = 0;
  const start = (initiallyAhead: number) => {
    ahead = initiallyAhead;
    return startInProcess({
      config: { hosted: { repositories: ['myorg/**'], allowDelete: true } },
      flags: { 'metrics-listen': '127.0.0.1:0' },
      clock: () => Date.now() + ahead,
    });
  };

  it('POST /admin/gc removes the blobs only a deleted image used (dry run first), keeps the shared layer, and counts them', async () => {
    // In time while pushing (the server's own periodic pass must not take the blobs before their manifests).
    const hc = await start(0);
    try {
      const upload = async (b: Buffer) => {
        const res = await fetch(`${hc.url}/v2/myorg/app/blobs/uploads/?digest=${sha256Digest(b)}`, { method: 'POST', body: new Uint8Array(b), headers: { 'content-type': 'application/octet-stream' } });
        assert.equal(res.status, 201, await res.text());
      };
      const putManifest = async (tag: string, body: Buffer) => {
        const res = await fetch(`${hc.url}/v2/myorg/app/manifests/${tag}`, { method: 'PUT', body: new Uint8Array(body), headers: { 'content-type': MediaTypes.ociManifest } });
        assert.equal(res.status, 201, await res.text());
      };
      const shared = Buffer.from('shared layer'.repeat(100));
      const a = [Buffer.from('{"config":"a"}'), shared, Buffer.from('only a'.repeat(100))];
      const b = [Buffer.from('{"config":"b"}'), shared];
      for (const x of [...a, ...b]) await upload(x);
      await putManifest('a', imageManifestOf(a));
      await putManifest('b', imageManifestOf(b));
      const del = await fetch(`${hc.url}/v2/myorg/app/manifests/${sha256Digest(imageManifestOf(a))}`, { method: 'DELETE' });
      assert.equal(del.status, 202);
      ahead = 2 * HOUR;

      const unreferenced = (r: PassReport) => r.removed.filter((i) => i.reason === 'unreferenced').map((i) => `${i.kind} ${i.digest}`).sort();
      const expected = [`blob ${sha256Digest(a[0]!)}`, `blob ${sha256Digest(a[2]!)}`, `manifest ${sha256Digest(imageManifestOf(a))}`].sort();
      const dry = await gcServer(hc.hub.metricsUrl, true);
      assert.deepEqual(unreferenced(dry), expected);
      const wet = await gcServer(hc.hub.metricsUrl, false);
      assert.deepEqual(unreferenced(wet), expected);
      for (const x of a) {
        const res = await fetch(`${hc.url}/v2/myorg/app/blobs/${sha256Digest(x)}`, { method: 'HEAD' });
        assert.equal(res.status, x === shared ? 200 : 404);
      }
      const pulled = await fetch(`${hc.url}/v2/myorg/app/manifests/b`, { headers: { accept: MediaTypes.ociManifest } });
      assert.equal(pulled.status, 200);
      assert.deepEqual(Buffer.from(await pulled.arrayBuffer()), imageManifestOf(b));
      const metrics = await fetch(`${hc.hub.metricsUrl}/metrics`).then((r) => r.text());
      assert.match(metrics, /hubcache_evictions_total\{kind="blob",reason="unreferenced"\} 2/);
      assert.match(metrics, /hubcache_evictions_total\{kind="manifest",reason="unreferenced"\} 1/);
    } finally {
      await hc.close();
    }
  });

  it('pushes racing gc passes: each manifest PUT either succeeds with every blob present or fails with MANIFEST_BLOB_UNKNOWN', async () => {
    const hc = await start(2 * HOUR);
    try {
      const outcomes = { pushed: 0, refused: 0 };
      for (let i = 0; i < 12; i++) {
        const blobs = [Buffer.from(`{"config":"race ${i}"}`), Buffer.from(`layer ${i} `.repeat(2000))];
        for (const x of blobs) {
          const res = await fetch(`${hc.url}/v2/myorg/race/blobs/uploads/?digest=${sha256Digest(x)}`, { method: 'POST', body: new Uint8Array(x), headers: { 'content-type': 'application/octet-stream' } });
          assert.equal(res.status, 201);
        }
        // The blobs are unreferenced (no manifest yet) and past the grace period: a pass takes
        // them unless the PUT gets there first.
        const [put] = await Promise.all([
          fetch(`${hc.url}/v2/myorg/race/manifests/t${i}`, { method: 'PUT', body: new Uint8Array(imageManifestOf(blobs)), headers: { 'content-type': MediaTypes.ociManifest } }),
          gcServer(hc.hub.metricsUrl, false),
        ]);
        const text = await put.text();
        if (put.status === 201) {
          outcomes.pushed++;
          for (const x of blobs) {
            const res = await fetch(`${hc.url}/v2/myorg/race/blobs/${sha256Digest(x)}`);
            assert.equal(res.status, 200, `blob of a pushed manifest t${i} is there`);
            assert.deepEqual(Buffer.from(await res.arrayBuffer()), x);
          }
          // And a later pass keeps them: they are referenced now.
          const later = await gcServer(hc.hub.metricsUrl, false);
          assert.ok(!later.removed.some((r) => blobs.some((x) => sha256Digest(x) === r.digest)));
        } else {
          assert.equal(put.status, 404, text); // MANIFEST_BLOB_UNKNOWN's status (docs/errors.md)
          assert.equal((JSON.parse(text) as { errors: Array<{ code: string }> }).errors[0]!.code, 'MANIFEST_BLOB_UNKNOWN');
          outcomes.refused++;
          const tag = await fetch(`${hc.url}/v2/myorg/race/manifests/t${i}`, { method: 'HEAD', headers: { accept: MediaTypes.ociManifest } });
          assert.equal(tag.status, 404, 'a refused PUT leaves no tag');
        }
      }
      assert.equal(outcomes.pushed + outcomes.refused, 12);
    } finally {
      await hc.close();
    }
  });
});
