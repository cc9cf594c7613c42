/**
 * Real clients logging in to a real `hubcache serve` with auth on (issue #14): skopeo with
 * `--creds`/`--src-creds` (Basic, then the token endpoint's GET), containerd's `ctr --user` (the
 * OAuth2 POST form) and podman `login` (the `/v2/` challenge) + pull, plain HTTP on loopback.
 * Anonymous pull is off, so every client has to log in; `team/**` push is granted to alice only,
 * and `team/private/**` is hosted: alice pushes there with skopeo, bob is denied, and a push to a
 * mirrored name is refused whoever sends it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { startContainerd, type Containerd } from '../support/containerd.js';
import { startHubcacheProcess, metricValue, type HubcacheProcess } from '../support/hubcache-process.js';
import { makeImage, type TestImage } from '../support/images.js';
import { createPodman, type Podman } from '../support/podman.js';
import { skopeoCopy, skopeoInspect } from '../support/skopeo.js';
import { startUpstream, type Upstream } from '../support/upstream-harness.js';

const KiB = 1024;
const BIN = fileURLToPath(new URL('../../bin/hubcache.js', import.meta.url));
const htpasswdLine = (cred: string) => {
  const [u, p] = cred.split(':') as [string, string];
  return `${u}:${bcrypt.hashSync(p, 5).replace(/^\$2b\$/, '$2y$')}`;
};
const ALICE = 'alice:Al1ce-pass';
const BOB = 'bob:B0b-pass';

describe('real clients authenticate to hubcache (Basic and Bearer)', () => {
  let upstream: Upstream;
  let hc: HubcacheProcess;
  let dir: string;
  let image: TestImage;
  let cd: Containerd;
  let podman: Podman;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hubcache-e2e-auth-'));
    const htpasswd = join(dir, 'htpasswd');
    // mallory's MD5 entry (htpasswd -m) is refused with an error log; the others load.
    writeFileSync(htpasswd, `${htpasswdLine(ALICE)}\n${htpasswdLine(BOB)}\nmallory:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n`);
    const config = join(dir, 'config.yaml');
    writeFileSync(config, 'hosted:\n  repositories: ["team/private/**"]\nauth:\n  anonymousPull: false\n  rules:\n    - repositories: ["team/**"]\n      users: [alice]\n      actions: [pull, push]\n');
    image = await makeImage('oci', { seed: 'e2e-auth', layerSize: 128 * KiB });
    [upstream, cd] = await Promise.all([startUpstream(), startContainerd()]);
    await upstream.push(image, 'team/app', '1');
    await upstream.push(image, 'library/small', '1');
    hc = await startHubcacheProcess({ upstream, config, args: ['--auth-htpasswd', htpasswd] });
    podman = createPodman('');
  });

  after(async () => {
    await podman?.close();
    await cd?.close();
    await hc?.close();
    await upstream?.close();
    image?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const refusal = async (p: Promise<unknown>, re: RegExp, what: string) => {
    const err = await p.then(
      () => assert.fail(`expected a refusal: ${what}; served: ${JSON.stringify(hc.logs.filter((l) => l.message === 'request').slice(-6).map((l) => [l.method, l.path, l.status]))}`),
      (e: unknown) => e as Error & { stderr?: string },
    );
    assert.match(String(err.stderr ?? err.message), re);
  };

  it('skopeo inspect --creds: users read; a wrong password and anonymous clients are unauthorized', async () => {
    const ref = `docker://${hc.host}/team/app:1`;
    assert.equal((await skopeoInspect(ref, { creds: ALICE })).Digest, image.digest);
    assert.equal((await skopeoInspect(`docker://${hc.host}/library/small:1`, { creds: BOB })).Digest, image.digest);
    await refusal(skopeoInspect(ref, { creds: 'alice:wrong' }), /unauthorized|authentication required/i, 'wrong password');
    await refusal(skopeoInspect(ref), /unauthorized|authentication required/i, 'anonymous');
  });

  it('skopeo copy --dest-creds: alice pushes to a hosted name and reads it back; bob (no push) is denied; a mirrored name takes no push', async () => {
    const src = join(dir, 'src');
    await skopeoCopy(`docker://${hc.host}/team/app:1`, `dir:${src}`, { srcCreds: ALICE });
    // The access log line is written when the response closes: waited for, not read at once.
    const isWrite = (repo: string) => (l: Record<string, unknown>) => l.message === 'request' && (l.method === 'PUT' || l.method === 'POST' || l.method === 'PATCH') && String(l.path).startsWith(`/v2/${repo}/`);
    await refusal(skopeoCopy(`dir:${src}`, `docker://${hc.host}/team/private/app:1`, { destCreds: BOB }), /denied|403|forbidden/i, 'bob pushing');
    assert.ok(!hc.logs.some((l) => isWrite('team/private/app')(l) && Number(l.status) < 400), 'nothing of bob\'s written');
    await refusal(skopeoCopy(`dir:${src}`, `docker://${hc.host}/team/app:2`, { destCreds: ALICE }), /hosted\.repositories/i, 'alice pushing to a mirrored name');
    await hc.waitForLog((l) => isWrite('team/app')(l) && l.status === 403);
    assert.ok(hc.logs.filter(isWrite('team/app')).every((l) => l.status === 403), 'no write to the mirrored name got further than the check');
    await skopeoCopy(`dir:${src}`, `docker://${hc.host}/team/private/app:1`, { destCreds: ALICE });
    assert.equal((await skopeoInspect(`docker://${hc.host}/team/private/app:1`, { creds: ALICE })).Digest, image.digest);
    await refusal(skopeoInspect(`docker://${hc.host}/team/private/app:1`, { creds: BOB }), /denied|unauthorized/i, 'bob reading a hosted name without a rule');
  });

  it('skopeo copy --src-creds pulls every blob through hubcache with a token', async () => {
    const dest = join(dir, 'copied');
    await skopeoCopy(`docker://${hc.host}/team/app:1`, `dir:${dest}`, { srcCreds: ALICE });
    for (const [digest, blob] of image.blobs) assert.ok(readFileSync(join(dest, digest.slice('sha256:'.length))).equals(blob.bytes()), digest);
    await hc.waitForLog((l) => l.message === 'request' && l.route === 'token' && l.status === 200);
  });

  it('containerd (ctr --user, the OAuth2 POST form) pulls with a token; a wrong password fails', async () => {
    const ref = `${hc.host}/team/app:1`;
    const { stdout } = await cd.ctr(['image', 'pull', '--plain-http', '--snapshotter', 'native', '--user', ALICE, ref]);
    assert.match(stdout, /unpacking linux\/amd64 sha256:/);
    // containerd with credentials asks the token endpoint with the OAuth2 POST form.
    await hc.waitForLog((l) => l.message === 'request' && l.route === 'token' && l.method === 'POST' && l.status === 200 && /containerd|ctr/i.test(String(l.userAgent)));
    await refusal(cd.ctr(['image', 'pull', '--plain-http', '--snapshotter', 'native', '--user', 'alice:wrong', `${hc.host}/team/app:1`]), /401|unauthorized/i, 'ctr wrong password');
  });

  it('podman login checks the password (401 on /v2/), then pulls', async () => {
    const [user, password] = ALICE.split(':') as [string, string];
    await refusal(podman.run(['login', '--tls-verify=false', '-u', user, '-p', 'wrong', hc.host]), /401|unauthorized|invalid username\/password/i, 'podman wrong password');
    await podman.run(['login', '--tls-verify=false', '-u', user, '-p', password, hc.host]);
    await podman.run(['pull', '--quiet', '--tls-verify=false', `${hc.host}/team/app:1`]);
    const inspected = JSON.parse((await podman.run(['image', 'inspect', `${hc.host}/team/app:1`])).stdout)[0] as { Digest: string };
    assert.equal(inspected.Digest, image.digest);
  });

  it('logs the refused non-bcrypt entry; a user added to the file logs in without a restart', async () => {
    const refused = await hc.waitForLog((l) => l.message === 'htpasswd entry refused');
    assert.match(String(refused.problem), /line 3: user "mallory" ignored: only bcrypt .* found an MD5 hash/);
    assert.ok(!String(refused.problem).includes('HqJZ'), 'the hash is not logged');
    appendFileSync(join(dir, 'htpasswd'), `${htpasswdLine('carol:C4rol-pass')}\n`);
    await hc.waitForLog((l) => l.message === 'htpasswd loaded' && l.users === 3);
    assert.equal((await skopeoInspect(`docker://${hc.host}/team/app:1`, { creds: 'carol:C4rol-pass' })).Digest, image.digest);
  });

  it('serve with an unreadable htpasswd file refuses to start: exit 2, a configuration error', () => {
    const r = spawnSync(process.execPath, [BIN, 'serve', '--listen', '127.0.0.1:0', '--storage-path', join(dir, 'unused-store'), '--auth-htpasswd', join(dir, 'missing')], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /invalid configuration:\n {2}- auth\.htpasswd: cannot read .*missing: ENOENT/);
  });

  it('counts by scheme and result, and no password or token is in the log', async () => {
    const text = await hc.metrics();
    assert.ok(metricValue(text, 'hubcache_auth_requests_total', { scheme: 'bearer', result: 'allowed' }) > 0);
    assert.ok(metricValue(text, 'hubcache_auth_requests_total', { scheme: 'basic', result: 'unauthorized' }) > 0);
    assert.ok(!text.includes('alice') && !text.includes('bob'));
    const logs = JSON.stringify(hc.logs);
    for (const secret of ['Al1ce-pass', 'B0b-pass', 'C4rol-pass', 'eyJ']) assert.ok(!logs.includes(secret), `leaked: ${secret}`);
  });
});

