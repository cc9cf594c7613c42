/**
 * Issue #11, point 6: idle and slowloris connections are closed, and connections are capped per
 * client address and in all — with a 503 rather than running out of file descriptors — while a
 * download may take as long as it keeps moving. Timeouts are configured tiny (1 s) and the tests
 * wait for the server to close the connections, never for time.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { request } from 'node:http';
import { after, afterEach, describe, it } from 'node:test';
import { sha256Digest } from '../../src/domain/digest.js';
import { TURN_AWAY_BACKLOG } from '../../src/http/client-server.js';
import { startHostileUpstream, type HostileUpstream } from '../../src/upstream/testing/hostile-registry.js';
import { metricValue } from '../support/hubcache-process.js';
import { halfSentHead, idleSockets, keptAlive, type HostileSocket } from '../support/hostile-clients.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';

const MiB = 1024 * 1024;
// Generous: on today's code these connections are never closed, and the test must fail, not hang.
const TEST_TIMEOUT = 60_000;

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** Resolves when the server closed the connection. */
  closed: Promise<void>;
}

/**
 * One request on a fresh connection from `localAddress` (127.0.0.x: another client on Linux's
 * loopback), asking to keep it alive: a `Connection: close` in the reply is the server's decision.
 */
function get(url: string, path: string, localAddress = '127.0.0.1'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = request({ host: u.hostname, port: u.port, path, localAddress, agent: false, headers: { connection: 'keep-alive' } }, (res) => {
      const chunks: Buffer[] = [];
      const closed = once(req.socket!, 'close').then(() => {});
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString(), closed }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function metrics(hc: InProcessHubcache): Promise<string> {
  return hc.hub.metrics.registry.metrics();
}

/** Waits for a condition only the server's bookkeeping shows (a connection's close is not an event a test can subscribe to). */
async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10)); // re-check interval, not a wait for a result
  }
}

describe('client connection bounds (issue #11, point 6)', () => {
  let up: HostileUpstream | undefined;
  let hc: InProcessHubcache | undefined;
  const sockets: HostileSocket[] = [];

  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    await hc?.close();
    hc = undefined;
  });
  after(async () => {
    await up?.close();
  });

  async function start(server: Record<string, unknown>): Promise<InProcessHubcache> {
    up ??= await startHostileUpstream();
    hc = await startInProcess({ config: { server }, flags: { 'upstream-url': up.url } });
    return hc;
  }

  it('connections that never send a request and slowloris heads get 408 and are closed after server.headersTimeout; a kept-alive connection after server.keepAliveTimeout', { timeout: TEST_TIMEOUT }, async () => {
    const hc = await start({ headersTimeout: '1s', keepAliveTimeout: '1s' });
    const idle = await idleSockets(hc.url, 200);
    const slow = await Promise.all(Array.from({ length: 20 }, () => halfSentHead(hc.url, '/v2/')));
    sockets.push(...idle, ...slow);
    const served = await keptAlive(hc.url, '/v2/');
    sockets.push(served);
    assert.equal(served.head.status, 200);
    assert.notEqual(served.head.headers.connection, 'close');

    await Promise.all([...idle, ...slow].map((s) => s.closed));
    await served.closed;
    assert.deepEqual(new Set([...idle, ...slow].map((s) => s.status())), new Set([408]));
    const text = await metrics(hc);
    assert.equal(metricValue(text, 'hubcache_http_timeouts_total', { kind: 'headers' }), 220);
    // The kept-alive one's close can reach the client before the server has counted it.
    await until('every connection is closed on the server', async () => metricValue(await metrics(hc), 'hubcache_http_connections') === 0);
  });

  it('a request whose body trickles in (a mirror takes none) is answered and its connection closed, not read to the end', { timeout: TEST_TIMEOUT }, async () => {
    const hc = await start({});
    const s = await halfSentHead(hc.url, '/v2/library/alpine/blobs/uploads/');
    sockets.push(s);
    s.socket.write('Content-Length: 1000000\r\n\r\n{"partial":');
    await s.closed;
    assert.equal(s.status(), 403, 'a push to a mirrored name is refused without reading the body');
    assert.match(s.received().toString('latin1'), /\r\nConnection: close\r\n/i);
  });

  it('beyond server.maxConnectionsPerClient or server.maxConnections a request gets 503 (OCI body, Retry-After, Connection: close); probes are still answered; a freed slot serves again', { timeout: TEST_TIMEOUT }, async () => {
    const hc = await start({ headersTimeout: '30s', maxConnectionsPerClient: 3, maxConnections: 5 });
    sockets.push(...(await idleSockets(hc.url, 3)));

    const overClient = await get(hc.url, '/v2/library/alpine/manifests/latest');
    assert.equal(overClient.status, 503);
    assert.equal(overClient.headers.connection, 'close');
    assert.equal(overClient.headers['retry-after'], '5');
    const doc = JSON.parse(overClient.body) as { errors: Array<{ code: string; message: string }> };
    assert.equal(doc.errors[0]!.code, 'UNAVAILABLE');
    assert.match(doc.errors[0]!.message, /too many connections from this client/);
    await overClient.closed;
    assert.equal(up!.registry.hits.get('library/alpine'), undefined, 'a turned-away request does no work');

    // Another client is served up to the total limit.
    const other = await idleSockets(hc.url, 2, { localAddress: '127.0.0.2' });
    sockets.push(...other);
    const overTotal = await get(hc.url, '/v2/', '127.0.0.3');
    assert.equal(overTotal.status, 503);
    assert.match(overTotal.body, /too many connections to this mirror/);
    const probe = await get(hc.url, '/healthz', '127.0.0.3');
    assert.equal(probe.status, 200, 'a liveness probe must not fail because of the load');
    assert.equal(probe.headers.connection, 'close');
    await probe.closed;

    let text = await metrics(hc);
    assert.equal(metricValue(text, 'hubcache_http_connections_rejected_total', { reason: 'client_limit' }), 1);
    assert.equal(metricValue(text, 'hubcache_http_connections_rejected_total', { reason: 'total_limit' }), 2);
    assert.equal(metricValue(text, 'hubcache_http_connections'), 5);
    assert.ok(hc.logs.some((l) => l.message === 'client connections turned away' && l.reason === 'client_limit' && l.limit === 3));

    // Closing connections frees their slots.
    other[0]!.destroy();
    sockets[0]!.destroy();
    await until('two connections are closed on the server', async () => metricValue(await metrics(hc), 'hubcache_http_connections') === 3);
    assert.equal((await get(hc.url, '/v2/')).status, 200);
    assert.equal((await get(hc.url, '/v2/', '127.0.0.3')).status, 200);
  });

  it('a flood of connections from one client: the turn-away backlog is bounded, the rest closed at once; other clients are served', { timeout: TEST_TIMEOUT }, async () => {
    const hc = await start({ headersTimeout: '1s', maxConnectionsPerClient: 1 });
    const flood = await idleSockets(hc.url, TURN_AWAY_BACKLOG + 72);
    sockets.push(...flood);
    assert.equal((await get(hc.url, '/v2/', '127.0.0.2')).status, 200);
    await Promise.all(flood.map((s) => s.closed));
    const text = await metrics(hc);
    // One at a time is accepted (then closed by the headers timeout); every other one is turned
    // away. Usually that is the first one only; on a loaded machine opening the flood may outlast
    // the 1 s timeout, and the slot freed by it takes one more — still one at a time.
    const rejected = metricValue(text, 'hubcache_http_connections_rejected_total', { reason: 'client_limit' });
    const timedOut = metricValue(text, 'hubcache_http_timeouts_total', { kind: 'headers' });
    assert.ok(timedOut >= 1, `at least the first connection was accepted and timed out (${timedOut})`);
    assert.equal(rejected + timedOut, TURN_AWAY_BACKLOG + 72, 'every connection was either accepted alone or turned away');
    assert.equal(metricValue(text, 'hubcache_http_connections'), 0);
  });

  it('a download may take longer than every timeout as long as it moves: an upstream that pauses mid-blob does not count as the client stalling', { timeout: TEST_TIMEOUT }, async () => {
    const blob = Buffer.alloc(8 * MiB, 0x5a);
    const digest = sha256Digest(blob);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await up?.close();
    up = await startHostileUpstream((r) =>
      r.behave('gated/', async ({ what, res, req }) => {
        if (what !== 'blobs') return false;
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.length, 'docker-content-digest': digest });
        if (req.method === 'HEAD') return void res.end();
        res.write(blob.subarray(0, blob.length / 2));
        await gate;
        res.end(blob.subarray(blob.length / 2));
      }),
    );
    const hc = await start({ headersTimeout: '1s', keepAliveTimeout: '1s', sendTimeout: '1s' });
    const download = fetch(`${hc.url}/v2/gated/app/blobs/${digest}`).then(async (res) => ({ status: res.status, body: Buffer.from(await res.arrayBuffer()) }));
    // The send timeout passed with nothing waiting for the client: hubcache was the slow side.
    await hc.waitForLog((l) => l.message === 'client connection quiet with nothing to send: kept open');
    release();
    const { status, body } = await download;
    assert.equal(status, 200);
    assert.equal(sha256Digest(body), digest);
    assert.equal(metricValue(await metrics(hc), 'hubcache_http_timeouts_total', { kind: 'send' }), 0);
  });
});
