import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { MockAgent } from 'undici';
import { sha256Digest } from '../domain/digest.js';
import { MediaTypes, UPSTREAM_MANIFEST_ACCEPT } from '../domain/media-types.js';
import type { Reference, RepoName, Tag } from '../domain/reference.js';
import { RegistryUpstream, type RegistryUpstreamOptions } from './registry-client.js';
import { FakeRegistry, LoopbackServer, TokenBook, tokenService, type TokenServiceKnobs } from './testing/fake-registry.js';
import { UpstreamError, type RateLimitSnapshot } from './upstream.js';

const repo = 'library/alpine' as RepoName;
const tag = (t: string): Reference => ({ kind: 'tag', tag: t as Tag });
const manifest = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { digest: 'sha256:' + 'a'.repeat(64), size: 1 }, layers: [] };
const isKind = (kind: string) => (e: unknown) => e instanceof UpstreamError && e.kind === kind;
const isTokenReq = (r: { url: string }) => r.url.startsWith('/token');

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(cleanup.splice(0).map((f) => f()));
});

async function serve(reg: FakeRegistry, host: '127.0.0.1' | 'localhost' = '127.0.0.1'): Promise<LoopbackServer> {
  const s = await LoopbackServer.start(reg.handle, host);
  cleanup.push(() => s.close());
  return s;
}

function client(url: string, opts: Partial<RegistryUpstreamOptions> = {}): RegistryUpstream {
  const c = new RegistryUpstream({
    name: 'fake.test',
    url,
    timeouts: { connectMs: 2000, headersMs: 5000, bodyIdleMs: 5000 },
    retries: { attempts: 3, baseDelayMs: 0 },
    userAgent: 'hubcache-test',
    via: '1.1 test-instance (hubcache)',
    ...opts,
  });
  cleanup.push(() => c.close());
  return c;
}

async function bearerRegistry(): Promise<{ reg: FakeRegistry; srv: LoopbackServer }> {
  const reg = new FakeRegistry();
  reg.auth = 'bearer';
  reg.putManifest(repo, '3.20', manifest, MediaTypes.ociManifest);
  return { reg, srv: await serve(reg) };
}

test('token dance: 401 → token for the challenged scope → the same request with the token', async () => {
  const { srv } = await bearerRegistry();
  const m = await client(srv.url).getManifest(repo, tag('3.20'));
  assert.equal(m.body.toString(), JSON.stringify(manifest));
  const reqs = srv.requests;
  assert.deepEqual(reqs.map((r) => r.url.split('?')[0]), ['/v2/library/alpine/manifests/3.20', '/token', '/v2/library/alpine/manifests/3.20']);
  assert.equal(reqs[0]!.headers.authorization, undefined);
  const tokenUrl = new URL(reqs[1]!.url, srv.url);
  assert.equal(tokenUrl.searchParams.get('service'), 'fake-registry');
  assert.equal(tokenUrl.searchParams.get('scope'), 'repository:library/alpine:pull');
  assert.match(reqs[2]!.headers.authorization ?? '', /^Bearer tok-/);
});

test('a cached token is sent up front: the second request costs no 401 and no token request', async () => {
  const { srv } = await bearerRegistry();
  const c = client(srv.url);
  await c.getManifest(repo, tag('3.20'));
  const before = srv.count();
  await c.headManifest(repo, tag('3.20'));
  assert.equal(srv.count() - before, 1);
  assert.equal(srv.count(isTokenReq), 1);
});

test('concurrent callers share one token request', async () => {
  const { reg, srv } = await bearerRegistry();
  let release!: () => void;
  reg.tokenKnobs.gate = new Promise<void>((r) => (release = r));
  const c = client(srv.url);
  const all = Promise.all(Array.from({ length: 5 }, () => c.getManifest(repo, tag('3.20'))));
  await srv.waitForRequests(6); // five 401s and the (held) token request
  release();
  await all;
  assert.equal(srv.count(isTokenReq), 1);
});

test('an expired token is refreshed before use (injected clock)', async () => {
  const { reg, srv } = await bearerRegistry();
  reg.tokenKnobs.expiresIn = 300;
  let now = 1_700_000_000_000;
  const c = client(srv.url, { clock: () => now });
  await c.getManifest(repo, tag('3.20'));
  now += 301_000;
  const before = srv.count();
  await c.getManifest(repo, tag('3.20'));
  assert.equal(srv.count(isTokenReq), 2);
  assert.deepEqual(srv.requests.slice(before).map((r) => r.url.split('?')[0]), ['/token', '/v2/library/alpine/manifests/3.20']);
});

test('a cached token rejected later is refreshed once and the request retried once', async () => {
  const { reg, srv } = await bearerRegistry();
  const c = client(srv.url);
  await c.getManifest(repo, tag('3.20'));
  reg.tokens.revokeAll();
  const before = srv.count();
  await c.getManifest(repo, tag('3.20'));
  assert.deepEqual(srv.requests.slice(before).map((r) => r.url.split('?')[0]), ['/v2/library/alpine/manifests/3.20', '/token', '/v2/library/alpine/manifests/3.20']);
});

test('a fresh token rejected too is unauthorized, without a loop', async () => {
  const { reg, srv } = await bearerRegistry();
  reg.tokens.revokeAll();
  const realIssue = reg.tokens.issue.bind(reg.tokens);
  reg.tokens.issue = () => `${realIssue([])}-useless`; // tokens without the pull scope
  await assert.rejects(client(srv.url).getManifest(repo, tag('3.20')), (e: unknown) => isKind('unauthorized')(e) && (e as UpstreamError).status === 401);
  assert.equal(srv.count(), 3, '401, token, 401');
});

test('credentials go as Basic to an allowed realm host, and a realm host outside the list is never contacted', async () => {
  const book = new TokenBook();
  const knobs: TokenServiceKnobs = { credentials: { username: 'mirror', password: 's3cret' } };
  const auth = await LoopbackServer.start(tokenService(book, knobs), 'localhost');
  cleanup.push(() => auth.close());
  const reg = new FakeRegistry(book);
  reg.auth = 'bearer';
  reg.realm = `${auth.url}/token`;
  reg.putManifest(repo, '3.20', manifest, MediaTypes.ociManifest);
  const srv = await serve(reg);
  const credentials = { username: 'mirror', password: 's3cret' };

  await assert.rejects(client(srv.url, { credentials }).getManifest(repo, tag('3.20')), isKind('protocol'));
  assert.equal(auth.count(), 0, 'default allow-list is the registry host only');

  // The realm is matched as an origin: its host name alone is not enough (issue #11).
  await assert.rejects(client(srv.url, { credentials, allowedRealmHosts: ['localhost'] }).getManifest(repo, tag('3.20')), isKind('protocol'));
  assert.equal(auth.count(), 0, 'localhost means port 80 of the upstream scheme');

  await client(srv.url, { credentials, allowedRealmHosts: [auth.host] }).getManifest(repo, tag('3.20'));
  assert.equal(auth.count(), 1);
  assert.equal(auth.requests[0]!.headers.authorization, `Basic ${Buffer.from('mirror:s3cret').toString('base64')}`);
  assert.equal(srv.count((r) => (r.headers.authorization ?? '').startsWith('Basic')), 0, 'credentials never go to the registry in Bearer mode');
});

test('issue #11: an https upstream never sends its credentials to an http realm, even on its own host, unless an http:// origin is allowed', async () => {
  const agent = new MockAgent();
  agent.disableNetConnect();
  cleanup.push(() => agent.close());
  const credentials = { username: 'mirror', password: 's3cret' };
  const path = '/v2/library/alpine/manifests/3.20';
  const registry = agent.get('https://registry.test');
  const plain = agent.get('http://registry.test');
  const challenge = { 'www-authenticate': 'Bearer realm="http://registry.test/token",service="registry.test"' };

  registry.intercept({ path, method: 'GET' }).reply(401, '{}', { headers: challenge });
  await assert.rejects(client('https://registry.test', { dispatcher: agent, credentials }).getManifest(repo, tag('3.20')), isKind('protocol'));
  registry.intercept({ path, method: 'GET' }).reply(401, '{}', { headers: challenge });
  await assert.rejects(client('https://registry.test', { dispatcher: agent, credentials, allowedRealmHosts: ['registry.test'] }).getManifest(repo, tag('3.20')), isKind('protocol'), 'a bare host takes the upstream scheme');

  const basic = `Basic ${Buffer.from('mirror:s3cret').toString('base64')}`;
  registry.intercept({ path, method: 'GET' }).reply(401, '{}', { headers: challenge });
  plain.intercept({ path: (p) => p.startsWith('/token?'), method: 'GET', headers: { authorization: basic } }).reply(200, { token: 'tok' });
  registry.intercept({ path, method: 'GET', headers: { authorization: 'Bearer tok' } }).reply(200, JSON.stringify(manifest), { headers: { 'content-type': MediaTypes.ociManifest } });
  await client('https://registry.test', { dispatcher: agent, credentials, allowedRealmHosts: ['http://registry.test'] }).getManifest(repo, tag('3.20'));
  agent.assertNoPendingInterceptors();
});

test('a Basic challenge is answered with the configured credentials, then sent up front', async () => {
  const reg = new FakeRegistry();
  reg.auth = 'basic';
  reg.basicCredentials = { username: 'u', password: 'p' };
  reg.putManifest(repo, '3.20', manifest, MediaTypes.ociManifest);
  const srv = await serve(reg);
  const c = client(srv.url, { credentials: { username: 'u', password: 'p' } });
  await c.getManifest(repo, tag('3.20'));
  await c.getManifest(repo, tag('3.20'));
  assert.deepEqual(srv.requests.map((r) => (r.headers.authorization ?? 'none').split(' ')[0]), ['none', 'Basic', 'Basic']);
  await assert.rejects(client(srv.url).getManifest(repo, tag('3.20')), isKind('unauthorized'));
});

test('HEAD gives the descriptor from headers; the full Accept list is sent', async () => {
  const reg = new FakeRegistry();
  const digest = reg.putManifest(repo, '3.20', manifest, MediaTypes.ociManifest);
  const srv = await serve(reg);
  const d = await client(srv.url).headManifest(repo, tag('3.20'));
  assert.deepEqual(d, { digest, size: Buffer.byteLength(JSON.stringify(manifest)), mediaType: MediaTypes.ociManifest });
  assert.equal(srv.requests[0]!.method, 'HEAD');
  assert.equal(srv.requests[0]!.headers.accept, UPSTREAM_MANIFEST_ACCEPT);
});

test('GET trusts the bytes: digest computed, media type sniffed when the upstream sends a generic one', async () => {
  const reg = new FakeRegistry();
  const body = Buffer.from(JSON.stringify(manifest));
  reg.hook = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'docker-content-digest': 'sha256:' + 'b'.repeat(64) }).end(body);
    return true;
  };
  const srv = await serve(reg);
  const m = await client(srv.url).getManifest(repo, tag('3.20'));
  assert.equal(m.descriptor.digest, sha256Digest(body));
  assert.equal(m.descriptor.mediaType, MediaTypes.ociManifest);
  assert.ok(m.body.equals(body));
});

test('only a manifest hubcache accepts is returned: another Content-Type, a contradicting one or HTML is a protocol error, never retried', async () => {
  const genuine = Buffer.from(JSON.stringify(manifest));
  const cases: Array<[string, Buffer, RegExp]> = [
    ['text/html', genuine, /Content-Type "text\/html" is not a manifest media type/],
    [MediaTypes.dockerManifest, genuine, /disagrees with the mediaType field/],
    ['text/html; charset=utf-8', Buffer.from('<html>sign in</html>'), /not a manifest media type/],
    ['application/octet-stream', Buffer.from('<html>sign in</html>'), /not JSON/],
    ['application/octet-stream', Buffer.from(JSON.stringify({ ...manifest, mediaType: `${MediaTypes.ociManifest}\r\nX: 1` })), /mediaType field is not a valid media type/],
  ];
  for (const [contentType, body, why] of cases) {
    const reg = new FakeRegistry();
    reg.hook = (_req, res) => (res.writeHead(200, { 'content-type': contentType }).end(body), true);
    const srv = await serve(reg);
    await assert.rejects(client(srv.url).getManifest(repo, tag('3.20')), (e: unknown) => isKind('protocol')(e) && why.test((e as Error).message));
    assert.equal(srv.count(), 1, `${contentType}: not retried`);
  }
});

test('a HEAD whose Content-Type is not a manifest type tells nothing: the GET decides (and refuses it)', async () => {
  const reg = new FakeRegistry();
  const body = Buffer.from(JSON.stringify(manifest));
  reg.hook = (_req, res) => (res.writeHead(200, { 'content-type': 'text/html', 'content-length': body.length, 'docker-content-digest': sha256Digest(body) }).end(_req.method === 'HEAD' ? undefined : body), true);
  const srv = await serve(reg);
  await assert.rejects(client(srv.url).headManifest(repo, tag('3.20')), isKind('protocol'));
  assert.deepEqual(srv.requests.map((r) => r.method), ['HEAD', 'GET']);
});

test('fetching by digest: bytes that hash to something else are a protocol error', async () => {
  const reg = new FakeRegistry();
  const wanted = sha256Digest('something else');
  reg.manifests.set(`${repo}@${wanted}`, { body: Buffer.from(JSON.stringify(manifest)), mediaType: MediaTypes.ociManifest });
  const srv = await serve(reg);
  await assert.rejects(client(srv.url).getManifest(repo, { kind: 'digest', digest: wanted }), isKind('protocol'));
  assert.equal(srv.count(), 1, 'not retried');
});

test('a manifest over the size cap is a protocol error, by Content-Length or while reading', async () => {
  const reg = new FakeRegistry();
  reg.putManifest(repo, 'big', { ...manifest, pad: 'x'.repeat(2000) }, MediaTypes.ociManifest);
  reg.hook = (req, res) => {
    if (!req.url?.endsWith('/chunked')) return false;
    res.writeHead(200, { 'content-type': MediaTypes.ociManifest });
    res.write('x'.repeat(1500));
    res.end('x'.repeat(1500));
    return true;
  };
  const srv = await serve(reg);
  const c = client(srv.url, { maxManifestBytes: 1024 });
  await assert.rejects(c.getManifest(repo, tag('big')), isKind('protocol'));
  await assert.rejects(c.getManifest(repo, tag('chunked')), isKind('protocol'));
});

test('404 is not-found with the OCI error body', async () => {
  const srv = await serve(new FakeRegistry());
  await assert.rejects(client(srv.url).getManifest(repo, tag('nope')), (e: unknown) => {
    assert.ok(isKind('not-found')(e));
    assert.deepEqual((e as UpstreamError).upstreamErrors, [{ code: 'MANIFEST_UNKNOWN', message: 'manifest_unknown' }]);
    return true;
  });
});

test('rate-limit headers of manifest responses become the snapshot, the observer hears them', async () => {
  const reg = new FakeRegistry();
  reg.putManifest(repo, '3.20', manifest, MediaTypes.ociManifest);
  reg.rateLimit = { limit: 100, remaining: 76, windowSeconds: 21600, source: '192.0.2.7' };
  const srv = await serve(reg);
  const seen: RateLimitSnapshot[] = [];
  const c = client(srv.url, { clock: () => 1234, observer: { rateLimit: (_u, s) => seen.push(s) } });
  assert.equal(c.rateLimit(), undefined);
  await c.headManifest(repo, tag('3.20'));
  const m = await c.getManifest(repo, tag('3.20'));
  const want = { limit: 100, remaining: 76, windowSeconds: 21600, source: '192.0.2.7', observedAt: 1234 };
  assert.deepEqual(c.rateLimit(), want);
  assert.deepEqual(seen, [want, want]);
  assert.deepEqual(m.headers, { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '76;w=21600', 'docker-ratelimit-source': '192.0.2.7' });
});

test("the whole tag list: the upstream's own pages followed (Link) and merged, sorted, entries that are not tags dropped", async () => {
  const reg = new FakeRegistry();
  const all = ['latest', 'edge', '3.20', '3.19', '3.18', 'bad/tag'];
  // A registry that pages by itself, two at a time, in its own order.
  reg.hook = (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (!url.pathname.endsWith('/tags/list')) return false;
    const from = url.searchParams.has('last') ? all.indexOf(url.searchParams.get('last')!) + 1 : 0;
    const page = all.slice(from, from + 2);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (from + 2 < all.length) headers.link = `</v2/${repo}/tags/list?n=2&last=${encodeURIComponent(page[1]!)}>; rel="next"`;
    res.writeHead(200, headers).end(JSON.stringify({ name: repo, tags: page }));
    return true;
  };
  const srv = await serve(reg);
  const dropped: number[] = [];
  const list = await client(srv.url, { observer: { tagsDropped: (_u, _r, n) => dropped.push(n) } }).listTags(repo);
  assert.equal(list.name, repo);
  assert.deepEqual(list.tags.toArray(), ['3.18', '3.19', '3.20', 'edge', 'latest']);
  assert.deepEqual(dropped, [1]);
  assert.deepEqual(srv.requests.map((r) => r.url), [`/v2/${repo}/tags/list`, `/v2/${repo}/tags/list?n=2&last=edge`, `/v2/${repo}/tags/list?n=2&last=3.19`]);
});

test('a tag list over maxTagListBytes, whose pages never advance, or that is not a tag list is a protocol error', async () => {
  const reg = new FakeRegistry();
  reg.tags.set('big/app', Array.from({ length: 200 }, (_, i) => `t${i}`));
  reg.hook = (req, res) => {
    if (req.url?.startsWith('/v2/loop/app/tags/list')) {
      res.writeHead(200, { 'content-type': 'application/json', link: '</v2/loop/app/tags/list?last=a>; rel="next"' }).end('{"tags":["a"]}');
      return true;
    }
    if (req.url?.startsWith('/v2/html/app/tags/list')) return (res.writeHead(200, { 'content-type': 'text/html' }).end('<html>'), true);
    return false;
  };
  const srv = await serve(reg);
  const c = client(srv.url, { maxTagListBytes: 1000 });
  await assert.rejects(c.listTags('big/app' as RepoName), (e: unknown) => isKind('protocol')(e) && /larger than 1000 bytes \(upstreamClient.maxTagListSize\)/.test((e as Error).message));
  await assert.rejects(c.listTags('loop/app' as RepoName), (e: unknown) => isKind('protocol')(e) && /does not advance/.test((e as Error).message));
  await assert.rejects(c.listTags('html/app' as RepoName), (e: unknown) => isKind('protocol')(e) && /not JSON/.test((e as Error).message));
});

test('ping authenticates against /v2/ with a scope-less token', async () => {
  const { srv } = await bearerRegistry();
  const seen: string[] = [];
  await client(srv.url, { observer: { request: (e) => seen.push(`${e.kind}:${e.status}`), tokenFetched: (_u, ok) => seen.push(`fetched:${ok}`) } }).ping();
  assert.deepEqual(seen, ['ping:401', 'token:200', 'fetched:true', 'ping:200']);
  assert.equal(new URL(srv.requests[1]!.url, srv.url).searchParams.has('scope'), false);
});
