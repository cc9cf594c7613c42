/**
 * Issue #15: a push whose requests land on different replicas works. Replicas wired as
 * src/server.ts wires them with `cluster` set — upload sessions published in a REAL redis-server,
 * the follow endpoint serving the sessions held here, the forwarder passing the others on — in
 * front of ONE shared store (the memory stores, like an object store), with auth on (Basic):
 * `alice` may push, `bob` may only pull. The peer secret is on (`s3cret`) unless a replica is
 * started with another one. Nothing is timed: every wait is on a response.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import winston from 'winston';
import { createPeerServer } from '../../src/cluster/peer-server.js';
import { RedisCoordinator } from '../../src/cluster/redis-coordinator.js';
import { UploadForwarder } from '../../src/cluster/upload-forwarder.js';
import { configSchema } from '../../src/config/schema.js';
import { sha256Digest, type Digest } from '../../src/domain/digest.js';
import { MediaTypes } from '../../src/domain/media-types.js';
import { HOSTED_UPSTREAM, parseRepoName } from '../../src/domain/reference.js';
import { HostedRegistry } from '../../src/hosted/hosted-registry.js';
import { createApp } from '../../src/http/app.js';
import { setupAuth, type AuthSetup } from '../../src/http/auth/setup.js';
import { createClientServer } from '../../src/http/client-server.js';
import { createPeerUploadsApp } from '../../src/http/peer-uploads.js';
import { compileHostedRules } from '../../src/http/resolve-repo.js';
import { MemoryBlobStore } from '../../src/storage/memory/memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../../src/storage/memory/memory-manifest-store.js';
import { UploadSessions } from '../../src/storage/upload-sessions.js';
import { ObservedMetrics } from '../support/app-harness.js';
import { parseOciError, seededBytes } from '../support/oci-fixtures.js';
import { startRedis, type RedisServer } from '../support/redis.js';

const quiet = winston.createLogger({ transports: [new winston.transports.Console({ silent: true })] });
const SECRET = 's3cret';

interface Shared {
  readonly blobs: MemoryBlobStore;
  readonly manifests: MemoryManifestStore;
  readonly metadata: MemoryMetadataStore;
  readonly redisUrl: string;
  readonly htpasswd: string;
  readonly dir: string;
}

interface Replica {
  readonly id: string;
  readonly url: string;
  readonly peerUrl: string;
  readonly uploads: UploadSessions;
  readonly coordinator: RedisCoordinator;
  readonly metrics: ObservedMetrics;
  /** Stops both listeners and drops Redis without ending its sessions: a dead replica, as the others see it. */
  die(): Promise<void>;
  close(): Promise<void>;
}

async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function startReplica(id: string, shared: Shared, opts: { secret?: string } = {}): Promise<Replica> {
  const secret = opts.secret ?? SECRET;
  const metrics = new ObservedMetrics();
  let peerUploads: ReturnType<typeof createPeerUploadsApp> | undefined;
  const peer = createPeerServer({ source: { followFill: async () => undefined }, secret, logger: quiet, uploads: (req, res) => peerUploads!(req, res) });
  const peerUrl = await listen(peer);
  const coordinator = new RedisCoordinator({ redis: { url: shared.redisUrl, keyPrefix: 'uploads-itest:' }, advertiseUrl: peerUrl, fillLeaseTtlMs: 10_000, holderId: id, logger: quiet, metrics, peerSecret: secret });
  assert.ok(await coordinator.connected(), `${id} reaches redis`);
  const timeoutMs = 60_000;
  const uploads = new UploadSessions({
    blobs: shared.blobs,
    timeoutMs,
    maxSessions: 10,
    directory: {
      started: (r) => coordinator.uploadStarted(r.id, r.key.repo, timeoutMs * 1.25),
      touched: (r) => coordinator.uploadTouched(r.id, timeoutMs * 1.25),
      ended: (uuid) => coordinator.uploadEnded(uuid),
    },
  });
  const hosted = new HostedRegistry({ blobs: shared.blobs, manifests: shared.manifests, metadata: shared.metadata, uploads, allowDelete: false, logger: quiet });
  const hostedRules = compileHostedRules([{ pattern: 'team/**' }]);
  const resolver = { upstreams: new Set(['docker.io']), defaultUpstream: 'docker.io', filters: new Map(), hosted: hostedRules };
  const auth: AuthSetup = setupAuth(
    configSchema.parse({ auth: { htpasswd: shared.htpasswd, challenge: 'basic', rules: [{ repositories: ['team/**'], users: ['alice'], actions: ['pull', 'push'] }, { repositories: ['team/**'], users: ['bob'], actions: ['pull'] }] } }).auth,
    { keyDir: join(shared.dir, `key-${id}`), logger: quiet, metrics, isHosted: (name) => hostedRules.some((r) => r.matches(name)) },
  );
  const forwarder = new UploadForwarder({ owners: coordinator, selfId: id, peerSecret: secret, logger: quiet, metrics });
  const app = createApp({
    reader: hosted,
    resolver,
    hosted,
    uploadsElsewhere: forwarder,
    auth: auth.guard,
    logger: quiet,
    metrics,
    instanceId: id,
    readiness: async () => ({ checks: {} }),
    serveMetrics: false,
    sendTimeoutMs: 60_000,
  });
  peerUploads = createPeerUploadsApp({ hosted, resolver, logger: quiet, metrics, lost: (uuid) => coordinator.uploadEnded(uuid) });
  const server = createClientServer(app, { headersTimeout: 10_000, keepAliveTimeout: 5_000, maxConnections: 100, maxConnectionsPerClient: 0, logger: quiet, metrics });
  const url = await listen(server);
  let dead = false;
  const stop = async () => {
    server.closeAllConnections();
    peer.closeAllConnections();
    await Promise.all([new Promise((r) => server.close(r)), new Promise((r) => peer.close(r))]);
  };
  return {
    id,
    url,
    peerUrl,
    uploads,
    coordinator,
    metrics,
    die: async () => {
      dead = true;
      await stop();
      await coordinator.close();
      await forwarder.close();
      await auth.close();
    },
    close: async () => {
      if (dead) return;
      await stop();
      await uploads.close();
      await forwarder.close();
      await auth.close();
      await coordinator.close();
    },
  };
}

const TEAM_APP = { upstream: HOSTED_UPSTREAM, repo: parseRepoName('team/app') };
const ALICE = { authorization: `Basic ${Buffer.from('alice:wonderland').toString('base64')}` };
const BOB = { authorization: `Basic ${Buffer.from('bob:builder').toString('base64')}` };

type Init = { method?: string; headers?: Record<string, string>; body?: Buffer };
const call = (base: string, path: string, init: Init = {}) =>
  fetch(`${base}${path}`, { method: init.method, headers: { ...ALICE, ...init.headers }, ...(init.body ? { body: new Uint8Array(init.body) } : {}) });

const chunkHeaders = (from: number, chunk: Buffer) => ({ 'content-type': 'application/octet-stream', 'content-range': `${from}-${from + chunk.length - 1}` });

describe('uploads across replicas: a push whose requests land on different replicas works (issue #15)', () => {
  let redis: RedisServer;
  let shared: Shared;
  let a: Replica, b: Replica, c: Replica;

  before(async () => {
    redis = await startRedis();
    const dir = mkdtempSync(join(tmpdir(), 'hubcache-upload-replicas-'));
    const htpasswd = join(dir, 'htpasswd');
    const hash = (p: string) => bcrypt.hashSync(p, 4).replace(/^\$2b\$/, '$2y$');
    writeFileSync(htpasswd, `alice:${hash('wonderland')}\nbob:${hash('builder')}\n`);
    shared = { blobs: new MemoryBlobStore(), manifests: new MemoryManifestStore(), metadata: new MemoryMetadataStore(), redisUrl: redis.url, htpasswd, dir };
    [a, b, c] = await Promise.all([startReplica('a', shared), startReplica('b', shared), startReplica('c', shared)]);
  });
  after(async () => {
    await Promise.all([a, b, c].map((r) => r?.close()));
    await redis?.close();
    rmSync(shared.dir, { recursive: true, force: true });
  });

  /** POST on `on`: the session's path (the Location) and uuid. */
  async function start(on: Replica, name = 'team/app'): Promise<{ location: string; uuid: string }> {
    const res = await call(on.url, `/v2/${name}/blobs/uploads/`, { method: 'POST' });
    assert.equal(res.status, 202, await res.text());
    const location = res.headers.get('location')!;
    const uuid = res.headers.get('docker-upload-uuid')!;
    assert.equal(location, `/v2/${name}/blobs/uploads/${uuid}`, 'a path, valid on any replica');
    return { location, uuid };
  }

  it('chunked push: POST on A, PATCH on B, an out-of-order PATCH on C (416 with the owner’s Range), status on B, PUT on C → the blob is committed and verified', async () => {
    const bytes = seededBytes('across', 3 * 1024 * 1024 + 17);
    const digest = sha256Digest(bytes);
    const [one, two] = [bytes.subarray(0, 2 * 1024 * 1024), bytes.subarray(2 * 1024 * 1024)];
    const forwardsBefore = await b.metrics.value('hubcache_cluster_upload_forwards_total', { outcome: 'forwarded' });
    const { location, uuid } = await start(a);
    assert.ok(a.uploads.has(uuid) && !b.uploads.has(uuid) && !c.uploads.has(uuid), 'the session lives on A only');
    assert.deepEqual(await b.coordinator.uploadOwner(uuid).then((o) => o && { id: o.id, url: o.url }), { id: 'a', url: a.peerUrl }, 'Redis names A');

    const patched = await call(b.url, location, { method: 'PATCH', headers: chunkHeaders(0, one), body: one });
    assert.equal(patched.status, 202, await patched.text());
    assert.equal(patched.headers.get('range'), `0-${one.length - 1}`);
    assert.equal(patched.headers.get('location'), location);
    assert.equal(patched.headers.get('docker-upload-uuid'), uuid);
    assert.equal(await b.metrics.value('hubcache_cluster_upload_forwards_total', { outcome: 'forwarded' }), forwardsBefore + 1);

    const wrong = await call(c.url, location, { method: 'PATCH', headers: chunkHeaders(0, two), body: two });
    assert.equal(wrong.status, 416);
    assert.equal(wrong.headers.get('range'), `0-${one.length - 1}`, 'the owner’s offset');
    assert.equal(parseOciError(await wrong.text()).code, 'RANGE_INVALID');

    const status = await call(b.url, location);
    assert.equal(status.status, 204);
    assert.equal(status.headers.get('range'), `0-${one.length - 1}`);
    assert.equal(status.headers.get('docker-upload-uuid'), uuid);

    const patched2 = await call(c.url, location, { method: 'PATCH', headers: chunkHeaders(one.length, two), body: two });
    assert.equal(patched2.status, 202, await patched2.text());
    assert.equal(patched2.headers.get('range'), `0-${bytes.length - 1}`);

    const put = await call(c.url, `${location}?digest=${digest}`, { method: 'PUT' });
    assert.equal(put.status, 201, await put.text());
    assert.equal(put.headers.get('docker-content-digest'), digest);
    assert.equal(put.headers.get('location'), `/v2/team/app/blobs/${digest}`);

    assert.equal((await shared.blobs.stat(digest))?.size, bytes.length, 'committed to the shared store');
    for (const r of [a, b, c]) {
      const got = await call(r.url, `/v2/team/app/blobs/${digest}`);
      assert.equal(got.status, 200, r.id);
      assert.ok(Buffer.from(await got.arrayBuffer()).equals(bytes), `${r.id} serves the bytes pushed`);
    }
    assert.equal(a.uploads.size, 0, 'the session ended on its owner');
    assert.equal(await c.coordinator.uploadOwner(uuid), undefined, 'and its record in Redis');
    const gone = await call(b.url, location);
    assert.equal(gone.status, 404);
    assert.equal(parseOciError(await gone.text()).code, 'BLOB_UPLOAD_UNKNOWN');
  });

  it('a wrong digest at the final PUT on another replica: 400 DIGEST_INVALID from the owner, nothing visible', async () => {
    const bytes = seededBytes('wrong-digest', 100_000);
    const claimed = sha256Digest(Buffer.from('something else'));
    const { location } = await start(b);
    assert.equal((await call(a.url, location, { method: 'PATCH', headers: chunkHeaders(0, bytes), body: bytes })).status, 202);
    const put = await call(c.url, `${location}?digest=${claimed}`, { method: 'PUT' });
    assert.equal(put.status, 400);
    assert.equal(parseOciError(await put.text()).code, 'DIGEST_INVALID');
    assert.equal(await shared.blobs.stat(claimed), undefined);
    assert.equal(await shared.blobs.stat(sha256Digest(bytes)), undefined);
  });

  it('the final PUT carrying the last chunk, and the manifest PUT and a mount on replicas that never saw the blobs', async () => {
    const layer = seededBytes('layer', 300_000);
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed: 'across' }));
    const { location } = await start(c);
    const head = layer.subarray(0, 100_000);
    assert.equal((await call(a.url, location, { method: 'PATCH', headers: chunkHeaders(0, head), body: head })).status, 202);
    const tail = layer.subarray(100_000);
    const put = await call(b.url, `${location}?digest=${sha256Digest(layer)}`, { method: 'PUT', headers: chunkHeaders(head.length, tail), body: tail });
    assert.equal(put.status, 201, await put.text());
    // The config as one monolithic upload on A.
    assert.equal((await call(a.url, `/v2/team/app/blobs/uploads/?digest=${sha256Digest(config)}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: config })).status, 201);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaTypes.ociManifest,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest(config), size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256Digest(layer), size: layer.length }],
      }),
    );
    const putManifest = await call(b.url, '/v2/team/app/manifests/v1', { method: 'PUT', headers: { 'content-type': MediaTypes.ociManifest }, body: manifest });
    assert.equal(putManifest.status, 201, await putManifest.text());
    const mounted = await call(a.url, `/v2/team/other/blobs/uploads/?mount=${sha256Digest(layer)}&from=team/app`, { method: 'POST' });
    assert.equal(mounted.status, 201, 'mounted from the shared store');
    for (const r of [a, b, c]) {
      const got = await call(r.url, '/v2/team/app/manifests/v1', { headers: { accept: MediaTypes.ociManifest } });
      assert.ok(Buffer.from(await got.arrayBuffer()).equals(manifest), r.id);
      assert.ok(Buffer.from(await (await call(r.url, `/v2/team/other/blobs/${sha256Digest(layer)}`)).arrayBuffer()).equals(layer), r.id);
    }
  });

  it('DELETE on another replica cancels the session on its owner', async () => {
    const { location, uuid } = await start(a);
    const chunk = seededBytes('cancelled', 10_000);
    assert.equal((await call(a.url, location, { method: 'PATCH', headers: chunkHeaders(0, chunk), body: chunk })).status, 202);
    const del = await call(b.url, location, { method: 'DELETE' });
    assert.equal(del.status, 204, await del.text());
    assert.ok(!a.uploads.has(uuid), 'cancelled on A');
    const status = await call(c.url, location);
    assert.equal(status.status, 404);
    assert.equal(parseOciError(await status.text()).code, 'BLOB_UPLOAD_UNKNOWN');
    assert.equal(await c.metrics.value('hubcache_cluster_upload_forwards_total', { outcome: 'unknown' }), 1);
  });

  it('authorization is the receiving replica’s: a pull-only user’s PATCH is 403 and an anonymous one 401, passed on nowhere', async () => {
    const { location, uuid } = await start(a);
    const chunk = seededBytes('denied', 5_000);
    const forwards = () => b.metrics.value('hubcache_cluster_upload_forwards_total', { outcome: 'forwarded' });
    const before = await forwards();
    const denied = await call(b.url, location, { method: 'PATCH', headers: { ...chunkHeaders(0, chunk), ...BOB }, body: chunk });
    assert.equal(denied.status, 403);
    assert.equal(parseOciError(await denied.text()).code, 'DENIED');
    const anonymous = await fetch(`${b.url}${location}`, { method: 'PATCH', headers: chunkHeaders(0, chunk), body: new Uint8Array(chunk) });
    assert.equal(anonymous.status, 401);
    await anonymous.arrayBuffer();
    const bobStatus = await call(b.url, location, { headers: BOB });
    assert.equal(bobStatus.status, 403, 'an upload’s status is push too');
    await bobStatus.arrayBuffer();
    assert.equal(await forwards(), before, 'nothing was passed on');
    assert.equal(a.uploads.get(TEAM_APP, uuid).offset, 0, 'the session got no byte');
    assert.equal((await call(a.url, location, { method: 'DELETE' })).status, 204);
  });

  it('the owner trusts the peer secret, not the client: without it or with another one it refuses; a replica with another secret gets 503, the session is untouched', async () => {
    const { location, uuid } = await start(a);
    for (const headers of [{}, { 'x-hubcache-peer-secret': 'wrong!' }] as Record<string, string>[]) {
      const res = await fetch(`${a.peerUrl}/internal/uploads${location}`, { headers: { ...headers, ...ALICE } });
      assert.equal(res.status, 403);
      await res.arrayBuffer();
    }
    const withSecret = await fetch(`${a.peerUrl}/internal/uploads${location}`, { headers: { 'x-hubcache-peer-secret': SECRET } });
    assert.equal(withSecret.status, 204, 'the peer, with the secret, is served without a login');
    assert.equal((await fetch(`${a.peerUrl}/internal/uploads/v2/team/app/manifests/v1`, { headers: { 'x-hubcache-peer-secret': SECRET } })).status, 404, 'uploads only');

    const stranger = await startReplica('d', shared, { secret: 'another secret' });
    try {
      const chunk = seededBytes('stranger', 4 * 1024 * 1024);
      const res = await call(stranger.url, location, { method: 'PATCH', headers: chunkHeaders(0, chunk), body: chunk });
      assert.equal(res.status, 503);
      assert.equal(parseOciError(await res.text()).code, 'UNAVAILABLE');
      assert.equal(await stranger.metrics.value('hubcache_cluster_upload_forwards_total', { outcome: 'refused' }), 1);
    } finally {
      await stranger.close();
    }
    assert.equal(a.uploads.get(TEAM_APP, uuid).offset, 0);
    assert.ok(await b.coordinator.uploadOwner(uuid), 'the record stays');
    assert.equal((await call(b.url, location, { method: 'DELETE' })).status, 204);
  });

  it('owner gone mid-session: 404 BLOB_UPLOAD_UNKNOWN on the others at once, the record removed, nothing visible', async () => {
    const owner = await startReplica('e', shared);
    const bytes = seededBytes('orphan', 200_000);
    const digest: Digest = sha256Digest(bytes);
    const { location, uuid } = await start(owner);
    const half = bytes.subarray(0, 100_000);
    assert.equal((await call(b.url, location, { method: 'PATCH', headers: chunkHeaders(0, half), body: half })).status, 202);
    await owner.die();
    assert.ok(await b.coordinator.uploadOwner(uuid), 'a dead owner ends nothing: its record is still there');
    const rest = bytes.subarray(100_000);
    const res = await call(b.url, location, { method: 'PATCH', headers: chunkHeaders(half.length, rest), body: rest });
    assert.equal(res.status, 404);
    assert.equal(parseOciError(await res.text()).code, 'BLOB_UPLOAD_UNKNOWN');
    assert.equal(await b.metrics.value('hubcache_cluster_upload_forwards_total', { outcome: 'owner_gone' }), 1);
    assert.equal(await c.coordinator.uploadOwner(uuid), undefined, 'the record was removed');
    const put = await call(c.url, `${location}?digest=${digest}`, { method: 'PUT' });
    assert.equal(put.status, 404);
    assert.equal(parseOciError(await put.text()).code, 'BLOB_UPLOAD_UNKNOWN');
    assert.equal(await shared.blobs.stat(digest), undefined, 'nothing half-written is visible');
    // The client starts over, on any replica.
    const again = await start(c);
    const put2 = await call(a.url, `${again.location}?digest=${digest}`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: bytes });
    assert.equal(put2.status, 201, await put2.text());
  });
});
