/**
 * Issue #15 end to end: a push through a load balancer WITHOUT affinity. Three real `hubcache serve`
 * processes share one bucket on a real Ceph RGW (test/support/rgw.ts) and one real redis-server,
 * with hosted repositories, auth (tokens from any replica, or Basic: alice pushes, bob only pulls) and a peer secret; in front
 * of them a round-robin proxy that sends each REQUEST to the next replica
 * (test/support/round-robin-proxy.ts). Through it:
 * - `skopeo copy --dest-creds` of a multi-layer image;
 * - a chunked push with curl: POST, three PATCHes, PUT — each on another replica;
 * then everything is pulled back from each replica directly, byte-identical.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import bcrypt from 'bcryptjs';
import { freePort } from '../support/distribution.js';
import { startHubcacheProcess, type HubcacheProcess } from '../support/hubcache-process.js';
import { digestOf, makeImage, seededBytes, type TestImage } from '../support/images.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { startRgw, type Rgw } from '../support/rgw.js';
import { startRoundRobinProxy, type RoundRobinProxy } from '../support/round-robin-proxy.js';
import { skopeoCopy } from '../support/skopeo.js';

const MiB = 1024 * 1024;
const ALICE = 'alice:Al1ce-pass';
const BOB = 'bob:B0b-pass';
const basic = (cred: string) => `Basic ${Buffer.from(cred).toString('base64')}`;
const run = promisify(execFile);

/** skopeo's `dir:` transport: the manifest's exact bytes, each blob under its hex, a version file. */
function writeDirLayout(dir: string, image: TestImage): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'version'), 'Directory Transport Version: 1.1\n');
  writeFileSync(join(dir, 'manifest.json'), image.manifest);
  for (const [digest, blob] of image.blobs) writeFileSync(join(dir, digest.slice('sha256:'.length)), blob.bytes());
}

/** One curl request: status and headers (lower-cased names), body to a file when asked. */
async function curl(args: string[]): Promise<{ status: number; headers: Map<string, string> }> {
  const { stdout } = await run('curl', ['-sS', '-D', '-', '-o', '/dev/null', '--max-time', '60', ...args], { maxBuffer: 1024 * 1024 });
  const blocks = stdout.split(/\r?\n\r?\n/).filter((b) => b.startsWith('HTTP/'));
  const last = blocks.at(-1)!.split(/\r?\n/);
  const headers = new Map(last.slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()] as [string, string]));
  return { status: Number(last[0]!.split(' ')[1]), headers };
}

describe('a push through a load balancer without affinity, over three replicas (issue #15)', () => {
  let rgw: Rgw;
  let redis: RedisServer;
  let proxy: RoundRobinProxy;
  let image: TestImage;
  const replicas: HubcacheProcess[] = [];
  const scratch = mkdtempSync(join(tmpdir(), 'hubcache-e2e-replica-push-'));

  before(async () => {
    [rgw, redis, image] = await Promise.all([startRgw(), startRedis(), makeImage('docker', { seed: 'replica-push', layerSize: 3 * MiB, layers: 3 })]);
    const bucket = await rgw.createBucket();
    const hash = (cred: string) => `${cred.split(':')[0]}:${bcrypt.hashSync(cred.split(':')[1]!, 5).replace(/^\$2b\$/, '$2y$')}`;
    writeFileSync(join(scratch, 'htpasswd'), `${hash(ALICE)}\n${hash(BOB)}\n`);
    writeFileSync(join(scratch, 'peer-secret'), 'replicas-only\n');
    writeFileSync(
      join(scratch, 'config.yaml'),
      'hosted:\n  repositories: ["team/**"]\nauth:\n  anonymousPull: false\n  rules:\n    - repositories: ["team/**"]\n      users: [alice]\n      actions: [pull, push]\n    - repositories: ["team/**"]\n      users: [bob]\n      actions: [pull]\n' +
        `cluster:\n  peerSecretFile: ${join(scratch, 'peer-secret')}\n`,
    );
    const deadUpstream = `http://127.0.0.1:${await freePort()}`;
    const start = async (i: number) => {
      const peerPort = await freePort();
      return startHubcacheProcess({
        upstreamUrl: deadUpstream,
        config: join(scratch, 'config.yaml'),
        storageArgs: ['--storage-driver', 's3', '--storage-bucket', bucket, '--storage-endpoint', rgw.endpoint, '--storage-force-path-style', 'true', '--storage-part-size', '5MiB', '--storage-path', mkdtempSync(join(scratch, `local-${i}-`))],
        args: [
          '--auth-htpasswd', join(scratch, 'htpasswd'),
          '--cluster-redis-url', redis.url, '--cluster-peer-listen', `127.0.0.1:${peerPort}`, '--cluster-advertise-url', `http://127.0.0.1:${peerPort}`,
        ],
        env: { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey },
      });
    };
    // One after the other: three node processes starting at once on a loaded machine can each take
    // longer than the harness waits for one.
    for (const i of [0, 1, 2]) replicas.push(await start(i));
    proxy = await startRoundRobinProxy(replicas.map((r) => r.url));
  });
  after(async () => {
    await proxy?.close();
    for (const r of replicas) await r.close();
    await redis?.close();
    await rgw?.stop();
    image?.dispose();
    rmSync(scratch, { recursive: true, force: true });
  });

  /** Requests for upload sessions passed on to their owner, summed over the replicas. */
  const forwarded = async () => {
    let n = 0;
    for (const r of replicas) {
      const text = await (await fetch(`${r.url}/metrics`)).text();
      n += Number(/^hubcache_cluster_upload_forwards_total\{outcome="forwarded"\} (\d+)/m.exec(text)?.[1] ?? 0);
    }
    return n;
  };

  it('skopeo copy --dest-creds of a three-layer image through the proxy; pulled back byte-identical from each replica', async () => {
    const src = join(scratch, 'src');
    writeDirLayout(src, image);
    const before = await forwarded();
    await skopeoCopy(`dir:${src}`, `docker://${proxy.host}/team/app:1.0`, { destCreds: ALICE, timeoutMs: 120_000 });
    assert.ok((await forwarded()) > before, 'requests of upload sessions reached replicas that did not hold them');
    const sessions = new Map<string, Set<number>>();
    for (const r of proxy.routed) {
      const uuid = /\/blobs\/uploads\/([^/?]+)/.exec(r.path)?.[1];
      if (uuid) sessions.set(uuid, (sessions.get(uuid) ?? new Set()).add(r.backend));
    }
    assert.ok([...sessions.values()].some((b) => b.size > 1), 'a session was served by several replicas');
    for (const [i, r] of replicas.entries()) {
      const back = join(scratch, `back-${i}`);
      await skopeoCopy(`docker://${r.host}/team/app:1.0`, `dir:${back}`, { srcCreds: BOB });
      assert.ok(readFileSync(join(back, 'manifest.json')).equals(image.manifest), `replica ${i}: the manifest`);
      for (const [digest, blob] of image.blobs) assert.ok(readFileSync(join(back, digest.slice(7))).equals(blob.bytes()), `replica ${i}: ${digest}`);
    }
  });

  it('a chunked push with curl through the proxy: POST, three PATCHes and the PUT each on the next replica; served by each', async () => {
    const bytes = seededBytes('replica-push-chunked', 7 * MiB + 123);
    const digest = digestOf(bytes);
    const routedBefore = proxy.routed.length;
    const started = await curl(['-u', ALICE, '-X', 'POST', `${proxy.url}/v2/team/chunked/blobs/uploads/`]);
    assert.equal(started.status, 202);
    const location = started.headers.get('location')!;
    assert.match(location, /^\/v2\/team\/chunked\/blobs\/uploads\/[0-9a-f-]{36}$/);
    const cuts = [0, 2 * MiB, 5 * MiB, bytes.length];
    for (let i = 0; i < 3; i++) {
      const file = join(scratch, `chunk-${i}`);
      writeFileSync(file, bytes.subarray(cuts[i], cuts[i + 1]));
      const patched = await curl(['-u', ALICE, '-X', 'PATCH', '-H', 'Content-Type: application/octet-stream', '-H', `Content-Range: ${cuts[i]}-${cuts[i + 1]! - 1}`, '--data-binary', `@${file}`, `${proxy.url}${location}`]);
      assert.equal(patched.status, 202, `PATCH ${i}`);
      assert.equal(patched.headers.get('range'), `0-${cuts[i + 1]! - 1}`);
      assert.equal(patched.headers.get('location'), location);
    }
    // Out of order, and a pull-only user: refused wherever they land, the session unchanged.
    const again = await curl(['-u', ALICE, '-X', 'PATCH', '-H', 'Content-Range: 0-9', '--data-binary', '0123456789', `${proxy.url}${location}`]);
    assert.equal(again.status, 416);
    assert.equal(again.headers.get('range'), `0-${bytes.length - 1}`);
    assert.equal((await curl(['-u', BOB, '-X', 'PATCH', '-H', `Content-Range: ${bytes.length}-${bytes.length + 9}`, '--data-binary', '0123456789', `${proxy.url}${location}`])).status, 403);
    const put = await curl(['-u', ALICE, '-X', 'PUT', `${proxy.url}${location}?digest=${digest}`]);
    assert.equal(put.status, 201);
    assert.equal(put.headers.get('docker-content-digest'), digest);
    const used = new Set(proxy.routed.slice(routedBefore).map((r) => r.backend));
    assert.equal(used.size, 3, 'the session’s requests went to all three replicas');
    for (const [i, r] of replicas.entries()) {
      const res = await fetch(`${r.url}/v2/team/chunked/blobs/${digest}`, { headers: { authorization: basic(BOB) } });
      assert.equal(res.status, 200, `replica ${i}`);
      assert.equal(digestOf(Buffer.from(await res.arrayBuffer())), digest, `replica ${i}: the bytes pushed`);
    }
    const gone = await curl(['-u', ALICE, `${proxy.url}${location}`]);
    assert.equal(gone.status, 404, 'the session ended everywhere');
  });
});
