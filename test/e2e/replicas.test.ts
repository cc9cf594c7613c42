/**
 * Issue #15 end to end: THREE real `hubcache serve` processes sharing one bucket on a real Ceph RGW
 * (test/support/rgw.ts) and one real redis-server, in front of the token-auth test upstream.
 * - skopeo pulls of one image spread over the replicas cost each blob and the manifest once upstream;
 * - containerd (`ctr image pull` with the shipped hosts.toml, one replica per pull) pulls and
 *   unpacks one image through each replica in turn: each blob and the manifest downloaded once;
 * - 20 concurrent cold GETs of one paced blob, round-robin over the replicas: one upstream GET;
 * - Redis stopped: stored content is still served, /readyz says degraded (200); Redis back: ready;
 * - `kill -9` of the filling replica mid-fill: every response either completes with the right bytes
 *   or is aborted, a retry on a survivor succeeds, and the bucket holds no corrupt object.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GetObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { startContainerd } from '../support/containerd.js';
import type { HubcacheProcess } from '../support/hubcache-process.js';
import { digestOf, makeImage, type TestBlob, type TestImage } from '../support/images.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { startReplicas } from '../support/replicas.js';
import { startRgw, type Rgw } from '../support/rgw.js';
import { skopeoCopy } from '../support/skopeo.js';
import { renderClientConfig } from '../support/two-registries.js';
import { startUpstream, type Upstream } from '../support/upstream-harness.js';

const MiB = 1024 * 1024;
// Blob GETs are counted by their 200/206 answers: a replica's first request with no token yet is
// answered 401 (the challenge), which downloads nothing.
const PREFIX = 'mirror/';

/** A GET's outcome: the body's digest when it arrived whole, else why it did not. */
type Outcome = { status: number; digest: string } | { status: number; aborted: string } | { refused: string };

async function get(url: string): Promise<Outcome> {
  return (await open(url)).body;
}

/** A GET in two steps: `headers` resolves once the response has begun (or failed), `body` with its outcome. */
async function open(url: string): Promise<{ body: Promise<Outcome> }> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (err) {
    return { body: Promise.resolve({ refused: String((err as Error).cause ?? err) }) };
  }
  return { body: read(res) };
}

async function read(res: Response): Promise<Outcome> {
  try {
    return { status: res.status, digest: digestOf(Buffer.from(await res.arrayBuffer())) };
  } catch (err) {
    return { status: res.status, aborted: String((err as Error).cause ?? err) };
  }
}

describe('three hubcache replicas on one bucket (Ceph RGW) and one Redis (issue #15)', () => {
  let rgw: Rgw;
  let up: Upstream;
  let redis: RedisServer;
  let small: TestImage;
  let big: TestImage;
  let doomed: TestImage;
  let ctrImage: TestImage;
  let bucket: string;
  const replicas: HubcacheProcess[] = [];
  const scratch = mkdtempSync(join(tmpdir(), 'hubcache-e2e-replicas-'));
  const layerOf = (img: TestImage): TestBlob => [...img.blobs.values()].find((b) => b.digest !== img.config?.digest)!;


  before(async () => {
    [rgw, up, redis, small, big, doomed, ctrImage] = await Promise.all([
      startRgw(),
      startUpstream(),
      startRedis(),
      makeImage('docker', { seed: 'replicas-small', layerSize: 3 * MiB, layers: 3 }),
      makeImage('docker', { seed: 'replicas-big', layerSize: 32 * MiB, layers: 1 }),
      makeImage('docker', { seed: 'replicas-doomed', layerSize: 32 * MiB, layers: 1 }),
      makeImage('docker', { seed: 'replicas-containerd', layerSize: 2 * MiB, layers: 3 }),
    ]);
    await up.push(ctrImage, 'library/ctr', '1.0');
    await up.push(small, 'library/spread', '1.0');
    await up.push(big, 'library/big', '1.0');
    await up.push(doomed, 'library/doomed', '1.0');
    bucket = await rgw.createBucket();
    replicas.push(...(await startReplicas({ upstream: up, rgw, bucket, redisUrl: redis.url, prefix: PREFIX, scratch }, 3)));
    // A replica starts serving when Redis doesn't answer within 2 s (downloading alone until it
    // does): on a loaded machine the first test could otherwise count a second upstream GET.
    await Promise.all(replicas.map((hc) => hc.waitForLog((l) => String(l.message).startsWith('redis connected'))));
  });
  after(async () => {
    for (const p of replicas) await p.close();
    await redis?.close();
    await rgw?.stop();
    await up?.close();
    for (const img of [small, big, doomed, ctrImage]) img?.dispose();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('skopeo pulls of one image spread over the three replicas: each blob and the manifest cost one upstream GET, every pull is byte-identical', async () => {
    up.front.reset();
    const pull = async (hc: HubcacheProcess, name: string) => {
      const dir = join(scratch, name);
      await skopeoCopy(`docker://${hc.host}/library/spread:1.0`, `dir:${dir}`);
      assert.equal(digestOf(readFileSync(join(dir, 'manifest.json'))), small.digest, `${name}: manifest`);
      for (const blob of small.blobs.values()) assert.equal(digestOf(readFileSync(join(dir, blob.digest.slice(7)))), blob.digest, `${name}: ${blob.digest}`);
    };
    const manifestGets = () => up.front.count({ kind: 'manifest', method: 'GET', status: 200 });
    // At once on the three replicas: blob downloads are leased cluster-wide, and so is a cold tag's GET.
    await Promise.all(replicas.map((hc, i) => pull(hc, `cold-${i}`)));
    for (const digest of small.blobs.keys()) assert.equal(up.front.count({ kind: 'blob', method: 'GET', digest, status: [200, 206] }), 1, `one upstream GET of ${digest}`);
    assert.equal(manifestGets(), 1, 'one upstream manifest GET');
    const cold = manifestGets();
    // Then once more on each: all from the bucket, the tag fresh cluster-wide (no HEAD either).
    for (const [i, hc] of replicas.entries()) await pull(hc, `warm-${i}`);
    for (const digest of small.blobs.keys()) assert.equal(up.front.count({ kind: 'blob', method: 'GET', digest, status: [200, 206] }), 1, `still one upstream GET of ${digest}`);
    assert.equal(manifestGets(), cold, 'no manifest GET for the warm pulls');
    assert.equal(up.front.count({ kind: 'manifest', method: 'HEAD' }), 0, 'no tag HEAD within the TTL');
  });

  it('a cold tag pulled on one replica is fresh on the others: one upstream manifest GET cluster-wide, no HEAD within the TTL', async () => {
    await up.push(small, 'library/spread', '2.0');
    up.front.reset();
    await skopeoCopy(`docker://${replicas[0]!.host}/library/spread:2.0`, `dir:${join(scratch, 'tag2-0')}`);
    await Promise.all(replicas.slice(1).map((hc, i) => skopeoCopy(`docker://${hc.host}/library/spread:2.0`, `dir:${join(scratch, `tag2-${i + 1}`)}`)));
    for (const i of [0, 1, 2]) assert.equal(digestOf(readFileSync(join(scratch, `tag2-${i}`, 'manifest.json'))), small.digest);
    assert.equal(up.front.count({ kind: 'manifest', method: 'GET', status: 200 }), 1);
    assert.equal(up.front.count({ kind: 'manifest', method: 'HEAD' }), 0);
    assert.equal(up.front.count({ kind: 'blob', method: 'GET', status: [200, 206] }), 0, 'the blobs were stored by the first test');
  });

  it('containerd pulls and unpacks one image through each replica in turn (shipped hosts.toml): each blob and the manifest downloaded once', async () => {
    up.front.reset();
    const cd = await startContainerd();
    try {
      const template = readFileSync(new URL('../../deploy/clients/containerd/certs.d/docker.io/hosts.toml', import.meta.url), 'utf8');
      const ref = 'docker.io/library/ctr:1.0';
      for (const [i, hc] of replicas.entries()) {
        // One hosts dir per replica: this pull goes through replica i only.
        const hostsDir = join(scratch, `certs.d-${i}`);
        mkdirSync(join(hostsDir, 'docker.io'), { recursive: true });
        writeFileSync(join(hostsDir, 'docker.io', 'hosts.toml'), renderClientConfig(template, hc.host));
        const { stdout } = await cd.ctr(['image', 'pull', '--hosts-dir', hostsDir, '--snapshotter', 'native', ref]);
        assert.match(stdout, /unpacking linux\/amd64 sha256:/, `replica ${i}`);
        const check = (await cd.ctr(['image', 'check'])).stdout;
        assert.match(check, /docker\.io\/library\/ctr:1\.0\s+\S+\s+sha256:\S+\s+complete \((\d+)\/\1\)/, check);
        const served = hc.logs.filter((l) => l.message === 'request' && String(l.path).startsWith('/v2/library/ctr/blobs/') && l.method === 'GET' && l.status === 200);
        for (const blob of ctrImage.blobs.values()) assert.ok(served.some((l) => String(l.path).includes(blob.digest)), `replica ${i} served ${blob.digest} to containerd`);
        // Forget the image and its content: the next pull fetches every blob again, from the next replica.
        await cd.ctr(['image', 'rm', '--sync', ref]);
      }
    } finally {
      await cd.close();
    }
    for (const digest of ctrImage.blobs.keys()) assert.equal(up.front.count({ kind: 'blob', method: 'GET', digest, status: [200, 206] }), 1, `one upstream GET of ${digest}`);
    assert.equal(up.front.count({ kind: 'manifest', method: 'GET', status: 200 }), 1, 'one upstream manifest GET');
  });

  it('20 concurrent cold GETs of one paced 32 MiB blob round-robin over the replicas: one upstream GET, 20 right bodies', async () => {
    const layer = layerOf(big);
    up.front.reset();
    // ~3 s of fill: the followers join while it is moving.
    const pace = up.front.inject({ type: 'rate', bytesPerSecond: 10 * MiB, when: { kind: 'blob', digest: layer.digest } });
    try {
      const outcomes = await Promise.all(Array.from({ length: 20 }, (_, i) => get(`${replicas[i % 3]!.url}/v2/library/big/blobs/${layer.digest}`)));
      assert.deepEqual(outcomes, Array.from({ length: 20 }, () => ({ status: 200, digest: layer.digest })));
    } finally {
      pace.clear();
    }
    assert.equal(up.front.count({ kind: 'blob', method: 'GET', digest: layer.digest, status: [200, 206] }), 1);
  });

  it('Redis stopped: every replica serves what is stored and /readyz is 200 degraded; Redis back: ready again', async () => {
    const layer = layerOf(small);
    await redis.stop();
    try {
      for (const hc of replicas) {
        await hc.waitForLog((l) => String(l.message).startsWith('redis unreachable'));
        const ready = await fetch(`${hc.url}/readyz`);
        assert.equal(ready.status, 200);
        assert.equal(((await ready.json()) as { status: string }).status, 'degraded');
        assert.deepEqual(await get(`${hc.url}/v2/library/spread/blobs/${layer.digest}`), { status: 200, digest: layer.digest });
        const manifest = await fetch(`${hc.url}/v2/library/spread/manifests/${small.digest}`, { headers: { accept: small.mediaType } });
        assert.equal(manifest.status, 200);
        assert.equal(digestOf(Buffer.from(await manifest.arrayBuffer())), small.digest);
      }
    } finally {
      await redis.start();
    }
    for (const hc of replicas) {
      await hc.waitForLog((l) => String(l.message).startsWith('redis reachable again'));
      assert.equal(((await (await fetch(`${hc.url}/readyz`)).json()) as { status: string }).status, 'ready');
    }
  });

  it('kill -9 of the filling replica mid-fill: no wrong bytes anywhere, a retry on a survivor succeeds, the bucket holds nothing corrupt', async () => {
    const layer = layerOf(doomed);
    const path = `/v2/library/doomed/blobs/${layer.digest}`;
    up.front.reset();
    // The one upstream GET sends 4 MiB and hangs: the fill is mid-way when its replica dies.
    const stall = up.front.inject({ type: 'stall', afterBytes: 4 * MiB, onClear: 'destroy', times: 1, when: { kind: 'blob', digest: layer.digest } });
    try {
      const first = open(`${replicas[0]!.url}${path}`);
      await stall.hit();
      const filler = replicas.find((hc) => hc.logs.some((l) => l.message === 'fill started' && l.digest === layer.digest)) ??
        (await Promise.race(replicas.map((hc) => hc.waitForLog((l) => l.message === 'fill started' && l.digest === layer.digest).then(() => hc))));
      // Two readers on every replica, each with its response begun before the filler dies.
      const begun = await Promise.all([first, ...Array.from({ length: 6 }, (_, i) => open(`${replicas[i % 3]!.url}${path}`))]);
      assert.equal(await filler.stop('SIGKILL'), null);
      const outcomes = await Promise.all(begun.map((b) => b.body));
      for (const o of outcomes) {
        if ('digest' in o) assert.equal(o.digest, layer.digest, 'a body that completed has the right bytes');
        else if ('status' in o) assert.equal(o.status, 200, `aborted mid-body: ${JSON.stringify(o)}`);
      }
      assert.ok(outcomes.some((o) => !('digest' in o)), `some response must have been cut: ${JSON.stringify(outcomes)}`);

      const survivor = replicas.find((r) => r !== filler)!;
      assert.deepEqual(await get(`${survivor.url}${path}`), { status: 200, digest: layer.digest }, 'a retry on a survivor');
      // A client gets its last byte once the digest verifies; the bucket's commit (completing the
      // multipart upload) follows: wait for a survivor's fill to be committed before listing.
      const survivors = replicas.filter((r) => r !== filler);
      const committed = (l: { message?: unknown; digest?: unknown }) => l.message === 'fill committed' && l.digest === layer.digest;
      if (!survivors.some((hc) => hc.logs.some(committed))) await Promise.race(survivors.map((hc) => hc.waitForLog(committed)));
    } finally {
      stall.clear();
    }

    const listed = await rgw.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${PREFIX}blobs/` }));
    const keys = (listed.Contents ?? []).map((c) => c.Key!);
    assert.ok(keys.some((k) => k.endsWith(layer.digest.slice(7))), 'the retried blob is stored');
    for (const key of keys) {
      const obj = await rgw.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      assert.equal(digestOf(Buffer.from(await obj.Body!.transformToByteArray())), `sha256:${key.split('/').pop()}`, `object ${key} hashes to its name`);
    }
    const uploads = await rgw.client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    for (const u of uploads.Uploads ?? []) assert.ok(!keys.includes(u.Key!), `an unfinished upload is not visible as an object: ${u.Key}`);
  });
});
