/**
 * Pulling from upstreams that want credentials: the configured account goes only to the token
 * service (or, for a Basic registry, to the registry), tokens are reused until they expire on the
 * shared clock or the registry rejects them, and refused credentials end in one clear 403 DENIED
 * for the client — never a 401 it would answer with credentials of its own, in a loop.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FakeRegistry } from '../../src/upstream/testing/fake-registry.js';
import { startApp, withApp, type AppHarness } from '../support/app-harness.js';
import { ALL_MANIFESTS, ociError, putImage } from '../support/oci-fixtures.js';

const account = { username: 'reader', password: 'r3ad' };
const basicOf = (c: { username: string; password: string }) => `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
const isToken = (r: { url: string }) => r.url.startsWith('/token');

/** A registry behind a token service that checks `account`. */
function privateRegistry(): FakeRegistry {
  const registry = new FakeRegistry();
  registry.auth = 'bearer';
  registry.tokenKnobs.credentials = account;
  registry.tokenKnobs.expiresIn = 300;
  return registry;
}

describe('a token-auth upstream with the configured account', () => {
  let hc: AppHarness;
  const registry = privateRegistry();

  before(async () => {
    hc = await startApp({ upstreams: { 'docker.io': { registry, credentials: account } }, tagTtlMs: 60_000 });
    for (const tag of ['1', '2']) putImage(registry, 'acme/private', tag, { seed: `private-${tag}` });
  });
  after(() => hc.close());

  it('pulls; the account goes to the token service only, the registry sees bearer tokens only', async () => {
    const res = await hc.pull('/v2/acme/private/manifests/1');
    assert.equal(res.status, 200);
    const tokenRequests = hc.upstreamServer.requests.filter(isToken);
    assert.equal(tokenRequests.length, 1);
    assert.equal(tokenRequests[0]!.headers.authorization, basicOf(account));
    const atRegistry = hc.upstreamServer.requests.filter((r) => !isToken(r));
    assert.ok(atRegistry.every((r) => !/^Basic /.test(r.headers.authorization ?? '')), 'no Basic credentials at the registry');
    assert.ok(atRegistry.some((r) => /^Bearer /.test(r.headers.authorization ?? '')));
  });

  it('reuses the token for the repository until it expires on the clock, then fetches one new token', async () => {
    const tokens = () => hc.upstreamServer.count(isToken);
    const before = tokens();
    assert.equal((await hc.pull('/v2/acme/private/manifests/2')).status, 200);
    assert.equal(tokens(), before, 'same scope: the cached token');
    hc.clock.advance(301_000);
    const revalidated = await hc.pull('/v2/acme/private/manifests/1');
    assert.equal(revalidated.headers.get('x-hubcache-cache'), 'revalidated');
    assert.equal(tokens(), before + 1, 'expired: one new token');
  });

  it('a token the registry stopped accepting is replaced once, and the pull goes on', async () => {
    registry.tokens.revokeAll();
    hc.clock.advance(60_000);
    const before = hc.upstreamServer.count(isToken);
    const res = await hc.pull('/v2/acme/private/manifests/2');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-hubcache-cache'), 'revalidated');
    assert.equal(hc.upstreamServer.count(isToken), before + 1);
  });
});

describe('refused credentials', () => {
  for (const [what, credentials] of [
    ['wrong credentials', { username: 'reader', password: 'wrong' }],
    ['no credentials for a registry without anonymous pulls', undefined],
  ] as const) {
    it(`${what}: 403 DENIED with no challenge, after a bounded number of upstream requests`, async () => {
      const registry = privateRegistry();
      // Without an account the token service refuses outright (wrong ones it refuses by itself).
      registry.tokenKnobs.status = credentials ? undefined : 401;
      await withApp({ upstreams: { 'docker.io': { registry, credentials } } }, async (hc) => {
        putImage(registry, 'acme/private', '1', { seed: 'refused' });
        for (const path of ['/v2/acme/private/manifests/1', '/v2/acme/private/tags/list']) {
          const res = await hc.fetch(path, { headers: { accept: ALL_MANIFESTS } });
          assert.equal(res.status, 403, path);
          assert.equal(res.headers.get('www-authenticate'), null, 'nothing the client could answer');
          assert.equal((await ociError(res)).code, 'DENIED');
        }
        assert.ok(hc.upstreamServer.requests.length <= 6, `no 401 loop upstream: ${hc.upstreamServer.requests.length} requests`);
      });
    });
  }
});

describe('a Basic-auth upstream', () => {
  it('sends the account to the registry after its Basic challenge; without one the client gets DENIED', async () => {
    const registry = new FakeRegistry();
    registry.auth = 'basic';
    registry.basicCredentials = account;
    await withApp({ upstreams: { 'docker.io': { registry, credentials: account }, 'anon.example': { registry } } }, async (hc) => {
      const image = putImage(registry, 'acme/basic', '1', { seed: 'basic' });
      assert.equal((await hc.pull('/v2/acme/basic/manifests/1')).digest, image.digest);
      const last = hc.upstreamServer.requests.at(-1)!;
      assert.equal(last.headers.authorization, basicOf(account));
      const anon = await hc.fetch('/v2/anon.example/acme/basic/manifests/1', { headers: { accept: ALL_MANIFESTS } });
      assert.equal(anon.status, 403);
      assert.equal((await ociError(anon)).code, 'DENIED');
    });
  });
});
