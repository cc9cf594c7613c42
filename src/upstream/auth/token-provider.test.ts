import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent } from 'undici';
import { LoopbackServer, TokenBook, tokenService, type TokenServiceKnobs } from '../testing/fake-registry.js';
import { UpstreamError } from '../upstream.js';
import { parseWwwAuthenticate } from './challenge.js';
import { TokenProvider, tokenRequestFromChallenge, type TokenProviderOptions } from './token-provider.js';

const dispatcher = new Agent({ headersTimeout: 5000, bodyTimeout: 5000 });
let knobs: TokenServiceKnobs;
let auth: LoopbackServer;
let other: LoopbackServer;

before(async () => {
  knobs = {};
  const book = new TokenBook();
  // The handler reads `knobs` per request, so tests can change them.
  auth = await LoopbackServer.start((req, res) => tokenService(book, knobs)(req, res));
  other = await LoopbackServer.start((req, res) => tokenService(book, {})(req, res), 'localhost');
});
after(async () => {
  await Promise.all([auth.close(), other.close()]);
  await dispatcher.close();
});

function provider(opts: Partial<TokenProviderOptions> = {}): TokenProvider {
  return new TokenProvider({ dispatcher, allowedRealms: new Set([auth.url]), ...opts });
}
const isKind = (kind: string) => (e: unknown) => e instanceof UpstreamError && e.kind === kind;

test('asks the realm with service and one scope parameter per scope, Basic credentials when configured', async () => {
  knobs = {};
  const before = auth.count();
  const tp = provider({ credentials: { username: 'u', password: 'p:w' }, headers: { via: '1.1 test (hubcache)' } });
  const grant = await tp.getToken({ realm: `${auth.url}/token?x=1`, service: 'svc', scopes: ['repository:a/b:pull', 'repository:c:pull'] });
  assert.equal(grant.fromCache, false);
  const r = auth.requests[before]!;
  const url = new URL(r.url, auth.url);
  assert.equal(url.searchParams.get('x'), '1');
  assert.equal(url.searchParams.get('service'), 'svc');
  assert.deepEqual(url.searchParams.getAll('scope'), ['repository:a/b:pull', 'repository:c:pull']);
  assert.equal(r.headers.authorization, `Basic ${Buffer.from('u:p:w').toString('base64')}`);
  assert.equal(r.headers.via, '1.1 test (hubcache)');
});

test('tokens are cached per (realm, service, scopes) and refreshed shortly before expiry', async () => {
  knobs = { expiresIn: 300 };
  let now = 1_000_000;
  const tp = provider({ clock: () => now });
  const req = { realm: `${auth.url}/token`, service: 'svc', scopes: ['repository:x:pull'] };
  const before = auth.count();
  const a = await tp.getToken(req);
  now += 269_000; // refresh margin is min(30 s, 10 % of 300 s) = 30 s
  const b = await tp.getToken({ ...req, scopes: [...req.scopes] });
  assert.equal(b.token, a.token);
  assert.equal(b.fromCache, true);
  assert.equal(auth.count() - before, 1);
  await tp.getToken({ ...req, scopes: ['repository:y:pull'] });
  assert.equal(auth.count() - before, 2, 'another scope is another token');
  now += 2_000;
  const c = await tp.getToken(req);
  assert.notEqual(c.token, a.token);
  assert.equal(auth.count() - before, 3);
});

test('expires_in defaults to 60 s (token spec); a plausible issued_at shortens the lifetime', async () => {
  let now = Date.parse('2024-01-01T00:00:00Z');
  knobs = { expiresIn: 0 };
  const tp = provider({ clock: () => now });
  const req = { realm: `${auth.url}/token`, scopes: ['s1'] };
  const g = await tp.getToken(req);
  assert.equal(g.expiresAt, now + 60_000);
  knobs = { expiresIn: 100, issuedAt: '2023-12-31T23:59:00Z' };
  const h = await tp.getToken({ ...req, scopes: ['s2'] });
  assert.equal(h.expiresAt, now + 40_000);
  knobs = { expiresIn: 100, issuedAt: '2030-01-01T00:00:00Z' }; // a clock far ahead of ours is ignored
  const i = await tp.getToken({ ...req, scopes: ['s3'] });
  assert.equal(i.expiresAt, now + 100_000);
});

test('concurrent callers for one key share one request', async () => {
  let release!: () => void;
  knobs = { gate: new Promise<void>((r) => (release = r)) };
  const tp = provider();
  const before = auth.count();
  const req = { realm: `${auth.url}/token`, scopes: ['repository:shared:pull'] };
  const all = Promise.all(Array.from({ length: 5 }, () => tp.getToken(req)));
  await auth.waitForRequests(before + 1);
  release();
  const grants = await all;
  assert.equal(auth.count() - before, 1);
  assert.equal(new Set(grants.map((g) => g.token)).size, 1);
});

test("one caller's abort does not cancel the shared fetch for the others", async () => {
  let release!: () => void;
  knobs = { gate: new Promise<void>((r) => (release = r)) };
  const tp = provider();
  const req = { realm: `${auth.url}/token`, scopes: ['repository:abort:pull'] };
  const ac = new AbortController();
  const first = tp.getToken(req, ac.signal);
  const second = tp.getToken(req);
  ac.abort();
  await assert.rejects(first, (e: Error) => e.name === 'AbortError');
  release();
  assert.match((await second).token, /^tok-/);
});

test('invalidate forces a fresh token', async () => {
  knobs = {};
  const tp = provider();
  const req = { realm: `${auth.url}/token`, scopes: ['repository:inv:pull'] };
  const a = await tp.getToken(req);
  tp.invalidate(a.key);
  const b = await tp.getToken(req);
  assert.notEqual(a.token, b.token);
  assert.equal(b.fromCache, false);
});

test('a realm host outside the allow-list is never contacted, with or without credentials', async () => {
  const tp = provider({ credentials: { username: 'u', password: 'secret' } });
  await assert.rejects(tp.getToken({ realm: `${other.url}/token`, scopes: [] }), isKind('protocol'));
  assert.equal(other.count(), 0);
  // Matched as an origin: the same host on another port, or under another scheme, is another realm.
  const port = Number(new URL(other.url).port);
  const near = provider({ allowedRealms: new Set([`http://localhost:${port + 1}`, `https://localhost:${port}`, `http://${new URL(other.url).hostname}`]), credentials: { username: 'u', password: 'secret' } });
  await assert.rejects(near.getToken({ realm: `${other.url}/token`, scopes: [] }), isKind('protocol'));
  assert.equal(other.count(), 0);
  const allowed = provider({ allowedRealms: new Set([other.url]), credentials: { username: 'u', password: 'secret' } });
  await allowed.getToken({ realm: `${other.url}/token`, scopes: [] });
  assert.equal(other.count(), 1);
});

test('a realm that is not plain http(s) is a protocol error', async () => {
  const tp = provider({ allowedRealms: new Set(['http://x', auth.url]) });
  await assert.rejects(tp.getToken({ realm: 'file:///etc/passwd', scopes: [] }), isKind('protocol'));
  await assert.rejects(tp.getToken({ realm: 'not a url', scopes: [] }), isKind('protocol'));
  await assert.rejects(tp.getToken({ realm: `http://a:b@${auth.host}/token`, scopes: [] }), isKind('protocol'));
});

test('token service failures: 401 unauthorized, 5xx unavailable, no token unavailable', async () => {
  const tp = provider();
  const req = (s: string) => ({ realm: `${auth.url}/token`, scopes: [s] });
  knobs = { status: 401 };
  await assert.rejects(tp.getToken(req('a')), isKind('unauthorized'));
  knobs = { status: 503 };
  await assert.rejects(tp.getToken(req('b')), isKind('unavailable'));
  knobs = { credentials: { username: 'u', password: 'right' } };
  await assert.rejects(provider({ credentials: { username: 'u', password: 'wrong' } }).getToken(req('c')), isKind('unauthorized'));
  const odd = await LoopbackServer.start((r, res) => void res.end(r.url?.includes('access') ? '{"access_token":"oauth-style"}' : '<html>portal</html>'));
  try {
    const p = provider({ allowedRealms: new Set([odd.url]) });
    assert.equal((await p.getToken({ realm: `${odd.url}/access`, scopes: [] })).token, 'oauth-style');
    await assert.rejects(p.getToken({ realm: `${odd.url}/html`, scopes: [] }), isKind('unavailable'));
  } finally {
    await odd.close();
  }
});

test('a token answer trickling in forever ends at the deadline: unavailable, the connection closed, the key free again', async () => {
  let closed!: Promise<void>;
  const slow = await LoopbackServer.start((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': 100_000 });
    const timer = setInterval(() => res.write(' '), 20);
    closed = new Promise<void>((r) => res.on('close', () => (clearInterval(timer), r())));
  });
  try {
    const statuses: Array<number | string> = [];
    const tp = new TokenProvider({ dispatcher, allowedRealms: new Set([slow.url]), timeoutMs: 300, observer: { tokenRequest: (e) => statuses.push(e.status) } });
    const req = { realm: `${slow.url}/token`, scopes: ['repository:x:pull'] };
    await assert.rejects(tp.getToken(req), (e: unknown) => isKind('unavailable')(e) && /no complete answer within 300 ms/.test((e as Error).message));
    await closed;
    assert.deepEqual(statuses, [200]);
    await assert.rejects(tp.getToken(req), isKind('unavailable'));
    assert.equal(slow.count(), 2, 'a failed fetch is not shared with later callers');
  } finally {
    await slow.close();
  }
});

test('a connection failure is unavailable and is reported to the observer', async () => {
  const dead = await LoopbackServer.start(() => {});
  const host = dead.host;
  await dead.close();
  const seen: unknown[] = [];
  const tp = provider({ allowedRealms: new Set([`http://${host}`]), observer: { tokenRequest: (e) => seen.push(e.status) } });
  await assert.rejects(tp.getToken({ realm: `http://${host}/token`, scopes: [] }), isKind('unavailable'));
  assert.deepEqual(seen, ['error']);
});

test('tokenRequestFromChallenge splits space-delimited scopes and falls back to the default', () => {
  const [ch] = parseWwwAuthenticate('Bearer realm="https://a/t",service="s",scope="repository:a:pull repository:b:pull"');
  assert.deepEqual(tokenRequestFromChallenge(ch!, ['d']), { realm: 'https://a/t', service: 's', scopes: ['repository:a:pull', 'repository:b:pull'] });
  const [bare] = parseWwwAuthenticate('Bearer realm="https://a/t"');
  assert.deepEqual(tokenRequestFromChallenge(bare!, ['repository:x:pull']), { realm: 'https://a/t', scopes: ['repository:x:pull'] });
  const [none] = parseWwwAuthenticate('Bearer service="s"');
  assert.throws(() => tokenRequestFromChallenge(none!, []), isKind('protocol'));
});
