/**
 * podman (containers/image, like CRI-O and skopeo) pulls docker.io and ghcr.io images through
 * hubcache with deploy/clients/podman/registries.conf, rendered with the test's address. The real
 * registries are the configured fallback locations and are unreachable here; hubcache's access
 * log shows that it served the pulls.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { makeImage, makeIndex, type TestImage } from '../support/images.js';
import { createPodman, type Podman } from '../support/podman.js';
import { renderClientConfig, SECOND, startTwoRegistries, type TwoRegistries } from '../support/two-registries.js';

const KiB = 1024;
const REGISTRIES_CONF = fileURLToPath(new URL('../../deploy/clients/podman/registries.conf', import.meta.url));

/** Registries the shipped registries.conf mirrors, besides the two the fakes stand for. */
const OTHERS = [...readFileSync(REGISTRIES_CONF, 'utf8').matchAll(/^prefix = "([^"]+)"$/gm)].map((m) => m[1]!).filter((r) => r !== 'docker.io' && r !== SECOND);

const diffIds = (image: TestImage) => (JSON.parse(image.config!.bytes().toString()) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids;

describe('podman pulls through hubcache (registries.conf from deploy/clients)', () => {
  let env: TwoRegistries;
  let podman: Podman;
  let small: TestImage;
  let app: TestImage;
  let multi: TestImage;

  before(async () => {
    [small, app, multi] = await Promise.all([
      makeImage('docker', { seed: 'podman-small', layerSize: 256 * KiB }),
      makeImage('oci', { seed: 'podman-app', layerSize: 256 * KiB }),
      makeIndex('docker', { seed: 'podman-multi', layerSize: 128 * KiB, layers: 1 }),
    ]);
    env = await startTwoRegistries({
      instanceId: 'e2e-podman',
      extraUpstreams: Object.fromEntries(OTHERS.map((r) => [r, { url: '$SECOND_URL', allowedRealmHosts: ['$SECOND_REALM'], allowedRedirectHosts: ['$SECOND_CDN'] }])),
      seed: async (hub, second) => {
        await hub.push(small, 'library/small', '1.0');
        await hub.push(multi, 'library/multi', '1');
        await second.push(app, 'org/app', '1');
      },
    });
    const conf = renderClientConfig(readFileSync(REGISTRIES_CONF, 'utf8'), env.hubcache.host);
    assert.ok(conf.includes(`location = "${env.hubcache.host}/${SECOND}"`), 'the template mirrors ghcr.io under a path prefix');
    podman = createPodman(conf);
  });

  after(async () => {
    await podman?.close();
    await env?.close();
    for (const i of [small, app, multi]) i?.dispose();
  });

  const served = (pathPart: string) => env.hubcache.logs.filter((l) => l.message === 'request' && String(l.path).includes(pathPart));
  const inspect = async (ref: string) => JSON.parse((await podman.run(['image', 'inspect', ref])).stdout)[0] as { Digest: string; RootFS: { Layers: string[] }; Architecture: string };

  it('pulls a Docker Hub image by short name through the mirror (library/ form, no ns)', async () => {
    await podman.run(['pull', '--quiet', 'small:1.0']);
    const img = await inspect('docker.io/library/small:1.0');
    assert.equal(img.Digest, small.digest);
    assert.deepEqual(img.RootFS.Layers, diffIds(small), 'every layer was stored, verified by its diff_id');
    const lines = served('/v2/library/small/');
    assert.ok(lines.length >= 1 + small.blobs.size, JSON.stringify(lines));
    for (const l of lines) {
      assert.equal(l.upstream, 'docker.io');
      assert.equal(l.status, 200);
      assert.doesNotMatch(String(l.path), /[?&]ns=/);
      assert.match(String(l.userAgent), /containers|podman|libpod/i);
    }
    assert.ok(served('/v2/').some((l) => l.route === 'base'), 'podman pings /v2/ first');
    assert.equal(env.hub.front.count({ kind: 'manifest', method: 'GET', repo: 'library/small', status: 200 }), 1);
  });

  it(`pulls ${SECOND}/org/app:1 through the mirror's /${SECOND} path prefix`, async () => {
    await podman.run(['pull', '--quiet', `${SECOND}/org/app:1`]);
    const img = await inspect(`${SECOND}/org/app:1`);
    assert.equal(img.Digest, app.digest);
    assert.deepEqual(img.RootFS.Layers, diffIds(app));
    const lines = served(`/v2/${SECOND}/org/app/`);
    assert.ok(lines.length >= 1 + app.blobs.size, JSON.stringify(lines));
    for (const l of lines) {
      assert.equal(l.upstream, SECOND);
      assert.equal(l.status, 200);
    }
    assert.equal(env.second.front.count({ kind: 'manifest', method: 'GET', repo: 'org/app', status: 200 }), 1);
    assert.equal(env.hub.front.count({ repo: 'org/app' }), 0);
  });

  it('a multi-platform manifest list resolves to the host platform', async () => {
    await podman.run(['pull', '--quiet', 'docker.io/library/multi:1']);
    const [amd64] = multi.children as [TestImage, TestImage];
    const img = await inspect('docker.io/library/multi:1');
    assert.equal(img.Architecture, 'amd64');
    assert.deepEqual(img.RootFS.Layers, diffIds(amd64));
    assert.ok(served(`/v2/library/multi/manifests/${amd64.digest}`).length >= 1);
  });

  it('every other registry in the shipped registries.conf is pulled through its path prefix', async () => {
    assert.ok(OTHERS.length >= 5, OTHERS.join(' '));
    for (const registry of OTHERS) {
      await podman.run(['pull', '--quiet', `${registry}/org/app:1`]);
      assert.equal((await inspect(`${registry}/org/app:1`)).Digest, app.digest, registry);
      const lines = served(`/v2/${registry}/org/app/manifests/1`);
      assert.ok(lines.length >= 1, registry);
      assert.ok(lines.every((l) => l.upstream === registry && l.status === 200), JSON.stringify(lines));
    }
  });
});
