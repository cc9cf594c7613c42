/**
 * Real clients over TLS (issue #14): a real `hubcache serve --tls-certificate --tls-key` with a
 * certificate from a test CA (openssl, SANs 127.0.0.1 and localhost), auth on, `team/**` hosted.
 * Every client verifies the certificate against the test CA the way the README tells operators to
 * set it up — skopeo `--dest-cert-dir`, podman `--cert-dir`, containerd `hosts.toml` `ca`, dockerd
 * `/etc/docker/certs.d/HOST:PORT/ca.crt` — and each is shown to refuse hubcache without it, so a
 * pass can't come from skipped verification.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { startContainerd, type Containerd } from '../support/containerd.js';
import { freePort } from '../support/distribution.js';
import { startDockerEngine, type DockerEngine } from '../support/dockerd.js';
import { startHubcacheProcess, type HubcacheProcess } from '../support/hubcache-process.js';
import { makeImage, type TestImage } from '../support/images.js';
import { createPodman, type Podman } from '../support/podman.js';
import { skopeoCopy, skopeoInspect } from '../support/skopeo.js';
import { createTestCa, type TestCa } from '../support/test-ca.js';
import { startUpstream, type Upstream } from '../support/upstream-harness.js';

const KiB = 1024;
const ALICE = 'alice:Al1ce-tls';
const [ALICE_USER, ALICE_PASSWORD] = ALICE.split(':') as [string, string];
/** What Go's crypto/x509 says when the CA isn't trusted (docker, podman, skopeo, containerd). */
const UNTRUSTED = /x509: certificate signed by unknown authority|certificate is not trusted|unknown authority/i;

interface Setup {
  ca: TestCa;
  dir: string;
  /** A directory holding ca.crt: the `--cert-dir` of skopeo and podman. */
  certDir: string;
  upstream: Upstream;
  hc: HubcacheProcess;
  image: TestImage;
}

/** hubcache over TLS with alice allowed to push and pull `team/**` (hosted), and library/small:1 upstream. */
/** Where the Docker engine sees hubcache: not loopback (see the dockerd test). */
const ENGINE_ADDRESS = '10.254.0.1';

async function setUp(label: string): Promise<Setup> {
  const ca = createTestCa(`hubcache e2e ${label} CA`);
  const dir = mkdtempSync(join(tmpdir(), `hubcache-e2e-tls-${label}-`));
  const certDir = join(dir, 'certs');
  mkdirSync(certDir);
  copyFileSync(ca.caCertificate, join(certDir, 'ca.crt'));
  const server = ca.issueServer('hubcache', { sans: ['127.0.0.1', 'localhost', ENGINE_ADDRESS] });
  const htpasswd = join(dir, 'htpasswd');
  writeFileSync(htpasswd, `${ALICE_USER}:${bcrypt.hashSync(ALICE_PASSWORD, 5).replace(/^\$2b\$/, '$2y$')}\n`);
  const config = join(dir, 'config.yaml');
  writeFileSync(config, 'hosted:\n  repositories: ["team/**"]\nauth:\n  rules:\n    - repositories: ["team/**"]\n      users: [alice]\n      actions: [pull, push]\n');
  const image = await makeImage('docker', { seed: `e2e-tls-${label}`, layerSize: 256 * KiB, layers: 1 });
  const upstream = await startUpstream();
  await upstream.push(image, 'library/small', '1');
  const hc = await startHubcacheProcess({ upstream, config, args: ['--auth-htpasswd', htpasswd, '--tls-certificate', server.certificate, '--tls-key', server.key] });
  return { ca, dir, certDir, upstream, hc, image };
}

async function tearDown(s: Partial<Setup>): Promise<void> {
  await s.hc?.close();
  await s.upstream?.close();
  s.image?.dispose();
  s.ca?.close();
  if (s.dir) rmSync(s.dir, { recursive: true, force: true });
}

const refused = async (p: Promise<unknown>, re: RegExp, what: string) => {
  const err = await p.then(
    () => assert.fail(`expected a refusal: ${what}`),
    (e: unknown) => e as Error & { stderr?: string },
  );
  assert.match(`${err.stderr ?? ''} ${err.message}`, re, what);
};

describe('skopeo, podman and containerd push and pull over TLS with a test CA', () => {
  let s: Setup;
  let podman: Podman;
  let cd: Containerd;

  before(async () => {
    s = await setUp('clients');
    podman = createPodman('');
    cd = await startContainerd();
  });
  after(async () => {
    await podman?.close();
    await cd?.close();
    await tearDown(s ?? {});
  });

  it('hubcache listens on https', () => {
    assert.match(s.hc.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it('skopeo copy --dest-creds --dest-cert-dir pushes to a hosted name; without the CA the certificate is refused', async () => {
    const src = join(s.dir, 'skopeo-src');
    await skopeoCopy(`docker://${s.hc.host}/library/small:1`, `dir:${src}`, { srcCertDir: s.certDir });
    await skopeoCopy(`dir:${src}`, `docker://${s.hc.host}/team/skopeo:1`, { destCreds: ALICE, destCertDir: s.certDir });
    assert.equal((await skopeoInspect(`docker://${s.hc.host}/team/skopeo:1`, { creds: ALICE, certDir: s.certDir })).Digest, s.image.digest);
    const empty = join(s.dir, 'no-ca');
    mkdirSync(empty, { recursive: true });
    await refused(skopeoCopy(`dir:${src}`, `docker://${s.hc.host}/team/skopeo:2`, { destCreds: ALICE, destCertDir: empty }), UNTRUSTED, 'skopeo without the CA');
  });

  it('podman login --cert-dir and push of an image it pulled; without the CA login fails', async () => {
    await refused(podman.run(['login', '-u', ALICE_USER, '-p', ALICE_PASSWORD, s.hc.host]), UNTRUSTED, 'podman login without the CA');
    await podman.run(['login', '--cert-dir', s.certDir, '-u', ALICE_USER, '-p', ALICE_PASSWORD, s.hc.host]);
    await podman.run(['pull', '--quiet', '--cert-dir', s.certDir, `${s.hc.host}/library/small:1`]);
    await podman.run(['tag', `${s.hc.host}/library/small:1`, `${s.hc.host}/team/podman:1`]);
    await podman.run(['push', '--quiet', '--cert-dir', s.certDir, `${s.hc.host}/team/podman:1`]);
    const pushed = await skopeoInspect(`docker://${s.hc.host}/team/podman:1`, { creds: ALICE, certDir: s.certDir });
    assert.deepEqual(pushed.Layers, (await skopeoInspect(`docker://${s.hc.host}/library/small:1`, { certDir: s.certDir })).Layers, 'the same layers');
  });

  it('containerd pulls a hosted image with hosts.toml `ca`; without it the certificate is refused', async () => {
    // containerd talks plain HTTP to a loopback registry unless hosts.toml says https: both
    // directories name the https server, only one gives the CA.
    const hostsDir = (name: string, ca: string) => {
      const d = join(s.dir, name);
      mkdirSync(join(d, s.hc.host), { recursive: true });
      writeFileSync(join(d, s.hc.host, 'hosts.toml'), `server = "https://${s.hc.host}"\n\n[host."https://${s.hc.host}"]\n  capabilities = ["pull", "resolve"]\n${ca}`);
      return d;
    };
    const ref = `${s.hc.host}/team/skopeo:1`;
    await refused(cd.ctr(['image', 'pull', '--snapshotter', 'native', '--hosts-dir', hostsDir('hosts-no-ca', ''), '--user', ALICE, ref]), UNTRUSTED, 'containerd without the CA');
    const { stdout } = await cd.ctr(['image', 'pull', '--snapshotter', 'native', '--hosts-dir', hostsDir('hosts', `  ca = "${s.ca.caCertificate}"\n`), '--user', ALICE, ref]);
    assert.match(stdout, /unpacking linux\/amd64 sha256:/);
    assert.match((await cd.ctr(['image', 'ls', '-q'])).stdout, new RegExp(ref.replace(/[.]/g, '\\.')));
  });
});

describe('dockerd: docker login, push and pull over TLS (CA in /etc/docker/certs.d/HOST:PORT/ca.crt)', () => {
  let s: Setup;
  let engine: DockerEngine;
  let certsD: string | undefined;
  let registry: string;

  before(async () => {
    s = await setUp('dockerd');
    // The engine sees hubcache on its namespace's loopback at this port (the bridge forwards the
    // bytes, TLS included). certs.d is the host's: a port of its own keeps the directory unique.
    // dockerd never verifies certificates of 127.0.0.0/8 registries (always "insecure"): the
    // engine reaches hubcache at an address of its own namespace, which the certificate names.
    const port = await freePort();
    registry = `${ENGINE_ADDRESS}:${port}`;
    certsD = `/etc/docker/certs.d/${registry}`;
    mkdirSync(certsD, { recursive: true });
    copyFileSync(s.ca.caCertificate, join(certsD, 'ca.crt'));
    engine = await startDockerEngine({
      mirrorTarget: s.hc.host,
      mirrorPort: port,
      mirrorAddress: ENGINE_ADDRESS,
      // TLS verified: no insecure registry; the mirror is https too.
      daemonConfig: { 'registry-mirrors': [`https://${registry}`], 'insecure-registries': [] },
    });
  });
  after(async () => {
    await engine?.close();
    if (certsD) rmSync(certsD, { recursive: true, force: true });
    await tearDown(s ?? {});
  });

  it('pulls through the TLS mirror, logs in, pushes to a hosted name, removes it and pulls it back', async () => {
    await engine.docker(['pull', 'small:1']);
    await engine.docker(['tag', 'small:1', `${registry}/team/docker:1`]);
    const denied = await engine.run(['push', `${registry}/team/docker:1`]);
    assert.notEqual(denied.code, 0, 'no push before login');
    assert.match(denied.stderr, /denied|unauthorized|authentication required|no basic auth credentials/i);
    // dockerd reads certs.d at each connection: without ca.crt the certificate is refused.
    renameSync(join(certsD!, 'ca.crt'), join(certsD!, 'ca.crt.off'));
    const untrusted = await engine.run(['login', '-u', ALICE_USER, '-p', ALICE_PASSWORD, registry]);
    renameSync(join(certsD!, 'ca.crt.off'), join(certsD!, 'ca.crt'));
    assert.notEqual(untrusted.code, 0);
    assert.match(untrusted.stderr, UNTRUSTED);
    assert.match(await engine.docker(['login', '-u', ALICE_USER, '-p', ALICE_PASSWORD, registry]), /Login Succeeded/);
    const pushed = await engine.docker(['push', `${registry}/team/docker:1`]);
    const digest = /digest: (sha256:[0-9a-f]{64})/.exec(pushed)?.[1];
    assert.ok(digest, pushed);
    assert.equal((await skopeoInspect(`docker://${s.hc.host}/team/docker:1`, { creds: ALICE, certDir: certsD! })).Digest, digest);
    await engine.docker(['rmi', `${registry}/team/docker:1`, 'small:1']);
    assert.match(await engine.docker(['pull', `${registry}/team/docker:1`]), new RegExp(`Digest: ${digest}`));
  });
});
