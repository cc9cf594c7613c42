/**
 * Issue 6: a real Docker engine (Debian's docker.io 20.10) pulls through hubcache configured as
 * in /etc/docker/daemon.json (`registry-mirrors` + `insecure-registries`). The engine runs in its
 * own network namespace (test/support/dockerd.ts): its fallback to Docker Hub fails at once, so a
 * pull that succeeds was served by hubcache.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { dockerHubLoginConfig, mountsUnder, startDockerEngine, type DockerEngine, type EngineRequest } from '../support/dockerd.js';
import { metricValue, startHubcacheProcess, type HubcacheProcess } from '../support/hubcache-process.js';
import { MediaTypes, makeImage, makeIndex, type TestImage } from '../support/images.js';
import { rawRequest } from '../support/raw-http.js';
import { startUpstream, type Upstream } from '../support/upstream-harness.js';

const MiB = 1024 * 1024;
// The engine pulls its own platform out of an index.
const HOST_ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';

type AccessLine = { method?: string; path?: string; route?: string; status?: number; cache?: string };

describe('dockerd with registry-mirrors pulls through hubcache', () => {
  let up: Upstream;
  let hc: HubcacheProcess;
  let engine: DockerEngine;
  let small: TestImage; // Docker schema2, pulled by short name
  let oci: TestImage; // OCI manifest, pulled by library/ name
  let multi: TestImage; // OCI index linux/amd64 + linux/arm64
  let pinned: TestImage; // pushed by digest only, pulled by digest
  let authImage: TestImage;
  let rawImage: TestImage;
  let notCached: TestImage;
  const scratch = mkdtempSync(join(tmpdir(), 'hubcache-dockerd-test-'));
  /** What the engine sent for each pull of the first test, by reference. */
  const sent = new Map<string, EngineRequest[]>();

  /** The images and the references the first engine pulls them by. */
  const pulls = () =>
    [
      { ref: 'small:1.0', repo: 'small', image: small },
      { ref: 'library/ocimg:1.0', repo: 'ocimg', image: oci },
      { ref: 'multi:1.0', repo: 'multi', image: multi },
      { ref: `pinned@${pinned.digest}`, repo: 'pinned', image: pinned },
    ] as const;
  const hostChild = () => multi.children.find((c) => c.platform?.architecture === HOST_ARCH)!;
  const accessLog = (pred: (l: AccessLine) => boolean) => (hc.logs as AccessLine[]).filter((l) => (l as { message?: string }).message === 'request' && pred(l));

  /** docker pull through `e`, recording what it sent to the mirror. */
  async function pull(e: DockerEngine, ref: string, configDir?: string) {
    const mark = e.requests.length;
    const out = await e.docker(['pull', ref], { configDir });
    return { out, requests: e.requests.slice(mark) };
  }

  /** `{{json .RepoDigests}} {{.Id}} {{.Architecture}}` of a local image. */
  async function inspect(e: DockerEngine, ref: string) {
    const [repoDigests, id, arch] = (await e.docker(['inspect', '--format', '{{json .RepoDigests}} {{.Id}} {{.Architecture}}', ref])).trim().split(' ');
    return { repoDigests: JSON.parse(repoDigests!) as string[], id, arch };
  }

  before(async () => {
    [small, oci, multi, pinned, authImage, rawImage, notCached] = await Promise.all([
      makeImage('docker', { seed: 'dockerd-small', layerSize: MiB, layers: 2 }),
      makeImage('oci', { seed: 'dockerd-oci', layerSize: MiB, layers: 1 }),
      makeIndex('oci', {
        seed: 'dockerd-multi',
        layerSize: MiB / 2,
        layers: 1,
        platforms: [
          { os: 'linux', architecture: 'amd64' },
          { os: 'linux', architecture: 'arm64' },
        ],
      }),
      makeImage('docker', { seed: 'dockerd-pinned', layerSize: MiB / 2, layers: 1 }),
      makeImage('docker', { seed: 'dockerd-auth', layerSize: MiB / 2, layers: 1 }),
      makeImage('oci', { seed: 'dockerd-raw', layerSize: MiB / 4, layers: 1 }),
      makeImage('docker', { seed: 'dockerd-notcached', layerSize: MiB / 4, layers: 1 }),
    ]);
    up = await startUpstream();
    await up.push(small, 'library/small', '1.0');
    await up.push(oci, 'library/ocimg', '1.0');
    await up.push(multi, 'library/multi', '1.0');
    await up.push(pinned, 'library/pinned');
    await up.push(authImage, 'library/authimg', '1.0');
    await up.push(rawImage, 'library/rawauth', '1.0');
    await up.push(notCached, 'library/notcached', '1.0');
    // Tags expire at once: every pull by tag revalidates with a HEAD (free against Docker Hub's
    // limit), so the outage test below exercises a stale serve, not just a fresh hit.
    hc = await startHubcacheProcess({ upstream: up, args: ['--tag-ttl', '0s'] });
    // If the engine can't run here, this rejects with dockerd's reason and every test fails.
    engine = await startDockerEngine({ mirrorTarget: hc.host });
  });

  after(async () => {
    await engine?.close();
    await hc?.close();
    await up?.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('is configured the way the README says and docker info lists the mirror', async () => {
    assert.deepEqual(engine.daemonConfig['registry-mirrors'], ['http://127.0.0.1:5000']);
    assert.deepEqual(engine.daemonConfig['insecure-registries'], ['127.0.0.1:5000']);
    const mirrors = JSON.parse(await engine.docker(['info', '--format', '{{json .RegistryConfig.Mirrors}}'])) as string[];
    assert.deepEqual(mirrors, ['http://127.0.0.1:5000/']);
    assert.match(await engine.docker(['info']), /Registry Mirrors:\s+http:\/\/127\.0\.0\.1:5000\//);
  });

  it('pulls by short name, library/ name and digest; schema2, OCI and a multi-platform index keep the upstream digests', async () => {
    for (const { ref, image } of pulls()) {
      const { out, requests } = await pull(engine, ref);
      sent.set(ref, requests);
      assert.match(out, new RegExp(`Digest: ${image.digest}`), `${ref}: the engine reports the upstream's digest`);
    }
    for (const { ref, repo, image } of pulls()) {
      const got = await inspect(engine, ref);
      assert.deepEqual(got.repoDigests, [`${repo}@${image.digest}`], ref);
      // The image ID is the config digest: the engine got the upstream's config, byte for byte.
      const config = image.config ?? hostChild().config!;
      assert.equal(got.id, config.digest, ref);
      assert.equal(got.arch, HOST_ARCH, ref);
    }
    const listed = (await engine.docker(['images', '--digests', '--format', '{{.Repository}} {{.Tag}} {{.Digest}}'])).trim().split('\n').sort();
    assert.deepEqual(listed, [
      `multi 1.0 ${multi.digest}`,
      `ocimg 1.0 ${oci.digest}`, // the engine shortens docker.io/library/ names
      `pinned <none> ${pinned.digest}`,
      `small 1.0 ${small.digest}`,
    ]);
    // The short and the library/ forms are one image: pulling `library/small` finds it current.
    assert.match(await engine.docker(['pull', 'library/small:1.0']), /Image is up to date for small:1\.0/);

    // Only the engine's platform of the index came from upstream.
    const other = multi.children.find((c) => c !== hostChild())!;
    for (const b of other.blobs.keys()) assert.equal(up.front.count({ kind: 'blob', digest: b }), 0, `blob of ${other.platform?.architecture} not fetched`);
    assert.equal(up.front.count({ kind: 'manifest', digest: other.digest }), 0);
    for (const b of hostChild().blobs.keys()) assert.equal(up.front.count({ method: 'GET', kind: 'blob', digest: b, status: 200 }), 1);
  });

  it("serves the engine's request pattern: GET /v2/, HEAD by tag, GET by digest, blob GETs", () => {
    const requests = sent.get('small:1.0');
    assert.ok(requests, 'the pull test ran first');
    const lines = requests.map((r) => `${r.method} ${r.url}`);
    assert.deepEqual(lines.slice(0, 3), ['GET /v2/', 'HEAD /v2/library/small/manifests/1.0', `GET /v2/library/small/manifests/${small.digest}`]);
    // Every blob once. The engine sometimes asks again for the rest of a blob it already got whole
    // (a Range request, seen about once in five runs, with hubcache's access log showing the first
    // answer complete): that is the engine's resume logic, allowed only in that form.
    assert.deepEqual([...new Set(lines.slice(3))].sort(), [...small.blobs.keys()].map((d) => `GET /v2/library/small/blobs/${d}`).sort());
    const seen = new Set<string>();
    for (const r of requests.slice(3)) {
      if (seen.has(r.url)) assert.match(String(r.headers.range ?? ''), /^bytes=\d+-/, `a blob asked twice without Range: ${r.url}`);
      seen.add(r.url);
    }
    // The engine asks for every manifest type hubcache can store, so nothing is converted.
    const accept = requests[1]!.headers.accept!.split(/,\s*/);
    for (const t of [MediaTypes.dockerManifest, MediaTypes.dockerManifestList, MediaTypes.ociManifest, MediaTypes.ociIndex]) assert.ok(accept.includes(t), t);
    assert.match(requests[0]!.headers['user-agent']!, /^docker\/20\.10/);

    // hubcache's access log has one line per request, each answered as the engine needs.
    const log = (method: string, path: string) => accessLog((l) => l.method === method && l.path === path);
    assert.equal(log('HEAD', '/v2/library/small/manifests/1.0')[0]?.status, 200);
    assert.equal(log('HEAD', '/v2/library/small/manifests/1.0')[0]?.cache, 'miss');
    assert.deepEqual(log('GET', `/v2/library/small/manifests/${small.digest}`).map((l) => [l.route, l.status, l.cache]), [['manifest', 200, 'hit']]);
    for (const d of small.blobs.keys()) assert.deepEqual(log('GET', `/v2/library/small/blobs/${d}`).map((l) => [l.route, l.status]), [['blob', 200]], d);
    assert.ok(accessLog((l) => l.route === 'base' && l.status === 200).length >= 4, 'a ping before each pull');

    // A pull by digest skips the tag: GET /v2/, then the manifest by digest.
    const byDigest = sent.get(`pinned@${pinned.digest}`)!.map((r) => `${r.method} ${r.url}`);
    assert.deepEqual(byDigest.slice(0, 2), ['GET /v2/', `GET /v2/library/pinned/manifests/${pinned.digest}`]);
    // The index: HEAD by tag, the index by digest, then the platform manifest by digest.
    const index = sent.get('multi:1.0')!.map((r) => `${r.method} ${r.url}`);
    assert.deepEqual(index.slice(0, 4), [
      'GET /v2/',
      'HEAD /v2/library/multi/manifests/1.0',
      `GET /v2/library/multi/manifests/${multi.digest}`,
      `GET /v2/library/multi/manifests/${hostChild().digest}`,
    ]);
  });

  it('a second engine with a fresh data-root pulls the same images without any upstream blob download', async () => {
    const second = await startDockerEngine({ mirrorTarget: hc.host });
    try {
      assert.notEqual(second.dataRoot, engine.dataRoot);
      assert.equal((await second.docker(['images', '-q'])).trim(), '', 'fresh data-root');
      const upstreamBefore = up.front.requests.length;
      const blobHitsBefore = metricValue(await hc.metrics(), 'hubcache_cache_requests_total', { kind: 'blob', outcome: 'hit' });
      for (const { ref, repo, image } of pulls()) {
        const { requests } = await pull(second, ref);
        assert.ok(requests.some((r) => r.url.startsWith(`/v2/library/${repo}/`)), `${ref} went through the mirror`);
        assert.deepEqual((await inspect(second, ref)).repoDigests, [`${repo}@${image.digest}`]);
      }
      const upstreamSince = up.front.requests.slice(upstreamBefore);
      assert.deepEqual(upstreamSince.filter((r) => r.kind === 'blob').map((r) => r.url), [], 'no upstream blob downloads');
      // With --tag-ttl 0s each tag was revalidated by a HEAD; nothing else went upstream, so the
      // second engine cost no Docker Hub pulls (only manifest GETs count).
      const tagged = pulls().filter((p) => !p.ref.includes('@'));
      assert.deepEqual(
        [...new Set(upstreamSince.filter((r) => r.status === 200).map((r) => `${r.method} ${r.url}`))].sort(),
        tagged.map((p) => `HEAD /v2/library/${p.repo}/manifests/1.0`).sort(),
      );
      assert.equal(upstreamSince.filter((r) => r.method !== 'HEAD').length, 0);
      const blobs = new Set(pulls().flatMap(({ image }) => [...(image.config ? image.blobs.keys() : hostChild().blobs.keys())]));
      const blobHits = metricValue(await hc.metrics(), 'hubcache_cache_requests_total', { kind: 'blob', outcome: 'hit' }) - blobHitsBefore;
      assert.ok(blobHits >= blobs.size, `${blobHits} blob hits for ${blobs.size} blobs`);
    } finally {
      await second.close();
    }
    // The harness removed everything the engine had: processes, mounts, the temp dir with its vfs data.
    assert.equal(existsSync(second.dir), false);
    assert.throws(() => process.kill(second.pid, 0), /ESRCH/);
    assert.deepEqual(mountsUnder(second.dir), []);
    assert.deepEqual(processesMentioning(second.dir), [], 'no dockerd, containerd or socat of it left');
  });

  it("with the user's Docker Hub credentials: no 401 loop, the pull succeeds, and the credential never goes upstream", async () => {
    const login = dockerHubLoginConfig(scratch, 'hubuser', 'hub-password');
    const basic = `Basic ${Buffer.from('hubuser:hub-password').toString('base64')}`;

    // Control: the engine does hand these credentials to a mirror that challenges for them (to the
    // token realm the mirror names). A 30-line registry stands in for such a mirror here.
    const seen: Array<{ url: string; authorization?: string }> = [];
    const challenging: Server = createServer((req, res) => {
      seen.push({ url: req.url!, authorization: req.headers.authorization });
      if (req.url!.startsWith('/token')) {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ token: 'mirror-token' }));
      } else if (!req.headers.authorization) {
        res.statusCode = 401;
        res.setHeader('www-authenticate', 'Bearer realm="http://127.0.0.1:5000/token",service="mirror"');
        res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
      } else {
        res.statusCode = 404;
        res.end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}');
      }
    });
    await new Promise<void>((resolve) => challenging.listen(0, '127.0.0.1', resolve));
    try {
      engine.mirrorTarget = `127.0.0.1:${(challenging.address() as AddressInfo).port}`;
      assert.notEqual((await engine.run(['pull', 'authimg:1.0'], { configDir: login })).code, 0);
      assert.ok(
        seen.some((r) => r.url.startsWith('/token?account=hubuser') && r.authorization === basic),
        `the engine sent the Hub credentials to the challenging mirror's realm: ${JSON.stringify(seen)}`,
      );
    } finally {
      engine.mirrorTarget = hc.host;
      challenging.close();
    }

    // hubcache never challenges (GET /v2/ is 200), so the engine pulls without sending them.
    const { out, requests } = await pull(engine, 'authimg:1.0', login);
    assert.match(out, new RegExp(`Digest: ${authImage.digest}`));
    assert.deepEqual(requests.filter((r) => r.headers.authorization !== undefined), [], 'engine 20.10 sends no Authorization to a mirror that does not ask');
    assert.deepEqual(accessLog((l) => l.status === 401), [], 'no 401 anywhere, so no loop');

    // A client that sends its Hub credential anyway (Basic or a Hub Bearer token): hubcache ignores it.
    const hubBearer = 'Bearer hub-issued-token-for-hubuser';
    const upstreamBefore = up.front.requests.length;
    const tokenRequestsBefore = up.tokenServer.authorizationHeaders.length;
    for (const authorization of [basic, hubBearer]) {
      const h = { authorization };
      assert.equal((await rawRequest(`${hc.url}/v2/`, { headers: h })).status, 200, authorization);
      const head = await rawRequest(`${hc.url}/v2/library/rawauth/manifests/1.0`, { method: 'HEAD', headers: { ...h, accept: rawImage.mediaType } });
      assert.equal(head.status, 200, authorization);
      assert.equal(head.headers['docker-content-digest'], rawImage.digest);
      const manifest = await rawRequest(`${hc.url}/v2/library/rawauth/manifests/${rawImage.digest}`, { headers: { ...h, accept: rawImage.mediaType } });
      assert.ok(manifest.body.equals(rawImage.manifest), authorization);
      for (const b of rawImage.blobs.values()) assert.equal((await rawRequest(`${hc.url}/v2/library/rawauth/blobs/${b.digest}`, { headers: h })).status, 200);
    }
    const upstreamSince = up.front.requests.slice(upstreamBefore);
    assert.ok(upstreamSince.some((r) => r.kind === 'blob'), 'the first round was a miss: hubcache did go upstream meanwhile');
    for (const r of up.front.requests) {
      assert.ok(r.authorization !== basic && r.authorization !== hubBearer, `${r.method} ${r.url} carried the client's credential upstream`);
    }
    const toTokenServer = up.tokenServer.authorizationHeaders.slice(tokenRequestsBefore);
    assert.ok(!toTokenServer.includes(basic), 'nor to the token server');
  });

  it("upstream down: cached images still pull; an uncached one fails, the engine's fallback says so, and hubcache's logs and metrics show the failure", async () => {
    const metric = async (method: string) => metricValue(await hc.metrics(), 'hubcache_http_requests_total', { route: 'manifest', method, status: '5xx' });
    const [head5xx, get5xx] = [await metric('HEAD'), await metric('GET')];
    await up.front.down();
    try {
      await engine.docker(['rmi', 'small:1.0']);
      const again = await pull(engine, 'small:1.0');
      assert.match(again.out, /Downloaded newer image for small:1\.0/, 'served from the cache while Docker Hub is down');
      assert.deepEqual((await inspect(engine, 'small:1.0')).repoDigests, [`small@${small.digest}`]);
      const staleHead = accessLog((l) => l.method === 'HEAD' && l.path === '/v2/library/small/manifests/1.0').at(-1);
      assert.equal(staleHead?.cache, 'stale', 'the tag could not be revalidated: the cached copy was served, marked stale');

      const logMark = engine.log().length;
      const failed = await engine.run(['pull', 'notcached:1.0']);
      assert.notEqual(failed.code, 0);
      // What the user sees: the engine gave up on the mirror and tried Docker Hub itself (which
      // fails in this namespace; on a connected host it would have succeeded silently).
      assert.match(failed.stderr, /^Error response from daemon: Get "https:\/\/registry-1\.docker\.io\/v2\/": /);
      // Why it gave up on the mirror is in the daemon's log: hubcache's 503.
      await engine.waitForLog(/Attempting next endpoint for pull after error: received unexpected HTTP status: 503 Service Unavailable/, { from: logMark });

      // What the operator sees in hubcache: the engine's HEAD and GET answered 503, with the reason.
      const lines = accessLog((l) => l.path === '/v2/library/notcached/manifests/1.0');
      assert.deepEqual(lines.map((l) => [l.method, l.route, l.status]), [
        ['HEAD', 'manifest', 503],
        ['GET', 'manifest', 503],
      ]);
      const reasons = hc.logs.filter((l) => l.message === 'request failed' && l.code === 'UNAVAILABLE');
      assert.ok(reasons.some((l) => /ECONNREFUSED/.test(String(l.cause))), JSON.stringify(reasons));
      assert.equal((await metric('HEAD')) - head5xx, 1);
      assert.equal((await metric('GET')) - get5xx, 1);
    } finally {
      await up.front.up();
    }
  });

  it('fails with dockerd\'s reason when the engine cannot start, and leaves nothing behind', async () => {
    const before = new Set(readTmp());
    await assert.rejects(
      startDockerEngine({ mirrorTarget: hc.host, daemonConfig: { 'storage-driver': 'no-such-driver' }, startTimeoutMs: 30_000 }),
      (e: Error) => /dockerd exited .* before it was ready/.test(e.message) && /no-such-driver/.test(e.message),
    );
    assert.deepEqual(readTmp().filter((d) => !before.has(d)), []);
  });
});

/** pid + command line of every process whose command line contains `s`. */
function processesMentioning(s: string): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes(s)) out.push(`${pid} ${cmd}`);
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

function readTmp(): string[] {
  return readdirSync(tmpdir()).filter((d) => d.startsWith('hubcache-dockerd-') && !d.startsWith('hubcache-dockerd-test-'));
}
