/**
 * hubcache's own clients authenticating (issue #14): the authorization matrix over real HTTP
 * against the in-process app, Basic and Bearer. Every refusal is checked for its status, its
 * challenge and for what did not happen: no upstream request (so no cache fill, no store change).
 * Hosted names (`hosted.repositories`) are stood in for by `private/**` until that key exists.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { startApp, type AppHarness } from '../support/app-harness.js';
import { parseOciError, putImage } from '../support/oci-fixtures.js';

const PASSWORDS = { alice: 'alice-secret-1', bob: 'bob-secret-2', carol: 'carol-secret-3', mallory: 'mallory-secret-4' } as const;
type User = keyof typeof PASSWORDS;
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const as = (user: User) => ({ authorization: basic(user, PASSWORDS[user]) });
const isHosted = (name: string) => name.startsWith('private/');

/** An htpasswd file as `htpasswd -B` writes it ($2y$), cost 4 to keep the tests quick. */
function htpasswdText(passwords: Record<string, string>): string {
  return Object.entries(passwords)
    .map(([u, p]) => `${u}:${bcrypt.hashSync(p, 4).replace(/^\$2b\$/, '$2y$')}`)
    .join('\n');
}

const RULES: { repositories: string[]; actions: ('pull' | 'push' | 'delete')[]; users?: string[]; groups?: string[] }[] = [
  { repositories: ['private/**'], groups: ['devs'], actions: ['pull', 'push', 'delete'] },
  { repositories: ['private/app'], users: ['carol'], actions: ['pull'] },
];

describe('client authentication and authorization (bearer mode, the default)', () => {
  let hc: AppHarness;
  let dir: string;
  let htpasswd: string;
  const upstreamRequests = () => hc.upstreamServer.requests.length;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hubcache-auth-'));
    htpasswd = join(dir, 'htpasswd');
    writeFileSync(htpasswd, htpasswdText(PASSWORDS));
    hc = await startApp({
      auth: { keyDir: join(dir, 'store-auth'), isHosted, config: { htpasswd, groups: { devs: ['alice'] }, rules: RULES, maxFailedLogins: 3, maxFailedLoginsPerAddress: 100, failedLoginWindow: '1m' } },
    });
    putImage(hc.registry, 'library/alpine', 'latest', { seed: 'alpine' });
    putImage(hc.registry, 'private/app', '1', { seed: 'app' });
    putImage(hc.registry, 'private/secret', '1', { seed: 'secret' });
  });
  after(async () => {
    await hc.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A refused request: status, OCI code, and no upstream request made for it. */
  async function refused(path: string, init: { method?: string; headers?: Record<string, string> }, status: number, code: string) {
    const before = upstreamRequests();
    const res = await hc.pull(path, init);
    assert.equal(res.status, status, `${init.method ?? 'GET'} ${path}: ${res.body.toString()}`);
    if (init.method !== 'HEAD') assert.equal(parseOciError(res.body.toString()).code, code);
    assert.equal(upstreamRequests(), before, 'no upstream request for a refused request');
    // Nothing the client sent as a credential comes back in the body or the headers.
    const sent = init.headers?.authorization?.replace(/^\w+ /, '');
    const echoed = `${res.body.toString()} ${JSON.stringify([...res.headers])}`;
    for (const secret of [...Object.values(PASSWORDS), ...(sent ? [sent] : [])]) assert.ok(!echoed.includes(secret), 'a credential was echoed');
    return res;
  }

  /** A token response: JSON, its length, never stored by a cache. */
  function assertTokenHeaders(res: Response): void {
    assert.equal(res.headers.get('content-type'), 'application/json; charset=utf-8');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(res.headers.get('pragma'), 'no-cache');
    assert.match(res.headers.get('content-length') ?? '', /^[1-9]\d*$/);
  }

  async function token(headers: Record<string, string>, ...scopes: string[]): Promise<string> {
    const q = new URLSearchParams([['service', 'hubcache'], ...scopes.map((s) => ['scope', s] as [string, string])]);
    const res = await hc.fetch(`/auth/token?${q}`, { headers });
    assert.equal(res.status, 200, await res.clone().text());
    assertTokenHeaders(res);
    const body = (await res.json()) as { token: string; access_token: string; expires_in: number };
    assert.equal(body.token, body.access_token);
    assert.equal(body.expires_in, 300);
    return body.token;
  }

  it('anonymous clients pull mirrored names without any token (dockerd mirrors send no credentials)', async () => {
    const res = await hc.pull('/v2/library/alpine/manifests/latest');
    assert.equal(res.status, 200);
  });

  it('/v2/ without credentials: 401 with the Bearer challenge naming the realm and service', async () => {
    const res = await hc.fetch('/v2/');
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('www-authenticate'), `Bearer realm="${hc.url}/auth/token",service="hubcache"`);
    assert.equal((await hc.fetch('/v2/', { headers: as('bob') })).status, 200, 'valid credentials: 200 (docker login)');
    const wrong = await hc.fetch('/v2/', { headers: { authorization: basic('bob', 'nope') } });
    assert.equal(wrong.status, 401, 'a wrong password fails docker login');
  });

  it('anonymous pull of a hosted name: 401 with a challenge scoped to it', async () => {
    const res = await refused('/v2/private/app/manifests/1', {}, 401, 'UNAUTHORIZED');
    assert.equal(res.headers.get('www-authenticate'), `Bearer realm="${hc.url}/auth/token",service="hubcache",scope="repository:private/app:pull"`);
  });

  it('a wrong password is 401 even where anonymous clients may pull', async () => {
    await refused('/v2/library/alpine/manifests/latest', { headers: { authorization: basic('alice', 'wrong') } }, 401, 'UNAUTHORIZED');
    await refused('/v2/library/alpine/manifests/latest', { headers: { authorization: basic('nobody', 'x') } }, 401, 'UNAUTHORIZED');
    await refused('/v2/library/alpine/manifests/latest', { headers: { authorization: 'Basic !!!' } }, 401, 'UNAUTHORIZED');
  });

  it('Basic: a user outside the pattern is 403 DENIED; users the rules name pull', async () => {
    await refused('/v2/private/app/manifests/1', { headers: as('bob') }, 403, 'DENIED');
    await refused('/v2/private/secret/manifests/1', { headers: as('carol') }, 403, 'DENIED');
    assert.equal((await hc.pull('/v2/private/app/manifests/1', { headers: as('carol') })).status, 200);
    assert.equal((await hc.pull('/v2/private/secret/manifests/1', { headers: as('alice') })).status, 200);
    assert.equal((await hc.pull('/v2/library/alpine/manifests/latest', { headers: as('bob') })).status, 200, 'every user pulls mirrored names');
  });

  it('push and delete go through the same check: 401 anonymous (scope pull,push), 403 pull-only, allowed for the group', async () => {
    const put = { method: 'PUT', headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } };
    const anon = await refused('/v2/private/app/manifests/2', put, 401, 'UNAUTHORIZED');
    assert.match(anon.headers.get('www-authenticate')!, /scope="repository:private\/app:pull,push"/);
    await refused('/v2/private/app/manifests/2', { ...put, headers: { ...put.headers, ...as('carol') } }, 403, 'DENIED');
    await refused('/v2/private/app/manifests/1', { method: 'DELETE', headers: as('carol') }, 403, 'DENIED');
    await refused('/v2/library/alpine/manifests/latest', { method: 'DELETE', headers: as('bob') }, 403, 'DENIED');
    // Allowed: what follows is the route's own answer, not an auth refusal: this harness hosts
    // nothing (no hosted.repositories), so the push is refused as one to a mirrored name.
    const allowed = await hc.pull('/v2/private/app/blobs/uploads/', { method: 'POST', headers: as('alice') });
    assert.equal(allowed.status, 403);
    assert.match(allowed.body.toString(), /not a hosted repository: only names matching hosted\.repositories/);
  });

  it('Bearer: a token from /auth/token pulls the repositories it names, and only those', async () => {
    const t = await token(as('carol'), 'repository:private/app:pull,push');
    const auth = { authorization: `Bearer ${t}` };
    assert.equal((await hc.pull('/v2/private/app/manifests/1', { headers: auth })).status, 200);
    // Another repository the user may not pull: 403. The token only granted pull (carol can't push).
    await refused('/v2/private/secret/manifests/1', { headers: auth }, 403, 'DENIED');
    await refused('/v2/private/app/manifests/2', { method: 'PUT', headers: auth }, 403, 'DENIED');
  });

  it('Bearer: a token lacking a scope its holder would get is 401 insufficient_scope (the client fetches a new one)', async () => {
    const t = await token(as('alice'), 'repository:private/app:pull');
    const res = await refused('/v2/private/secret/manifests/1', { headers: { authorization: `Bearer ${t}` } }, 401, 'UNAUTHORIZED');
    assert.equal(res.headers.get('www-authenticate'), `Bearer realm="${hc.url}/auth/token",service="hubcache",scope="repository:private/secret:pull",error="insufficient_scope"`);
  });

  it('Bearer: an expired token is 401 invalid_token (the clock is the harness\'s)', async () => {
    const t = await token(as('alice'), 'repository:private/app:pull');
    hc.clock.advance(301_000);
    const res = await refused('/v2/private/app/manifests/1', { headers: { authorization: `Bearer ${t}` } }, 401, 'UNAUTHORIZED');
    assert.match(res.headers.get('www-authenticate')!, /error="invalid_token"/);
  });

  it('Bearer: a forged or tampered token is 401', async () => {
    const t = await token(as('carol'), 'repository:private/app:pull');
    const [h, body, sig] = t.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(body, 'base64url').toString());
    claims.access = [{ type: 'repository', name: 'private/secret', actions: ['pull'] }];
    const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${sig}`;
    await refused('/v2/private/secret/manifests/1', { headers: { authorization: `Bearer ${forged}` } }, 401, 'UNAUTHORIZED');
    await refused('/v2/private/app/manifests/1', { headers: { authorization: 'Bearer not.a.token' } }, 401, 'UNAUTHORIZED');
  });

  it('anonymous tokens grant what anonymous clients may do, and nothing else', async () => {
    const t = await token({}, 'repository:library/alpine:pull', 'repository:private/app:pull');
    const claims = JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString());
    assert.deepEqual(claims.access, [{ type: 'repository', name: 'library/alpine', actions: ['pull'] }]);
    assert.equal(claims.sub, '');
    assert.equal((await hc.pull('/v2/library/alpine/manifests/latest', { headers: { authorization: `Bearer ${t}` } })).status, 200);
    const res = await refused('/v2/private/app/manifests/1', { headers: { authorization: `Bearer ${t}` } }, 401, 'UNAUTHORIZED');
    assert.match(res.headers.get('www-authenticate')!, /scope="repository:private\/app:pull"/);
  });

  it('the token endpoint refuses a wrong password with 401 and a Basic challenge', async () => {
    const res = await hc.fetch('/auth/token?service=hubcache&scope=repository:private/app:pull', { headers: { authorization: basic('alice', 'wrong') } });
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('www-authenticate'), 'Basic realm="hubcache"');
    assert.equal(parseOciError(await res.text()).code, 'UNAUTHORIZED');
  });

  it('OAuth2 POST (containerd): password grant with a refresh token, then the refresh grant; a changed password revokes it', async () => {
    const post = (form: Record<string, string>) => hc.fetch('/auth/token', { method: 'POST', body: new URLSearchParams(form) });
    const res = await post({ grant_type: 'password', username: 'alice', password: PASSWORDS.alice, service: 'hubcache', scope: 'repository:private/app:pull,push', client_id: 'containerd', access_type: 'offline' });
    assert.equal(res.status, 200);
    assertTokenHeaders(res);
    const body = (await res.json()) as { access_token: string; refresh_token: string; scope: string };
    assert.equal(body.scope, 'repository:private/app:pull,push');
    assert.equal((await hc.pull('/v2/private/app/manifests/1', { headers: { authorization: `Bearer ${body.access_token}` } })).status, 200);

    const refreshed = await post({ grant_type: 'refresh_token', refresh_token: body.refresh_token, service: 'hubcache', scope: 'repository:private/secret:pull', client_id: 'containerd' });
    assert.equal(refreshed.status, 200);
    const again = (await refreshed.json()) as { access_token: string };
    assert.equal((await hc.pull('/v2/private/secret/manifests/1', { headers: { authorization: `Bearer ${again.access_token}` } })).status, 200);

    assert.equal((await post({ grant_type: 'password', username: 'alice', password: 'wrong', scope: '' })).status, 401);
    assert.equal((await post({ grant_type: 'client_credentials' })).status, 405);

    writeFileSync(htpasswd, htpasswdText({ ...PASSWORDS, alice: 'a-new-password' }));
    hc.auth!.htpasswd.reload();
    const revoked = await post({ grant_type: 'refresh_token', refresh_token: body.refresh_token, service: 'hubcache', scope: 'repository:private/app:pull' });
    assert.equal(revoked.status, 401);
    await refused('/v2/private/app/manifests/1', { headers: as('alice') }, 401, 'UNAUTHORIZED');
    hc.clock.advance(61_000); // alice's three failures above reached maxFailedLogins
    assert.equal((await hc.pull('/v2/private/app/manifests/1', { headers: { authorization: basic('alice', 'a-new-password') } })).status, 200);
    writeFileSync(htpasswd, htpasswdText(PASSWORDS));
    hc.auth!.htpasswd.reload();
  });

  it('failed logins are rate-limited per user: 429 TOOMANYREQUESTS with Retry-After, even with the right password, until the window passes', async () => {
    for (let i = 0; i < 3; i++) await refused('/v2/private/app/manifests/1', { headers: { authorization: basic('mallory', `guess-${i}`) } }, 401, 'UNAUTHORIZED');
    const limited = await refused('/v2/private/app/manifests/1', { headers: as('mallory') }, 429, 'TOOMANYREQUESTS');
    assert.equal(limited.headers.get('retry-after'), '60');
    const viaToken = await hc.fetch('/auth/token?scope=repository:library/alpine:pull', { headers: as('mallory') });
    assert.equal(viaToken.status, 429);
    hc.clock.advance(61_000);
    assert.equal((await hc.pull('/v2/library/alpine/manifests/latest', { headers: as('mallory') })).status, 200);
  });

  it('counts hubcache_auth_requests_total by scheme and result, never by user', async () => {
    assert.ok((await hc.metrics.value('hubcache_auth_requests_total', { scheme: 'anonymous', result: 'allowed' })) > 0);
    assert.ok((await hc.metrics.value('hubcache_auth_requests_total', { scheme: 'basic', result: 'denied' })) > 0);
    assert.ok((await hc.metrics.value('hubcache_auth_requests_total', { scheme: 'bearer', result: 'unauthorized' })) > 0);
    assert.ok((await hc.metrics.value('hubcache_auth_requests_total', { scheme: 'basic', result: 'rate_limited' })) > 0);
    const text = await (await hc.fetch('/metrics')).text();
    for (const user of Object.keys(PASSWORDS)) assert.ok(!text.includes(user), `no user name in /metrics (${user})`);
  });

  it('no credential in any log line or error body', () => {
    const logs = JSON.stringify(hc.logs);
    for (const secret of [...Object.values(PASSWORDS), 'a-new-password', 'guess-0', 'eyJ']) assert.ok(!logs.includes(secret), `a credential leaked into the logs: ${secret}`);
    assert.ok(hc.logs.some((l) => l.message === 'authentication failed'), 'the failures were logged');
  });
});

describe('client authentication: anonymous pull limited to CIDR ranges, Basic mode', () => {
  let hc: AppHarness;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hubcache-auth-'));
    writeFileSync(join(dir, 'htpasswd'), htpasswdText({ alice: PASSWORDS.alice }));
    hc = await startApp({ auth: { keyDir: join(dir, 'key'), isHosted, config: { htpasswd: join(dir, 'htpasswd'), challenge: 'basic', anonymousPullCidrs: ['10.0.0.0/8', 'fd00::/8'], maxFailedLoginsPerAddress: 2 } } });
    putImage(hc.registry, 'library/alpine', 'latest', { seed: 'alpine' });
  });
  after(async () => {
    await hc.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a client outside the ranges is challenged (Basic) with no upstream request; a user pulls', async () => {
    const before = hc.upstreamServer.requests.length;
    const res = await hc.pull('/v2/library/alpine/manifests/latest');
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('www-authenticate'), 'Basic realm="hubcache"');
    assert.equal(hc.upstreamServer.requests.length, before);
    assert.equal((await hc.pull('/v2/library/alpine/manifests/latest', { headers: as('alice') })).status, 200);
  });

  it('/v2/ in Basic mode: 401 for a client that may not pull anonymously', async () => {
    assert.equal((await hc.fetch('/v2/')).status, 401);
    assert.equal((await hc.fetch('/v2/', { headers: as('alice') })).status, 200);
  });

  it('failed logins are rate-limited per address too, whatever the user names', async () => {
    assert.equal((await hc.fetch('/v2/', { headers: { authorization: basic('u1', 'x') } })).status, 401);
    assert.equal((await hc.fetch('/v2/', { headers: { authorization: basic('u2', 'x') } })).status, 401);
    const limited = await hc.fetch('/v2/', { headers: as('alice') });
    assert.equal(limited.status, 429);
    assert.equal(parseOciError(await limited.text()).code, 'TOOMANYREQUESTS');
    hc.clock.advance(5 * 60_000 + 1);
    assert.equal((await hc.fetch('/v2/', { headers: as('alice') })).status, 200);
  });
});

describe('client authentication: Basic mode, anonymous pull open', () => {
  it('/v2/ answers 200 to anonymous clients (dockerd mirror pings), hosted names are challenged', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hubcache-auth-'));
    writeFileSync(join(dir, 'htpasswd'), htpasswdText({ alice: PASSWORDS.alice }));
    const hc = await startApp({ auth: { keyDir: join(dir, 'key'), isHosted, config: { htpasswd: join(dir, 'htpasswd'), challenge: 'basic' } } });
    try {
      assert.equal((await hc.fetch('/v2/')).status, 200);
      const res = await hc.pull('/v2/private/app/manifests/1');
      assert.equal(res.status, 401);
      assert.equal(res.headers.get('www-authenticate'), 'Basic realm="hubcache"');
    } finally {
      await hc.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
