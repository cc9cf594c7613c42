/**
 * Proves the fake Docker Hub (test/support) behaves as the hubcache tests assume: real
 * distribution behind token auth, byte-exact manifests, CDN redirects that refuse tokens, and
 * every injectable fault observable from a plain HTTP client.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, afterEach, before, describe, it } from 'node:test';
import { digestOf, makeImage, makeIndex, type TestImage } from './support/images.js';
import { parseChallenge, RegistryClient } from './support/push.js';
import { rawRequest, type RawResponse } from './support/raw-http.js';
import { skopeoCopy, skopeoInspectRaw } from './support/skopeo.js';
import { startUpstream, type Upstream } from './support/upstream-harness.js';

const MiB = 1024 * 1024;

function jwtParts(token: string): { header: Record<string, unknown>; claims: Record<string, any> } {
  const [h, c] = token.split('.');
  return { header: JSON.parse(Buffer.from(h!, 'base64url').toString()), claims: JSON.parse(Buffer.from(c!, 'base64url').toString()) };
}

describe('upstream harness (fake Docker Hub)', () => {
  let up: Upstream;
  let docker: TestImage;
  let oci: TestImage;
  let ociIndex: TestImage;
  let dockerList: TestImage;
  const scratch = mkdtempSync(join(tmpdir(), 'hubcache-harness-test-'));

  /** A valid pull token for `repo`, minted directly (tests of the front shouldn't depend on the dance). */
  const bearer = (repo = 'library/alpine') => ({
    authorization: `Bearer ${up.tokenServer.issueToken([{ type: 'repository', name: repo, actions: ['pull'] }])}`,
  });
  const blobUrl = (digest: string, repo = 'library/alpine') => `${up.url}/v2/${repo}/blobs/${digest}`;

  before(async () => {
    docker = await makeImage('docker', { seed: 'harness', layerSize: MiB });
    oci = await makeImage('oci', { seed: 'harness', layerSize: MiB });
    ociIndex = await makeIndex('oci', { seed: 'harness', layerSize: MiB / 2, layers: 1 });
    dockerList = await makeIndex('docker', { seed: 'harness', layerSize: MiB / 2, layers: 1 });
    up = await startUpstream({ cdn: { redirect: false }, rateLimit: true });
    await up.push(docker, 'library/alpine', '3.20');
    await up.push(oci, 'library/ocimage', 'v1');
    await up.push(ociIndex, 'library/multi', 'oci');
    await up.push(dockerList, 'library/multi', 'docker');
  });

  afterEach(() => {
    up.front.clearFaults();
    up.front.setCdnRedirect(false);
  });

  after(async () => {
    await up?.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('generates the same images from the same seed, different ones from another', async () => {
    const again = await makeImage('docker', { seed: 'harness', layerSize: MiB });
    assert.equal(again.digest, docker.digest);
    assert.deepEqual([...again.blobs.keys()], [...docker.blobs.keys()]);
    const other = await makeImage('docker', { seed: 'other', layerSize: MiB });
    assert.notEqual(other.layers[0]!.digest, docker.layers[0]!.digest);
    const config = JSON.parse(docker.config!.bytes().toString());
    assert.equal(config.rootfs.diff_ids.length, 2);
    assert.equal(new Set(ociIndex.children.flatMap((c) => c.layers.map((l) => l.digest))).size, 2, 'each platform has its own layer');
  });

  it('token server: libtrust kid, credentials, scope intersection, counters', async () => {
    const ts = up.tokenServer;
    assert.match(ts.keyId, /^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/);
    ts.reset();
    const q = (scopes: string[]) => `${ts.realm}?service=${ts.service}&${scopes.map((s) => `scope=${encodeURIComponent(s)}`).join('&')}`;
    const basic = (u: string, p: string) => ({ authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}` });

    const bad = await fetch(q(['repository:library/alpine:pull']), { headers: basic('pusher', 'wrong') });
    assert.equal(bad.status, 401);

    const anon = await fetch(q(['repository:library/alpine:pull,push', 'repository:library/multi:pull']));
    assert.equal(anon.status, 200);
    const anonJson = (await anon.json()) as { token: string; access_token: string; expires_in: number; issued_at: string };
    assert.equal(anonJson.token, anonJson.access_token);
    assert.equal(anonJson.expires_in, 300);
    const { header, claims } = jwtParts(anonJson.token);
    assert.equal(header.kid, ts.keyId);
    assert.equal(header.alg, 'RS256');
    assert.equal(claims.aud, ts.service);
    assert.equal(claims.iss, ts.issuer);
    assert.deepEqual(claims.access, [
      { type: 'repository', name: 'library/alpine', actions: ['pull'] }, // anonymous never gets push
      { type: 'repository', name: 'library/multi', actions: ['pull'] },
    ]);

    const auth = await fetch(q(['repository:library/alpine:pull,push']), { headers: basic('pusher', 'secret') });
    assert.deepEqual(jwtParts(((await auth.json()) as { token: string }).token).claims.access[0].actions, ['pull', 'push']);

    assert.deepEqual(ts.stats, { requests: 3, withBasic: 2, anonymous: 1, rejected: 1, issued: 2 });
    assert.equal(ts.authorizationHeaders.length, 2);
    assert.equal(ts.requests[2]!.account, 'pusher');
  });

  it('the registry challenges with the token server realm, and the front passes it through', async () => {
    const r = await rawRequest(`${up.url}/v2/library/alpine/manifests/3.20`);
    assert.equal(r.status, 401);
    const ch = parseChallenge(String(r.headers['www-authenticate']));
    assert.equal(ch?.scheme, 'Bearer');
    assert.equal(ch?.params.realm, up.tokenServer.realm);
    assert.equal(ch?.params.service, up.tokenServer.service);
    assert.equal(ch?.params.scope, 'repository:library/alpine:pull');
  });

  it('serves every pushed manifest byte-exact through the front (skopeo inspect --raw)', async () => {
    const refs: Array<[string, TestImage]> = [
      ['library/alpine:3.20', docker],
      ['library/ocimage:v1', oci],
      ['library/multi:oci', ociIndex],
      ['library/multi:docker', dockerList],
      [`library/multi@${dockerList.children[1]!.digest}`, dockerList.children[1]!],
    ];
    await Promise.all(
      refs.map(async ([ref, image]) => {
        const raw = await skopeoInspectRaw(`docker://${up.host}/${ref}`);
        assert.equal(digestOf(raw), image.digest, ref);
        assert.ok(raw.equals(image.manifest), ref);
      }),
    );
    // And the registry labels them with our media types.
    const r = await rawRequest(`${up.url}/v2/library/multi/manifests/docker`, {
      headers: { ...bearer('library/multi'), accept: dockerList.mediaType },
    });
    assert.equal(r.headers['content-type'], dockerList.mediaType);
    assert.equal(r.headers['docker-content-digest'], dockerList.digest);
  });

  it('skopeo copy --all through the front into dir: keeps the index bytes and copies every platform', async () => {
    for (const [tag, image] of [
      ['oci', ociIndex],
      ['docker', dockerList],
    ] as const) {
      const dest = join(scratch, `copy-${tag}`);
      await skopeoCopy(`docker://${up.host}/library/multi:${tag}`, `dir:${dest}`, { all: true });
      assert.equal(digestOf(readFileSync(join(dest, 'manifest.json'))), image.digest);
      for (const blob of image.blobs.values()) assert.ok(existsSync(join(dest, blob.digest.slice(7))), `${tag}: blob ${blob.digest}`);
    }
    assert.ok(up.front.count({ method: 'GET', kind: 'blob' }) >= dockerList.blobs.size);
  });

  it('adds Docker Hub rate-limit headers; only manifest GETs spend', async () => {
    up.front.setRateLimit({ limit: 100, remaining: 10 });
    const url = `${up.url}/v2/library/alpine/manifests/3.20`;
    const head = await rawRequest(url, { method: 'HEAD', headers: { ...bearer(), accept: docker.mediaType } });
    assert.equal(head.headers['ratelimit-remaining'], '10;w=21600');
    const get = await rawRequest(url, { headers: { ...bearer(), accept: docker.mediaType } });
    assert.equal(get.headers['ratelimit-limit'], '100;w=21600');
    assert.equal(get.headers['ratelimit-remaining'], '9;w=21600');
    assert.equal(get.headers['docker-ratelimit-source'], '127.0.0.1');
    assert.equal(up.front.rateLimitRemaining, 9);
    const blob = await rawRequest(blobUrl(docker.config!.digest), { headers: bearer() });
    assert.equal(blob.headers['ratelimit-remaining'], undefined);

    up.front.setRateLimit({ remaining: 0, enforce: true });
    const over = await rawRequest(url, { headers: bearer() });
    assert.equal(over.status, 429);
    assert.equal(JSON.parse(over.body.toString()).errors[0].code, 'TOOMANYREQUESTS');
    up.front.setRateLimit(true);
  });

  it('rejects expired tokens like Docker Hub (distribution alone would accept them for 60 s more)', async () => {
    up.tokenServer.setExpiresIn(-1);
    const expired = bearer();
    up.tokenServer.setExpiresIn(300);
    const url = `${up.url}/v2/library/alpine/manifests/3.20`;
    const r = await rawRequest(url, { headers: { ...expired, accept: docker.mediaType } });
    assert.equal(r.status, 401);
    assert.match(String(r.headers['www-authenticate']), /^Bearer realm=/);
    assert.equal(up.front.filter({ kind: 'manifest' }).at(-1)!.expiredToken, true);
    up.front.setStrictTokenExpiry(false);
    try {
      assert.equal((await rawRequest(url, { headers: { ...expired, accept: docker.mediaType } })).status, 200);
    } finally {
      up.front.setStrictTokenExpiry(true);
    }
  });

  it('accepts pushes through the front too (upload Locations point at the front)', async () => {
    const small = await makeImage('docker', { seed: 'via-front', layerSize: 4096, layers: 1 });
    const client = new RegistryClient({ url: up.url, credentials: up.credentials });
    assert.equal(await client.pushImage(small, 'library/viafront', 'x'), small.digest);
    assert.equal(up.front.count({ kind: 'upload', method: 'PUT', status: 201 }), small.blobs.size);
  });

  it('records requests: kind, auth, range, status; waitForRequests sees past and future', async () => {
    up.front.reset();
    const layer = docker.layers[0]!;
    const pending = up.front.waitForRequests({ kind: 'blob', hasRange: true, status: 206 });
    const r = await rawRequest(blobUrl(layer.digest) + '?ns=docker.io', { headers: { ...bearer(), range: 'bytes=10-19' } });
    assert.equal(r.status, 206);
    assert.ok(r.body.equals(layer.bytes().subarray(10, 20)));
    const [rec] = await pending;
    assert.equal(rec!.rangeHeader, 'bytes=10-19');
    assert.equal(rec!.hadAuthorization, true);
    assert.equal(rec!.repo, 'library/alpine');
    assert.equal(rec!.digest, layer.digest);
    assert.equal(rec!.url.endsWith('?ns=docker.io'), true);
    await rawRequest(`${up.url}/v2/`);
    assert.equal(up.front.count({ kind: 'ping', status: 401 }), 1);
    assert.equal(up.front.count({ method: 'GET', kind: 'blob' }), 1);
  });

  describe('CDN redirect', () => {
    it('redirects authorized blob GETs to a CDN that serves without Authorization and rejects it with', async () => {
      up.front.setCdnRedirect(true);
      const cdn = up.cdn!;
      const layer = docker.layers[1]!;
      const anon = await rawRequest(blobUrl(layer.digest));
      assert.equal(anon.status, 401, 'unauthorized requests are not redirected');

      const r = await rawRequest(blobUrl(layer.digest), { headers: bearer() });
      assert.equal(r.status, 307);
      const location = String(r.headers.location);
      assert.ok(location.startsWith(`${cdn.url}/cdn/${layer.digest}?`), location);

      const ok = await rawRequest(location);
      assert.equal(ok.status, 200);
      assert.equal(digestOf(ok.body), layer.digest);

      const range = await rawRequest(location, { headers: { range: 'bytes=100-' } });
      assert.equal(range.status, 206);
      assert.equal(range.headers['content-range'], `bytes 100-${layer.size - 1}/${layer.size}`);
      assert.ok(range.body.equals(layer.bytes().subarray(100)));
      assert.equal((await rawRequest(location, { headers: { range: `bytes=${layer.size}-` } })).status, 416);

      const leaked = await rawRequest(location, { headers: bearer() });
      assert.equal(leaked.status, 400);
      assert.equal(cdn.rejectedAuthorization.length, 1);
      assert.equal((await rawRequest(location.replace(/sig=\w+/, 'sig=00'))).status, 403);
      assert.equal(up.front.count({ via: 'cdn', hadAuthorization: true }), 1);
    });

    it('a real client (skopeo) follows the redirect without sending its token', async () => {
      up.front.setCdnRedirect(true);
      up.front.reset();
      const rejectedBefore = up.cdn!.rejectedAuthorization.length;
      await skopeoCopy(`docker://${up.host}/library/ocimage:v1`, `dir:${join(scratch, 'cdn-copy')}`);
      assert.equal(up.front.count({ via: 'front', kind: 'blob', status: 307 }), oci.blobs.size);
      assert.equal(up.front.count({ via: 'cdn', status: 200, hadAuthorization: false }), oci.blobs.size);
      assert.equal(up.cdn!.rejectedAuthorization.length, rejectedBefore);
    });
  });

  describe('faults', () => {
    const layer = () => docker.layers[0]!;

    it('status: answers the status with an OCI error, only `times` times, only for matching requests', async () => {
      const fault = up.front.inject({ type: 'status', status: 503, times: 1, when: { kind: 'blob', method: 'GET', digest: layer().digest } });
      const other = await rawRequest(blobUrl(docker.config!.digest), { headers: bearer() });
      assert.equal(other.status, 200, 'other digest untouched');
      const failed = await rawRequest(blobUrl(layer().digest), { headers: bearer() });
      assert.equal(failed.status, 503);
      assert.equal(JSON.parse(failed.body.toString()).errors[0].code, 'UNAVAILABLE');
      const again = await rawRequest(blobUrl(layer().digest), { headers: bearer() });
      assert.equal(again.status, 200);
      assert.equal(fault.hits, 1);
      assert.equal(up.front.count({ fault: 'status', status: 503 }), 1);
    });

    it('rateLimit: 429 TOOMANYREQUESTS with remaining 0 and retry-after', async () => {
      up.front.inject({ type: 'rateLimit', retryAfter: 42, when: { kind: 'manifest' } });
      const r = await rawRequest(`${up.url}/v2/library/alpine/manifests/3.20`, { headers: bearer() });
      assert.equal(r.status, 429);
      assert.equal(r.headers['retry-after'], '42');
      assert.equal(r.headers['ratelimit-remaining'], '0;w=21600');
      assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'TOOMANYREQUESTS');
    });

    it('truncate: full Content-Length promised, connection closed after K bytes', async () => {
      up.front.inject({ type: 'truncate', afterBytes: 1000, when: { kind: 'blob' } });
      // A 401 does not use the fault up: only a body does.
      assert.equal((await rawRequest(blobUrl(layer().digest))).status, 401);
      const r = await rawRequest(blobUrl(layer().digest), { headers: bearer() });
      assert.equal(r.status, 200);
      assert.equal(Number(r.headers['content-length']), layer().size);
      assert.equal(r.body.length, 1000);
      assert.equal(r.outcome, 'error');
      assert.ok(r.body.equals(layer().bytes().subarray(0, 1000)));
      assert.equal((await up.front.waitForEnd({ fault: 'truncate' })).outcome, 'truncated');
    });

    it('reset: the connection is reset before any response', async () => {
      up.front.inject({ type: 'reset', times: 1 });
      const r = await rawRequest(blobUrl(layer().digest), { headers: bearer() });
      assert.equal(r.status, undefined);
      assert.equal(r.errorCode, 'ECONNRESET');
    });

    it('stall: headers and K bytes, then nothing until cleared, then the rest', async () => {
      const fault = up.front.inject({ type: 'stall', afterBytes: 4096, when: { kind: 'blob' } });
      let got = 0;
      let reached!: () => void;
      const reachedK = new Promise<void>((r) => (reached = r));
      const pending = rawRequest(blobUrl(layer().digest), {
        headers: bearer(),
        onData: (c) => {
          got += c.length;
          if (got >= 4096) reached();
        },
      });
      await reachedK;
      assert.equal(got, 4096, 'exactly K bytes before the stall');
      const rec = await fault.hit();
      assert.equal(rec.outcome, undefined, 'still open');
      fault.clear();
      const r = await pending;
      assert.equal(r.outcome, 'complete');
      assert.equal(digestOf(r.body), layer().digest);
    });

    it('wrongBytes: same length, one byte flipped in the middle', async () => {
      up.front.inject({ type: 'wrongBytes', when: { kind: 'blob', digest: layer().digest } });
      const r = await rawRequest(blobUrl(layer().digest), { headers: bearer() });
      assert.equal(r.status, 200);
      assert.equal(r.body.length, layer().size);
      const want = layer().bytes();
      const diff = [...r.body.keys()].filter((i) => r.body[i] !== want[i]);
      assert.deepEqual(diff, [Math.floor(layer().size / 2)]);
    });

    it('slow: throttles the body; the client sees bytes before the upstream finished sending', async () => {
      const size = layer().size;
      up.front.inject({ type: 'slow', bytesPerInterval: 128 * 1024, intervalMs: 20, when: { kind: 'blob' } });
      const started = performance.now();
      const ended = up.front.waitForEnd({ fault: 'slow' });
      const r = await rawRequest(blobUrl(layer().digest), { headers: bearer() });
      const rec = await ended;
      assert.equal(digestOf(r.body), layer().digest);
      assert.ok(r.firstByteAt! < rec.endedAt!, 'first byte arrived before the body was finished');
      assert.ok(performance.now() - started >= Math.floor(size / (128 * 1024)) * 20, 'throttled');
    });

    it('rate: paces the body like a link of that speed (never faster), bytes intact', async () => {
      const size = layer().size;
      const bytesPerSecond = 8 * 1024 * 1024;
      up.front.inject({ type: 'rate', bytesPerSecond, when: { kind: 'blob' } });
      const ended = up.front.waitForEnd({ fault: 'rate' });
      const r = await rawRequest(blobUrl(layer().digest), { headers: bearer() });
      const rec = await ended;
      assert.equal(digestOf(r.body), layer().digest);
      // Pacing is a lower bound by construction: the last chunk leaves only once the link "allows" it.
      const lastChunk = 64 * 1024;
      assert.ok(rec.endedAt! - rec.headersAt! >= ((size - lastChunk) / bytesPerSecond) * 1000, 'paced');
    });

    it('link: every exchange waits the latency (a new connection twice: the handshake) and bodies are paced at the link rate; faults still apply on top', async () => {
      const size = layer().size;
      const bytesPerSecond = 8 * 1024 * 1024;
      up.front.setLink({ latencyMs: 40, bytesPerSecond });
      try {
        const from = performance.now();
        const ended = up.front.waitForEnd({ kind: 'blob', digest: layer().digest, status: 200, test: (q) => q.startedAt >= from });
        const r = await rawRequest(blobUrl(layer().digest), { headers: bearer() });
        const rec = await ended;
        assert.equal(digestOf(r.body), layer().digest);
        // Lower bounds by construction: the request is held, the last chunk leaves only once the link allows it.
        assert.ok(rec.headersAt! - rec.startedAt >= 79, `a new connection waits two latencies (${rec.headersAt! - rec.startedAt} ms)`);
        const lastChunk = 64 * 1024;
        assert.ok(rec.endedAt! - rec.headersAt! >= ((size - lastChunk) / bytesPerSecond) * 1000, 'paced');
        const fault = up.front.inject({ type: 'status', status: 503, times: 1, when: { kind: 'blob' } });
        assert.equal((await rawRequest(blobUrl(layer().digest), { headers: bearer() })).status, 503);
        assert.equal(fault.hits, 1);
      } finally {
        up.front.setLink(undefined);
      }
    });

    it('delay: holds the request, then answers normally', async () => {
      up.front.inject({ type: 'delay', ms: 100, times: 1, when: { kind: 'ping' } });
      const t = performance.now();
      const r = await rawRequest(`${up.url}/v2/`);
      assert.equal(r.status, 401);
      assert.ok(performance.now() - t >= 95);
    });

    it('body faults hit the CDN response when redirects are on (the 307 does not use them up)', async () => {
      up.front.setCdnRedirect(true);
      const fault = up.front.inject({ type: 'truncate', afterBytes: 10, times: 1, when: { kind: 'blob' } });
      const redirect = await rawRequest(blobUrl(layer().digest), { headers: bearer() });
      assert.equal(redirect.status, 307);
      assert.equal(fault.hits, 0);
      const r = await rawRequest(String(redirect.headers.location));
      assert.equal(r.body.length, 10);
      assert.equal(r.outcome, 'error');
      assert.equal(fault.requests[0]!.via, 'cdn');
      up.front.inject({ type: 'status', status: 500, times: 1, when: { via: 'cdn' } });
      assert.equal((await rawRequest(String(redirect.headers.location))).status, 500);
      assert.equal((await rawRequest(String(redirect.headers.location))).status, 200);
    });

    it('down() refuses connections, up() accepts again on the same port', async () => {
      const port = new URL(up.url).port;
      await up.front.down();
      const refused = await rawRequest(`${up.url}/v2/`);
      assert.equal(refused.errorCode, 'ECONNREFUSED');
      await up.front.up();
      assert.equal(new URL(up.url).port, port);
      assert.equal((await rawRequest(`${up.url}/v2/`)).status, 401);
      await up.cdn!.down();
      assert.equal((await rawRequest(`${up.cdn!.url}/cdn/x`)).errorCode, 'ECONNREFUSED');
      await up.cdn!.up();
      assert.equal((await rawRequest(`${up.cdn!.url}/cdn/x`)).status, 404);
    });
  });

  it('ES256 tokens, pull requiring credentials, and close() releasing a stalled response', async () => {
    const priv = await startUpstream({ algorithm: 'ES256', anonymousPull: false });
    let stalled: Promise<RawResponse> | undefined;
    try {
      await priv.push(oci, 'team/app', 'v1');
      await assert.rejects(skopeoInspectRaw(`docker://${priv.host}/team/app:v1`), /unauthorized|authentication required/i);
      const raw = await skopeoInspectRaw(`docker://${priv.host}/team/app:v1`, { creds: 'pusher:secret' });
      assert.equal(digestOf(raw), oci.digest);
      assert.equal(jwtParts(priv.tokenServer.issueToken([])).header.alg, 'ES256');

      const fault = priv.front.inject({ type: 'stall', beforeHeaders: true });
      stalled = rawRequest(`${priv.url}/v2/`);
      await fault.hit();
    } finally {
      const t = performance.now();
      await priv.close();
      assert.ok(performance.now() - t < 5000, 'close did not wait for the stalled response');
    }
    const r = await stalled;
    assert.equal(r.outcome, 'error');
    assert.equal(r.status, undefined);
  });
});
