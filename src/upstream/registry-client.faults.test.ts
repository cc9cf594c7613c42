import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { MediaTypes } from '../domain/media-types.js';
import type { Reference, RepoName, Tag } from '../domain/reference.js';
import { RegistryUpstream, type RegistryUpstreamOptions } from './registry-client.js';
import { FakeRegistry, LoopbackServer } from './testing/fake-registry.js';
import { UpstreamError, type UpstreamObserver } from './upstream.js';

const repo = 'library/alpine' as RepoName;
const ref: Reference = { kind: 'tag', tag: '3.20' as Tag };
const manifest = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: {}, layers: [] };
const isKind = (kind: string) => (e: unknown) => e instanceof UpstreamError && e.kind === kind;

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(cleanup.splice(0).map((f) => f()));
});

async function start(handler: Parameters<typeof LoopbackServer.start>[0]): Promise<LoopbackServer> {
  const s = await LoopbackServer.start(handler);
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
    ...opts,
  });
  cleanup.push(() => c.close());
  return c;
}

function recorder(): { observer: UpstreamObserver; requests: Array<string | number>; retries: string[] } {
  const requests: Array<string | number> = [];
  const retries: string[] = [];
  return { requests, retries, observer: { request: (e) => requests.push(e.status), retry: (_u, kind) => retries.push(kind) } };
}

/** A registry whose first `n` requests get `status`. */
async function failingFirst(n: number, status: number, headers: Record<string, string> = {}): Promise<LoopbackServer> {
  const reg = new FakeRegistry();
  reg.putManifest(repo, '3.20', manifest, MediaTypes.ociManifest);
  let left = n;
  reg.hook = (_req, res) => {
    if (left-- <= 0) return false;
    res.writeHead(status, { 'content-type': 'application/json', ...headers }).end('{"errors":[{"code":"TOOMANYREQUESTS"}]}');
    return true;
  };
  return start(reg.handle);
}

test('5xx is retried with backoff and then succeeds', async () => {
  const srv = await failingFirst(2, 503);
  const rec = recorder();
  const m = await client(srv.url, { observer: rec.observer }).getManifest(repo, ref);
  assert.equal(m.body.toString(), JSON.stringify(manifest));
  assert.deepEqual(rec.requests, [503, 503, 200]);
  assert.deepEqual(rec.retries, ['manifest', 'manifest']);
});

test('5xx on every attempt: unavailable after `attempts` requests', async () => {
  const srv = await failingFirst(10, 502);
  await assert.rejects(client(srv.url, { retries: { attempts: 4, baseDelayMs: 0 } }).headManifest(repo, ref), isKind('unavailable'));
  assert.equal(srv.count(), 4);
});

test('connection refused: unavailable after N attempts', async () => {
  const dead = await LoopbackServer.start(() => {});
  const url = dead.url;
  await dead.close();
  const rec = recorder();
  await assert.rejects(client(url, { observer: rec.observer }).getManifest(repo, ref), (e: unknown) => isKind('unavailable')(e) && /ECONNREFUSED/.test((e as Error).message));
  assert.deepEqual(rec.requests, ['error', 'error', 'error']);
});

test('429 is never retried and carries the rate-limit headers for the client', async () => {
  const headers = { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '0;w=21600', 'docker-ratelimit-source': '192.0.2.9', 'retry-after': '3600' };
  const srv = await failingFirst(5, 429, headers);
  const c = client(srv.url);
  await assert.rejects(c.getManifest(repo, ref), (e: unknown) => {
    assert.ok(isKind('rate-limited')(e));
    assert.deepEqual((e as UpstreamError).headers, headers);
    assert.equal((e as UpstreamError).status, 429);
    return true;
  });
  assert.equal(srv.count(), 1);
  assert.equal(c.rateLimit()?.remaining, 0);
});

test('statuses map to kinds: 403 denied, 400 protocol, 404 not-found — none retried, sockets reused', async () => {
  const reg = new FakeRegistry();
  reg.hook = (req, res) => {
    const status = Number(/\/manifests\/s(\d{3})$/.exec(req.url ?? '')?.[1]);
    if (!status) return false;
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'X', message: 'x'.repeat(5000) }] }));
    return true;
  };
  const srv = await start(reg.handle);
  const c = client(srv.url);
  const t = (s: string): Reference => ({ kind: 'tag', tag: s as Tag });
  await assert.rejects(c.getManifest(repo, t('s403')), isKind('denied'));
  await assert.rejects(c.getManifest(repo, t('s400')), isKind('protocol'));
  for (let i = 0; i < 5; i++) await assert.rejects(c.getManifest(repo, t('s404')), isKind('not-found'));
  assert.equal(srv.count(), 7);
  // undici may open a second socket while the first is being released; an unconsumed body
  // would instead pin each socket and cost one connection per request.
  assert.ok(srv.connections <= 2, `error bodies are consumed so connections are reused (${srv.connections} for 7 requests)`);
});

// undici's timers have a coarse resolution (about 1 s), so these two take about a second each.
test('a server that never answers: headers timeout → unavailable, retried', async () => {
  const srv = await start(() => {}); // accepts, never responds
  const c = client(srv.url, { timeouts: { connectMs: 1000, headersMs: 100, bodyIdleMs: 100 }, retries: { attempts: 2, baseDelayMs: 0 } });
  await assert.rejects(c.getManifest(repo, ref), (e: unknown) => isKind('unavailable')(e) && /HEADERS_TIMEOUT/.test((e as Error).message));
  assert.equal(srv.count(), 2);
});

test('a stalled body: body idle timeout → unavailable', async () => {
  const srv = await start((_req, res) => {
    res.writeHead(200, { 'content-type': MediaTypes.ociManifest, 'content-length': 100 });
    res.write('{'); // and nothing more
  });
  const c = client(srv.url, { timeouts: { connectMs: 1000, headersMs: 1000, bodyIdleMs: 100 }, retries: { attempts: 1, baseDelayMs: 0 } });
  await assert.rejects(c.getManifest(repo, ref), (e: unknown) => isKind('unavailable')(e) && /BODY_TIMEOUT/.test((e as Error).message));
});

test('an abort stops a request at once, with the abort reason, and is not retried', async () => {
  const srv = await start(() => {});
  const c = client(srv.url, { timeouts: { connectMs: 1000, headersMs: 60_000, bodyIdleMs: 60_000 } });
  const ac = new AbortController();
  const p = c.getManifest(repo, ref, ac.signal);
  await srv.waitForRequests(1);
  const started = performance.now();
  ac.abort();
  await assert.rejects(p, (e: Error) => e.name === 'AbortError');
  assert.ok(performance.now() - started < 1000);
  assert.equal(srv.count(), 1);
});

test('an abort while waiting for a concurrency slot gives up without sending', async () => {
  const srv = await start(() => {});
  const c = client(srv.url, { maxConcurrency: 1, timeouts: { connectMs: 1000, headersMs: 60_000, bodyIdleMs: 60_000 } });
  const first = new AbortController();
  const second = new AbortController();
  const p1 = c.getManifest(repo, ref, first.signal);
  const p2 = c.getManifest(repo, ref, second.signal);
  await srv.waitForRequests(1);
  second.abort();
  await assert.rejects(p2, (e: Error) => e.name === 'AbortError');
  first.abort();
  await assert.rejects(p1, (e: Error) => e.name === 'AbortError');
  assert.equal(srv.count(), 1, 'the queued request was never sent');
});

/** A body that never completes: one byte every `ms`, so the idle timeout never fires. */
function trickling(ms: number) {
  const closed: Promise<void>[] = [];
  const handler = (_req: unknown, res: import('node:http').ServerResponse) => {
    res.writeHead(200, { 'content-type': MediaTypes.ociManifest, 'content-length': 1_000_000 });
    const timer = setInterval(() => res.write(' '), ms);
    closed.push(new Promise<void>((r) => res.on('close', () => (clearInterval(timer), r()))));
  };
  return { handler, closed };
}

test('a body trickling in forever ends at the total deadline: unavailable, not retried, the connection closed', async () => {
  const t = trickling(20);
  const srv = await start(t.handler);
  const c = client(srv.url, { timeouts: { connectMs: 1000, headersMs: 1000, bodyIdleMs: 1000, requestMs: 300 } });
  await assert.rejects(c.getManifest(repo, ref), (e: unknown) => isKind('unavailable')(e) && /no complete answer within 300 ms/.test((e as Error).message));
  assert.equal(srv.count(), 1, 'the deadline covers the retries too');
  await Promise.all(t.closed);
  await assert.rejects(c.headManifest(repo, ref), isKind('unavailable'));
});

test('the deadline bounds a tag list and a ping too; a caller abort still wins with its own reason', async () => {
  const t = trickling(20);
  const srv = await start(t.handler);
  const c = client(srv.url, { timeouts: { connectMs: 1000, headersMs: 1000, bodyIdleMs: 1000, requestMs: 300 } });
  await assert.rejects(c.listTags(repo), isKind('unavailable'));
  const ac = new AbortController();
  const p = c.getManifest(repo, ref, ac.signal);
  await srv.waitForRequests(2);
  ac.abort(new Error('client left'));
  await assert.rejects(p, /client left/);
  await Promise.all(t.closed);
});
