/**
 * One hubcache for several registries (issue 3), against a real hubcache process configured by a
 * YAML file with two token-auth distribution registries standing for docker.io and ghcr.io:
 * routing by ns / path prefix / default, cache keys per upstream with blobs shared by digest, no
 * open proxy (unconfigured registries, private redirect targets), repository filters, client
 * Authorization never forwarded, and the Via loop guard.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { metricValue } from '../support/hubcache-process.js';
import { digestOf, makeImage, type TestImage } from '../support/images.js';
import { rawRequest } from '../support/raw-http.js';
import { skopeoCopy } from '../support/skopeo.js';
import { SECOND, startTwoRegistries, type TwoRegistries } from '../support/two-registries.js';

const KiB = 1024;
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';

describe('several registries behind one hubcache', () => {
  let env: TwoRegistries;
  let canary: Server;
  let canaryHost: string;
  let canaryConnections = 0;
  let hubApp: TestImage; // docker.io org/app:1
  let ghcrApp: TestImage; // ghcr.io org/app:1: same repository name, other content
  let shared: TestImage; // on both registries
  let viaCdn: TestImage; // for the redirect guard
  let n = 0;
  const dest = () => join(env.dir, `copy-${n++}`);
  const url = (path: string) => `${env.hubcache.url}${path}`;
  const errorCode = (body: Buffer) => (JSON.parse(body.toString()) as { errors: Array<{ code: string; message: string }> }).errors[0]!;
  const upstreamRequests = async () => metricValue(await env.hubcache.metrics(), 'hubcache_upstream_requests_total');
  const frontRequests = () => env.hub.front.requests.length + env.second.front.requests.length;

  before(async () => {
    [hubApp, ghcrApp, shared, viaCdn] = await Promise.all([
      makeImage('docker', { seed: 'reg-hub-app', layerSize: 64 * KiB, layers: 1 }),
      makeImage('oci', { seed: 'reg-ghcr-app', layerSize: 64 * KiB, layers: 1 }),
      makeImage('oci', { seed: 'reg-shared', layerSize: 128 * KiB }),
      makeImage('oci', { seed: 'reg-via-cdn', layerSize: 64 * KiB, layers: 1 }),
    ]);
    // A listening socket that must never see a connection: requests naming it as a registry.
    canary = createServer((s) => {
      canaryConnections++;
      s.destroy();
    });
    await new Promise<void>((r) => canary.listen(0, '127.0.0.1', r));
    canaryHost = `127.0.0.1:${(canary.address() as { port: number }).port}`;
    env = await startTwoRegistries({
      instanceId: 'e2e-registries',
      secondSettings: { repositories: { allow: ['org/**', 'shared/**'], deny: ['org/forbidden'] } },
      // The same registry under another name, without the CDN allowed: its redirects are refused.
      extraUpstreams: { 'quay.io': { url: '$SECOND_URL', allowedRealmHosts: ['$SECOND_REALM'] } },
      seed: async (hub, second) => {
        await hub.push(hubApp, 'org/app', '1');
        await hub.push(shared, 'library/shared', '1');
        await second.push(ghcrApp, 'org/app', '1');
        await second.push(ghcrApp, 'org/forbidden', '1');
        await second.push(shared, 'shared/base', '1');
        await second.push(viaCdn, 'org/cdn', '1');
      },
    });
  });

  after(async () => {
    await env?.close();
    await new Promise((r) => canary?.close(r));
    for (const i of [hubApp, ghcrApp, shared, viaCdn]) i?.dispose();
  });

  it('routes by path prefix (skopeo naming the mirror), by ?ns= and by default; manifests are cached per upstream', async () => {
    const viaPrefix = dest();
    await skopeoCopy(`docker://${env.hubcache.host}/${SECOND}/org/app:1`, `dir:${viaPrefix}`);
    assert.equal(digestOf(readFileSync(join(viaPrefix, 'manifest.json'))), ghcrApp.digest, 'ghcr.io content');
    const viaDefault = dest();
    await skopeoCopy(`docker://${env.hubcache.host}/org/app:1`, `dir:${viaDefault}`);
    assert.equal(digestOf(readFileSync(join(viaDefault, 'manifest.json'))), hubApp.digest, 'docker.io content for the same repository name');

    const byNs = await rawRequest(url(`/v2/org/app/manifests/1?ns=${SECOND}`), { headers: { accept: ACCEPT } });
    assert.equal(byNs.status, 200);
    assert.equal(byNs.headers['docker-content-digest'], ghcrApp.digest);
    assert.equal(byNs.headers['x-hubcache-cache'], 'hit', 'the tag cached by the path-prefix pull: same upstream + repository');
    const hubNs = await rawRequest(url('/v2/org/app/manifests/1?ns=docker.io'), { headers: { accept: ACCEPT } });
    assert.equal(hubNs.headers['docker-content-digest'], hubApp.digest);
    assert.equal(hubNs.headers['x-hubcache-cache'], 'hit');
    assert.equal(env.hub.front.count({ repo: 'org/app', kind: 'manifest', method: 'GET', status: 200 }), 1);
    assert.equal(env.second.front.count({ repo: 'org/app', kind: 'manifest', method: 'GET', status: 200 }), 1);
  });

  it('blobs are shared across upstreams by digest: a pull from the second registry downloads no blob it already has', async () => {
    await skopeoCopy(`docker://${env.hubcache.host}/library/shared:1`, `dir:${dest()}`);
    const before = env.second.front.count({ kind: 'blob' }) + env.second.front.count({ via: 'cdn' });
    const d = dest();
    await skopeoCopy(`docker://${env.hubcache.host}/${SECOND}/shared/base:1`, `dir:${d}`);
    assert.equal(digestOf(readFileSync(join(d, 'manifest.json'))), shared.digest);
    assert.equal(env.second.front.count({ kind: 'blob' }) + env.second.front.count({ via: 'cdn' }) - before, 0, 'no blob request to ghcr.io');
    assert.equal(env.second.front.count({ repo: 'shared/base', kind: 'manifest', method: 'GET', status: 200 }), 1, 'the manifest came from ghcr.io itself');
  });

  it('an unconfigured registry is a 404 UPSTREAM_UNKNOWN and causes no outbound request, however it is named', async () => {
    const upBefore = await upstreamRequests();
    const frontBefore = frontRequests();
    const blob = `sha256:${'a'.repeat(64)}`;
    for (const path of [
      `/v2/x/manifests/1?ns=${canaryHost}`,
      `/v2/${canaryHost}/x/manifests/1`,
      `/v2/${canaryHost}/x/blobs/${blob}`,
      '/v2/169.254.169.254/latest/manifests/1',
      '/v2/x/manifests/1?ns=169.254.169.254',
      `/v2/localhost/x/blobs/${blob}`,
      '/v2/x/tags/list?ns=evil.example',
      '/v2/registry-1.docker.io.evil.example/x/manifests/1',
    ]) {
      for (const method of ['GET', 'HEAD']) {
        if (method === 'HEAD' && path.includes('/tags/')) continue;
        const r = await rawRequest(url(path), { method });
        assert.equal(r.status, 404, `${method} ${path}`);
        if (method === 'GET') {
          const e = errorCode(r.body);
          assert.equal(e.code, 'UPSTREAM_UNKNOWN', path);
          assert.match(e.message, /registry not configured/);
        }
      }
    }
    assert.equal(canaryConnections, 0, 'nothing connected to the host named in ns / the path');
    assert.equal(frontRequests(), frontBefore, 'no request reached any configured upstream either');
    assert.equal(await upstreamRequests(), upBefore);
  });

  it('repository filters: denied or not allowed repositories are 403 DENIED before anything goes upstream', async () => {
    const frontBefore = frontRequests();
    for (const path of [`/v2/${SECOND}/org/forbidden/manifests/1`, `/v2/org/forbidden/manifests/1?ns=${SECOND}`, `/v2/${SECOND}/stranger/app/manifests/1`, `/v2/${SECOND}/org/forbidden/blobs/${ghcrApp.layers[0]!.digest}`]) {
      const r = await rawRequest(url(path));
      assert.equal(r.status, 403, path);
      assert.equal(errorCode(r.body).code, 'DENIED');
      assert.match(errorCode(r.body).message, /may not be pulled through this mirror/);
    }
    assert.equal(frontRequests(), frontBefore);
    // The same content is pullable where it is allowed.
    assert.equal((await rawRequest(url(`/v2/${SECOND}/org/app/blobs/${ghcrApp.layers[0]!.digest}`))).status, 200);
  });

  it("a client's Authorization (dockerd forwards Docker Hub credentials to mirrors) is ignored and never sent upstream", async () => {
    const secret = 'hub-token-of-the-user-0123456789';
    const img = await makeImage('docker', { seed: 'reg-auth', layerSize: 32 * KiB, layers: 1 });
    await env.hub.push(img, 'library/authed', '1');
    for (const authorization of [`Bearer ${secret}`, `Basic ${Buffer.from(`user:${secret}`).toString('base64')}`]) {
      const headers = { authorization, accept: img.mediaType };
      const m = await rawRequest(url('/v2/library/authed/manifests/1'), { headers });
      assert.equal(m.status, 200);
      assert.equal(m.headers['docker-content-digest'], img.digest);
      for (const b of img.blobs.values()) {
        const r = await rawRequest(url(`/v2/library/authed/blobs/${b.digest}`), { headers });
        assert.equal(r.status, 200);
        assert.equal(digestOf(r.body), b.digest);
      }
    }
    const seen = [...env.hub.front.requests, ...env.second.front.requests].map((r) => JSON.stringify(r.headers));
    assert.ok(seen.length > 0);
    assert.ok(!seen.some((h) => h.includes(secret) || h.includes(Buffer.from(`user:${secret}`).toString('base64'))), 'the client header reached no upstream');
    assert.ok(!env.hub.tokenServer.authorizationHeaders.some((h) => String(h).includes(secret)), 'nor the token service');
    img.dispose();
  });

  it("Via: upstream requests carry this instance's id; a request that already carries it is refused as a loop", async () => {
    const token = `hubcache-${env.instanceId}`;
    const upstreamVia = env.second.front.requests.map((r) => String(r.headers.via));
    assert.ok(upstreamVia.length > 0 && upstreamVia.every((v) => v === `1.1 ${token}`), upstreamVia.join(' | '));

    const frontBefore = frontRequests();
    for (const via of [`1.1 ${token}`, `1.0 proxy.example, 1.1 ${token}`]) {
      const r = await rawRequest(url(`/v2/${SECOND}/org/app/manifests/1`), { headers: { via, accept: ACCEPT } });
      assert.equal(r.status, 508, via);
      const e = errorCode(r.body);
      assert.equal(e.code, 'LOOP_DETECTED');
      assert.match(e.message, /request loop detected/);
    }
    assert.equal(frontRequests(), frontBefore);
    // Another hubcache in the chain is fine.
    const chained = await rawRequest(url(`/v2/${SECOND}/org/app/manifests/1`), { headers: { via: '1.1 hubcache-other-instance', accept: ACCEPT } });
    assert.equal(chained.status, 200);
  });

  it('a blob redirect to a private address that the upstream does not allow is refused, and the CDN is never contacted', async () => {
    const layer = viaCdn.layers[0]!;
    const refused = await rawRequest(url(`/v2/quay.io/org/cdn/blobs/${layer.digest}`));
    assert.equal(refused.status, 502);
    const e = errorCode(refused.body);
    assert.equal(e.code, 'UPSTREAM_ERROR');
    assert.equal(env.second.front.count({ kind: 'blob', digest: layer.digest, status: 307 }), 1, 'the registry redirected');
    assert.equal(env.second.front.count({ via: 'cdn', digest: layer.digest }), 0, 'hubcache did not follow');
    const line = await env.hubcache.waitForLog((l) => l.message === 'request' && String(l.path).includes(`/v2/quay.io/org/cdn/blobs/${layer.digest}`));
    assert.equal(line.status, 502);

    // The same registry as ghcr.io, with its CDN listed in allowedRedirectHosts, serves it.
    const ok = await rawRequest(url(`/v2/${SECOND}/org/cdn/blobs/${layer.digest}`));
    assert.equal(ok.status, 200);
    assert.equal(digestOf(ok.body), layer.digest);
    assert.equal(env.second.front.count({ via: 'cdn', digest: layer.digest, status: 200 }), 1);
  });
});
