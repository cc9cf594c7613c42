/**
 * Issue #11, points 1 and 2: token realms named by an upstream's challenges.
 *
 * 1. A challenge naming a realm hubcache refuses (or one that fails) fails that one request: the
 *    upstream's other repositories keep working, and a remembered realm that stops working is
 *    forgotten instead of failing every later request without asking the upstream.
 * 2. Realms are matched as origins (scheme, host and port): the token service on another port of
 *    the upstream's host gets no credentials unless `--upstream-allowed-realm-hosts` names it.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { MediaTypes } from '../../src/domain/media-types.js';
import { LoopbackServer, tokenService } from '../../src/upstream/testing/fake-registry.js';
import { challengeWith, startHostileUpstream, type HostileUpstream } from '../../src/upstream/testing/hostile-registry.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';

const manifest = (n: string) => ({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { n }, layers: [] });
const GOOD = ['good/a', 'good/b', 'good/c', 'good/d'];
const CREDENTIALS = { username: 'mirror', password: 's3cret' };
const BASIC = `Basic ${Buffer.from('mirror:s3cret').toString('base64')}`;

const started: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  for (const s of started.splice(0).reverse()) await s.close();
});

/** A bearer-auth upstream (its own `/token` realm) with a manifest in every GOOD repository. */
async function bearerUpstream(setup?: Parameters<typeof startHostileUpstream>[0]): Promise<HostileUpstream> {
  const up = await startHostileUpstream((r) => {
    r.auth = 'bearer';
    for (const repo of GOOD) r.putManifest(repo, '1', manifest(repo), MediaTypes.ociManifest);
    setup?.(r);
  });
  started.push(up);
  return up;
}

async function hubcache(up: HostileUpstream, flags: Record<string, string> = {}): Promise<InProcessHubcache> {
  // One attempt: a failing realm fails at once instead of after backoff.
  const hc = await startInProcess({ config: { upstreamClient: { retries: 1 } }, flags: { 'upstream-url': up.url, ...flags } });
  started.push(hc);
  return hc;
}

async function pull(hc: InProcessHubcache, repo: string): Promise<number> {
  const res = await fetch(`${hc.url}/v2/${repo}/manifests/1`, { headers: { accept: MediaTypes.ociManifest } });
  await res.arrayBuffer();
  return res.status;
}

/** A loopback server that must never be contacted: a realm's redirect target, another port's token service. */
async function trap(): Promise<LoopbackServer> {
  const s = await LoopbackServer.start((_req, res) => void res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"trapped"}'));
  started.push(s);
  return s;
}

describe('issue #11 point 1: one bad challenge fails one request, not the upstream', () => {
  // [case, the evil repository's WWW-Authenticate, given the upstream and a trap server]
  const BAD: ReadonlyArray<readonly [string, (up: HostileUpstream, t: LoopbackServer) => string]> = [
    ['a link-local realm', () => 'Bearer realm="http://169.254.169.254/latest/api/token",service="evil"'],
    ['a file: realm', () => 'Bearer realm="file:///etc/passwd",service="evil"'],
    ['a realm with userinfo', (up) => `Bearer realm="http://user:pw@${up.host}/token",service="fake-registry"`],
    ['a realm that redirects', (up) => `Bearer realm="${up.url}/redirecting-realm",service="fake-registry"`],
    ['a realm that fails', (up) => `Bearer realm="${up.url}/failing-realm",service="fake-registry"`],
    ['a realm on another port of the same host', (_up, t) => `Bearer realm="${t.url}/token",service="fake-registry"`],
  ];

  for (const [name, header] of BAD) {
    it(`${name}: the evil repository fails, the others are still pulled from the upstream`, async () => {
      const t = await trap();
      const up = await bearerUpstream((r) => {
        r.hook = (req, res) => {
          if (req.url?.startsWith('/redirecting-realm')) return void res.writeHead(302, { location: `${t.url}/token` }).end(), true;
          if (req.url?.startsWith('/failing-realm')) return void res.writeHead(500).end('realm down'), true;
          return false;
        };
      });
      up.registry.behave('evil/', challengeWith(header(up, t)));
      const hc = await hubcache(up, { 'upstream-username': CREDENTIALS.username, 'upstream-password': CREDENTIALS.password });

      assert.notEqual(await pull(hc, 'evil/app'), 200);
      assert.equal(await pull(hc, 'good/a'), 200, 'a repository with a good challenge is pulled');
      assert.equal(up.registry.hits.get('good/a'), 2, 'asked the upstream: a 401, then with the token');
      assert.equal(await pull(hc, 'good/b'), 200);
      assert.equal(t.count(), 0, 'the redirect target and the other port never heard from hubcache');
    });
  }

  it('a realm remembered from a good challenge is not replaced by a bad one', async () => {
    const up = await bearerUpstream((r) => r.behave('evil/', challengeWith('Bearer realm="http://169.254.169.254/token",service="evil"')));
    const hc = await hubcache(up);
    assert.equal(await pull(hc, 'good/a'), 200);
    assert.notEqual(await pull(hc, 'evil/app'), 200);
    const tokensBefore = up.server.count((r) => r.url.startsWith('/token'));
    assert.equal(await pull(hc, 'good/b'), 200);
    assert.equal(up.registry.hits.get('good/b'), 1, 'authenticated up front with the remembered realm: no 401');
    assert.equal(up.server.count((r) => r.url.startsWith('/token')) - tokensBefore, 1);
  });

  it('a remembered realm that stops working is forgotten: the next challenge names the realm in use now', async () => {
    const up = await bearerUpstream();
    const hc = await hubcache(up);
    assert.equal(await pull(hc, 'good/a'), 200);
    // The registry moves its token service: the old realm answers 503, the challenges name the new one.
    up.registry.tokenKnobs.status = 503;
    up.registry.realm = `${up.url}/token2`;
    const moved = tokenService(up.registry.tokens);
    up.registry.hook = (req, res) => (req.url?.startsWith('/token2') ? (void moved(req, res), true) : false);
    assert.equal(await pull(hc, 'good/b'), 200, 'the failing remembered realm did not fail the request');
    assert.equal(await pull(hc, 'good/c'), 200);
    assert.equal(up.registry.hits.get('good/c'), 1, 'the new realm is remembered: no 401');
    assert.equal(up.server.count((r) => r.url.startsWith('/token?')), 2, 'the old realm: the first token, then one failed attempt');
  });
});

describe('issue #11 point 2: realms are matched by scheme, host and port', () => {
  /** The upstream's challenges name a token service on another port of 127.0.0.1 that checks the credentials. */
  async function splitUpstream(): Promise<{ up: HostileUpstream; auth: LoopbackServer }> {
    const up = await bearerUpstream();
    const auth = await LoopbackServer.start(tokenService(up.registry.tokens, { credentials: CREDENTIALS }));
    started.push(auth);
    up.registry.realm = `${auth.url}/token`;
    return { up, auth };
  }
  const creds = { 'upstream-username': CREDENTIALS.username, 'upstream-password': CREDENTIALS.password };

  it('by default, a token service on another port of the upstream host gets neither a request nor the credentials', async () => {
    const { up, auth } = await splitUpstream();
    const hc = await hubcache(up, creds);
    assert.equal(await pull(hc, 'good/a'), 502, 'UPSTREAM_ERROR: the upstream sent us to a realm we refuse');
    assert.equal(auth.count(), 0);
  });

  it('a bare host without the port does not allow it either (the scheme default port is implied)', async () => {
    const { up, auth } = await splitUpstream();
    const hc = await hubcache(up, { ...creds, 'upstream-allowed-realm-hosts': '127.0.0.1' });
    assert.equal(await pull(hc, 'good/a'), 502);
    assert.equal(auth.count(), 0);
  });

  for (const [how, entry] of [
    ['its origin', (a: LoopbackServer) => a.url],
    ['its host:port (the upstream URL scheme)', (a: LoopbackServer) => a.host],
  ] as const) {
    it(`--upstream-allowed-realm-hosts with ${how} allows it, and it gets the credentials as Basic`, async () => {
      const { up, auth } = await splitUpstream();
      const hc = await hubcache(up, { ...creds, 'upstream-allowed-realm-hosts': `https://auth.docker.io,${entry(auth)}` });
      assert.equal(await pull(hc, 'good/a'), 200);
      assert.equal(auth.count(), 1);
      assert.equal(auth.requests[0]!.headers.authorization, BASIC);
      assert.equal(up.server.count((r) => r.headers.authorization === BASIC), 0, 'the registry itself gets only the token');
    });
  }
});
