/**
 * Issue #15: the cluster's destructive maintenance (eviction, hosted garbage collection) runs on one
 * replica at a time, and a manifest PUT on one replica racing a sweep on another never ends with a
 * manifest whose blobs are gone. Two whole in-process replicas (`startHubcache`) on ONE real Ceph
 * RGW bucket and ONE real redis-server; their clocks are two hours ahead of the bucket's object
 * times, so every hosted link is past the grace period without waiting.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import winston from 'winston';
import { ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { gcServer } from '../../src/commands/gc.js';
import { RedisCoordinator } from '../../src/cluster/redis-coordinator.js';
import { sha256Digest } from '../../src/domain/digest.js';
import { MediaTypes } from '../../src/domain/media-types.js';
import { Metrics } from '../../src/observability/metrics.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { startRgw, type Rgw } from '../support/rgw.js';
import { imageManifestOf } from '../../src/storage/testing/helpers.js';

const HOUR = 3_600_000;
const quiet = winston.createLogger({ transports: [new winston.transports.Console({ silent: true })] });

describe('several replicas: one maintenance pass at a time, pushes safe from a sweep on another replica (issue #15)', () => {
  let rgw: Rgw;
  let redis: RedisServer;
  let bucket: string;
  let a: InProcessHubcache;
  let b: InProcessHubcache;
  const PREFIX = 'maint:';

  const replica = (name: string) =>
    startInProcess({
      config: {
        instanceId: name,
        storage: { driver: 's3', bucket, endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey, prefix: 'store/', partSize: '5MiB', eviction: { interval: '1h' }, maxSize: '1KiB' },
        // Passes on demand only in these tests (one runs at start).
        hosted: { repositories: ['myorg/**'], allowDelete: true },
        metrics: { listen: '127.0.0.1:0' },
        cluster: { redis: { url: redis.url, keyPrefix: PREFIX }, peerListen: '127.0.0.1:0', advertiseUrl: 'http://127.0.0.1:1' },
      },
      clock: () => Date.now() + 2 * HOUR,
    });

  before(async () => {
    [rgw, redis] = await Promise.all([startRgw(), startRedis()]);
    bucket = await rgw.createBucket();
    a = await replica('replica-a');
    b = await replica('replica-b');
  });
  after(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await redis?.close();
    await rgw?.stop();
  });

  const metric = async (hc: InProcessHubcache, series: string) => {
    const text = await (await fetch(`${hc.hub.metricsUrl}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.split(' ')[1]);
  };
  const adminGc = (hc: InProcessHubcache, dryRun = false) => fetch(`${hc.hub.metricsUrl}/admin/gc${dryRun ? '?dryRun=1' : ''}`, { method: 'POST' });
  const upload = async (hc: InProcessHubcache, repo: string, x: Buffer) => {
    const res = await fetch(`${hc.url}/v2/myorg/${repo}/blobs/uploads/?digest=${sha256Digest(x)}`, { method: 'POST', body: new Uint8Array(x), headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(res.status, 201, await res.text());
  };

  it('while another replica holds the maintenance lock, POST /admin/gc answers 409 MAINTENANCE_RUNNING naming it (a dry run still runs); released, the pass runs', async () => {
    // "Another replica": a coordinator of the test's own on the same Redis and prefix.
    const other = new RedisCoordinator({ redis: { url: redis.url, keyPrefix: PREFIX }, advertiseUrl: 'http://127.0.0.1:2', fillLeaseTtlMs: 10_000, holderId: 'replica-z', logger: quiet, metrics: new Metrics() });
    try {
      assert.ok(await other.connected());
      // The replicas' own first passes (at start) may hold it for a moment: wait for our turn.
      let held = await other.acquire();
      while (held.kind === 'busy') {
        await new Promise<void>((r) => setTimeout(r, 50));
        held = await other.acquire();
      }
      assert.equal(held.kind, 'held');
      const busyBefore = (await metric(a, 'hubcache_cluster_maintenance_lock_total{outcome="busy"}')) ?? 0;
      const res = await adminGc(a);
      assert.equal(res.status, 409);
      const body = (await res.json()) as { errors: Array<{ code: string; detail: { holder: string } }> };
      assert.equal(body.errors[0]!.code, 'MAINTENANCE_RUNNING');
      assert.equal(body.errors[0]!.detail.holder, 'replica-z');
      await assert.rejects(gcServer(b.hub.metricsUrl, false), /409|another replica/, 'hubcache gc --server reports it');
      assert.equal(await metric(a, 'hubcache_cluster_maintenance_lock_total{outcome="busy"}'), busyBefore + 1);
      assert.equal(await metric(a, 'hubcache_cluster_maintenance_lock_held'), 0);
      assert.equal((await adminGc(a, true)).status, 200, 'a dry run deletes nothing: no lock needed');
      if (held.kind === 'held') await held.release();
      const ok = await adminGc(a);
      assert.equal(ok.status, 200, await ok.text());
      assert.equal(await other.maintenanceHolder(), null, 'released after the pass');
      assert.ok(((await metric(a, 'hubcache_cluster_maintenance_lock_total{outcome="acquired"}')) ?? 0) >= 1);
    } finally {
      await other.close();
    }
  });

  it('a manifest PUT on one replica racing a gc pass on the other: the PUT succeeds with every blob present, or gets MANIFEST_BLOB_UNKNOWN', async () => {
    const outcomes = { pushed: 0, refused: 0, raced: 0 };
    for (let i = 0; i < 10; i++) {
      const blobs = [Buffer.from(`{"config":"race ${i}"}`), Buffer.from(`layer ${i} `.repeat(2000))];
      for (const x of blobs) await upload(a, 'race', x);
      // Unreferenced (no manifest yet) and past the grace period: B's pass takes them unless A's PUT
      // marks them first. B never saw these pushes: it judges from the bucket.
      const [put, gc] = await Promise.all([
        fetch(`${a.url}/v2/myorg/race/manifests/t${i}`, { method: 'PUT', body: new Uint8Array(imageManifestOf(blobs)), headers: { 'content-type': MediaTypes.ociManifest } }),
        adminGc(b),
      ]);
      // 409: A's own pass held the lock then (only passes at start or on demand here); then no race.
      assert.ok(gc.status === 200 || gc.status === 409, `${gc.status} ${await gc.text()}`);
      if (gc.status === 200) outcomes.raced++;
      const text = await put.text();
      if (put.status === 201) {
        outcomes.pushed++;
        for (const hc of [a, b]) {
          for (const x of blobs) {
            const res = await fetch(`${hc.url}/v2/myorg/race/blobs/${sha256Digest(x)}`);
            assert.equal(res.status, 200, `blob of the pushed manifest t${i} is there`);
            assert.deepEqual(Buffer.from(await res.arrayBuffer()), x);
          }
        }
        // A later pass, on either replica, keeps them: they are referenced now.
        const later = await gcServer(i % 2 === 0 ? a.hub.metricsUrl : b.hub.metricsUrl, false);
        assert.ok(!later.removed.some((r) => blobs.some((x) => sha256Digest(x) === r.digest)));
      } else {
        assert.equal(put.status, 404, text);
        assert.equal((JSON.parse(text) as { errors: Array<{ code: string }> }).errors[0]!.code, 'MANIFEST_BLOB_UNKNOWN');
        outcomes.refused++;
        const tag = await fetch(`${b.url}/v2/myorg/race/manifests/t${i}`, { method: 'HEAD', headers: { accept: MediaTypes.ociManifest } });
        assert.equal(tag.status, 404, 'a refused PUT leaves no tag');
      }
    }
    assert.equal(outcomes.pushed + outcomes.refused, 10);
    assert.ok(outcomes.raced > 0, JSON.stringify(outcomes));
    console.log('# race outcomes', JSON.stringify(outcomes));
  });

  it('a blob linked on one replica to a second repository after the other replica counted hosted content keeps its bytes when the first link is collected there', async () => {
    const x = Buffer.from('shared across repositories '.repeat(500));
    await upload(a, 'one', x);
    await upload(a, 'two', x); // a second hosted link, made on A: B's counts don't know it
    const del = await fetch(`${a.url}/v2/myorg/one/blobs/${sha256Digest(x)}`, { method: 'DELETE' });
    assert.equal(del.status, 202);
    // myorg/two's link is garbage too (no manifest), so make it referenced: a manifest there.
    const cfg = Buffer.from('{"config":"two"}');
    await upload(a, 'two', cfg);
    const put = await fetch(`${a.url}/v2/myorg/two/manifests/v1`, { method: 'PUT', body: new Uint8Array(imageManifestOf([cfg, x])), headers: { 'content-type': MediaTypes.ociManifest } });
    assert.equal(put.status, 201, await put.text());
    assert.equal((await adminGc(b)).status, 200);
    const res = await fetch(`${b.url}/v2/myorg/two/blobs/${sha256Digest(x)}`);
    assert.equal(res.status, 200);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), x);
  });

  it('content pushed on one replica after the other started is protected from eviction there (a capped store: everything else goes)', async () => {
    const blobs = [Buffer.from('{"config":"pushed on a"}'), Buffer.from('layer pushed on a '.repeat(200))];
    for (const x of blobs) await upload(a, 'late', x);
    const put = await fetch(`${a.url}/v2/myorg/late/manifests/v1`, { method: 'PUT', body: new Uint8Array(imageManifestOf(blobs)), headers: { 'content-type': MediaTypes.ociManifest } });
    assert.equal(put.status, 201, await put.text());
    // A cached (not hosted) blob, as a pull would have stored it: the pass has something to evict.
    const cached = Buffer.from('cached, not hosted '.repeat(100));
    const hex = sha256Digest(cached).slice('sha256:'.length);
    await rgw.client.send(new PutObjectCommand({ Bucket: bucket, Key: `store/blobs/sha256/${hex.slice(0, 2)}/${hex}`, Body: cached }));
    // B counted hosted content at its start, before this push; its pass (cap 1 KiB) evicts what isn't protected.
    const res = await adminGc(b);
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const report = JSON.parse(text) as { removed: Array<{ digest?: string }> };
    assert.ok(report.removed.some((r) => r.digest === sha256Digest(cached)), 'the pass evicted the cached blob (the cap is tiny): protection is what kept the pushed ones');
    assert.ok(!report.removed.some((r) => blobs.some((x) => sha256Digest(x) === r.digest)), 'none of the pushed blobs evicted');
    for (const x of blobs) assert.equal((await fetch(`${b.url}/v2/myorg/late/blobs/${sha256Digest(x)}`)).status, 200);
  });

  it("a pass under the lock lists the bucket first: the other replica's commits are in its usage (hubcache_store_bytes) at once, not only at its next listing", async () => {
    const listed = async () => {
      let bytes = 0;
      let token: string | undefined;
      do {
        const page = await rgw.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'store/blobs/', ...(token ? { ContinuationToken: token } : {}) }));
        for (const o of page.Contents ?? []) bytes += o.Size ?? 0;
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return bytes;
    };
    const before = await metric(b, 'hubcache_store_bytes');
    assert.notEqual(before, undefined, 'counted since the start');
    await upload(a, 'usage', Buffer.from('pushed on a, unseen by b '.repeat(120)));
    assert.equal(await metric(b, 'hubcache_store_bytes'), before, 'B has not listed the bucket since');
    assert.equal((await adminGc(b)).status, 200);
    assert.equal(await metric(b, 'hubcache_store_bytes'), await listed());
  });

  it('Redis stopped: POST /admin/gc answers 503 MAINTENANCE_UNAVAILABLE (no pass deletes), a push still works; Redis back: passes run again', async () => {
    await redis.stop();
    await Promise.all([a, b].map((hc) => hc.waitForLog((l) => String(l.message).startsWith('redis unreachable'))));
    const res = await adminGc(b);
    assert.equal(res.status, 503);
    assert.equal(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]!.code, 'MAINTENANCE_UNAVAILABLE');
    const blobs = [Buffer.from('{"config":"no redis"}'), Buffer.from('layer without redis')];
    for (const x of blobs) await upload(a, 'offline', x);
    const put = await fetch(`${a.url}/v2/myorg/offline/manifests/v1`, { method: 'PUT', body: new Uint8Array(imageManifestOf(blobs)), headers: { 'content-type': MediaTypes.ociManifest } });
    assert.equal(put.status, 201, await put.text());
    await redis.start();
    await Promise.all([a, b].map((hc) => hc.waitForLog((l) => String(l.message).startsWith('redis reachable again'))));
    const ok = await adminGc(b);
    assert.equal(ok.status, 200, await ok.text());
  });
});
