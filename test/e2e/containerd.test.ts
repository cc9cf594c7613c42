/**
 * containerd (Debian's, 1.6) pulls docker.io and ghcr.io images through hubcache with the
 * hosts.toml files shipped in deploy/clients/containerd/certs.d, rendered with the test's address.
 * containerd silently falls back to the real registry when a mirror fails; this machine has no
 * route to it, and the tests also check that hubcache served every request (with `?ns=`), so a
 * passing pull can't come from anywhere else.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startContainerd, type Containerd } from '../support/containerd.js';
import { makeImage, makeIndex, type TestImage } from '../support/images.js';
import { renderClientConfig, SECOND, startTwoRegistries, type TwoRegistries } from '../support/two-registries.js';

const KiB = 1024;
const CERTS_D = fileURLToPath(new URL('../../deploy/clients/containerd/certs.d/', import.meta.url));
/** Every registry deploy/clients ships a hosts.toml for. */
const SHIPPED = readdirSync(CERTS_D).sort();
/** The shipped registries beyond the two the fakes stand for: served by the second fake under their names. */
const OTHERS = SHIPPED.filter((r) => r !== 'docker.io' && r !== SECOND);

/** The snapshot key containerd gives the top layer of an unpacked image: the chain ID of its diff_ids (OCI image spec, config.md). */
function chainId(image: TestImage): string {
  const diffIds = (JSON.parse(image.config!.bytes().toString()) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids;
  return diffIds.reduce((parent, d) => `sha256:${createHash('sha256').update(`${parent} ${d}`).digest('hex')}`);
}

describe('containerd pulls through hubcache (hosts.toml from deploy/clients)', () => {
  let env: TwoRegistries;
  let cd: Containerd;
  let hostsDir: string;
  let small: TestImage;
  let app: TestImage;
  let multi: TestImage;

  before(async () => {
    [small, app, multi] = await Promise.all([
      makeImage('docker', { seed: 'ctr-small', layerSize: 256 * KiB }),
      makeImage('oci', { seed: 'ctr-app', layerSize: 256 * KiB }),
      makeIndex('oci', { seed: 'ctr-multi', layerSize: 128 * KiB, layers: 1 }),
    ]);
    [env, cd] = await Promise.all([
      startTwoRegistries({
        instanceId: 'e2e-containerd',
        extraUpstreams: Object.fromEntries(OTHERS.map((r) => [r, { url: '$SECOND_URL', allowedRealmHosts: ['$SECOND_REALM'], allowedRedirectHosts: ['$SECOND_CDN'] }])),
        seed: async (hub, second) => {
          await hub.push(small, 'library/small', '1.0');
          await hub.push(multi, 'library/multi', '1');
          await second.push(app, 'org/app', '1');
          await second.push(multi, 'org/multi', '1');
        },
      }),
      startContainerd(),
    ]);
    hostsDir = join(env.dir, 'certs.d');
    for (const registry of SHIPPED) {
      mkdirSync(join(hostsDir, registry), { recursive: true });
      const rendered = renderClientConfig(readFileSync(join(CERTS_D, registry, 'hosts.toml'), 'utf8'), env.hubcache.host);
      assert.match(rendered, new RegExp(`\\[host\\."http://${env.hubcache.host.replace(/\./g, '\\.')}"\\]`), 'the template names the mirror in a [host] table');
      writeFileSync(join(hostsDir, registry, 'hosts.toml'), rendered);
    }
  });

  after(async () => {
    await cd?.close();
    await env?.close();
    for (const i of [small, app, multi]) i?.dispose();
  });

  const pull = (ref: string, ...flags: string[]) => cd.ctr(['image', 'pull', '--hosts-dir', hostsDir, '--snapshotter', 'native', ...flags, ref]);
  const snapshots = async () => (await cd.ctr(['snapshot', '--snapshotter', 'native', 'ls'])).stdout;
  /** hubcache's access-log lines for one repository. */
  const served = (pathPart: string) => env.hubcache.logs.filter((l) => l.message === 'request' && String(l.path).includes(pathPart));

  it('pulls and unpacks docker.io/library/small:1.0 via ?ns=docker.io', async () => {
    const { stdout } = await pull('docker.io/library/small:1.0');
    assert.match(stdout, /unpacking linux\/amd64 sha256:/);
    const images = (await cd.ctr(['image', 'ls'])).stdout;
    assert.match(images, new RegExp(`docker.io/library/small:1.0\\s+\\S+\\s+${small.digest}`), images);
    assert.ok((await snapshots()).includes(chainId(small)), 'the top layer is unpacked under its chain ID');

    const lines = served('/v2/library/small/');
    assert.ok(lines.length >= 2 + small.blobs.size, JSON.stringify(lines));
    for (const l of lines) {
      assert.match(String(l.path), /\?ns=docker\.io$/, String(l.path));
      assert.equal(l.upstream, 'docker.io');
      assert.equal(l.status, 200);
      assert.match(String(l.userAgent), /^containerd\//);
    }
    assert.ok(lines.some((l) => l.method === 'HEAD' && l.route === 'manifest'), 'containerd resolves with HEAD');
    for (const blob of small.blobs.values()) {
      assert.equal(env.hub.front.count({ via: 'cdn', status: 200, digest: blob.digest }), 1, `hubcache fetched ${blob.digest} once from "docker.io"'s CDN`);
    }
    assert.equal(env.second.front.count({ repo: 'library/small' }), 0);
  });

  it(`pulls and unpacks ${SECOND}/org/app:1 from the second registry via ?ns=${SECOND}`, async () => {
    await pull(`${SECOND}/org/app:1`);
    assert.ok((await snapshots()).includes(chainId(app)));
    const lines = served('/v2/org/app/');
    assert.ok(lines.length >= 2 + app.blobs.size);
    for (const l of lines) {
      assert.match(String(l.path), new RegExp(`\\?ns=${SECOND.replace('.', '\\.')}$`));
      assert.equal(l.upstream, SECOND);
      assert.equal(l.status, 200);
    }
    assert.ok(env.second.front.count({ repo: 'org/app', kind: 'manifest' }) >= 1);
    assert.equal(env.hub.front.count({ repo: 'org/app' }), 0, 'nothing went to docker.io');
  });

  it('a multi-platform index: the host platform unpacks; --platform linux/arm64 pulls and unpacks the other one', async () => {
    const [amd64, arm64] = multi.children as [TestImage, TestImage];
    await pull('docker.io/library/multi:1');
    let snaps = await snapshots();
    assert.ok(snaps.includes(chainId(amd64)), 'linux/amd64 unpacked');
    assert.ok(!snaps.includes(chainId(arm64)));
    assert.equal(env.hub.front.count({ via: 'cdn', digest: arm64.layers[0]!.digest }), 0, 'only the host platform was fetched');

    // The same index from the second registry, for the other platform: manifests come from
    // ghcr.io (keyed per upstream), blobs it shares with nothing already cached are fetched there.
    const { stdout } = await pull(`${SECOND}/org/multi:1`, '--platform', 'linux/arm64');
    assert.match(stdout, /unpacking linux\/arm64/);
    snaps = await snapshots();
    assert.ok(snaps.includes(chainId(arm64)), 'linux/arm64 unpacked');
    assert.equal(env.second.front.count({ via: 'cdn', status: 200, digest: arm64.layers[0]!.digest }), 1);
    assert.ok(env.second.front.count({ repo: 'org/multi', kind: 'manifest', reference: '1' }) >= 1);

    // Forget both images and their content in containerd, then pull every platform from
    // "docker.io": the arm64 layer was only ever fetched from ghcr.io, yet hubcache serves it from
    // its store (blobs are shared across upstreams by digest), so no upstream blob GET happens.
    await cd.ctr(['image', 'rm', '--sync', 'docker.io/library/multi:1', `${SECOND}/org/multi:1`]);
    const blobGets = () => env.hub.front.count({ via: 'cdn' }) + env.second.front.count({ via: 'cdn' });
    const before = blobGets();
    await pull('docker.io/library/multi:1', '--all-platforms');
    const check = (await cd.ctr(['image', 'check'])).stdout;
    assert.match(check, /docker\.io\/library\/multi:1\s+application\/vnd\.oci\.image\.index\.v1\+json\s+sha256:\S+\s+complete \((\d+)\/\1\)/, check);
    const armLayer = served(`/v2/library/multi/blobs/${arm64.layers[0]!.digest}`);
    assert.equal(armLayer.length, 1, 'containerd fetched the arm64 layer again, through hubcache');
    assert.equal(armLayer[0]!.cache, 'hit');
    assert.equal(blobGets() - before, 0, 'every blob of both platforms came from hubcache\'s store');
  });

  it('every shipped hosts.toml works: containerd resolves each registry through hubcache with its own ?ns=', async () => {
    assert.ok(OTHERS.length >= 5, OTHERS.join(' '));
    for (const registry of OTHERS) {
      await pull(`${registry}/org/app:1`);
      const lines = served(`/v2/org/app/manifests/1?ns=${registry}`);
      assert.ok(lines.length >= 1, registry);
      assert.equal(lines[0]!.upstream, registry);
      assert.equal(lines[0]!.status, 200);
    }
    const images = (await cd.ctr(['image', 'ls', '-q'])).stdout;
    for (const registry of OTHERS) assert.ok(images.includes(`${registry}/org/app:1`), images);
  });
});
