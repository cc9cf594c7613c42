/**
 * What an operator relies on, against a real hubcache process and the fake Docker Hub: JSON log
 * lines (one access line per request, structured cache and upstream events, request ids from
 * `X-Request-Id`), the log level and the terminal format; /healthz and /readyz (independent of the
 * upstream, 503 when shutdown began; 200 "degraded" while the store can't be written); graceful shutdown on
 * SIGTERM/SIGINT that finishes in-flight downloads and fills, and a deadline that doesn't wait
 * for the ones that can't finish.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, it } from 'node:test';
import { startHubcacheProcess, type HubcacheProcess } from '../support/hubcache-process.js';
import { digestOf, makeImage, MediaTypes, type TestImage } from '../support/images.js';
import { rawRequest, type RawResponse } from '../support/raw-http.js';
import { startUpstream, type Upstream } from '../support/upstream-harness.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const ACCEPT = [MediaTypes.dockerManifest, MediaTypes.dockerManifestList, MediaTypes.ociManifest, MediaTypes.ociIndex].join(', ');
const BIN = fileURLToPath(new URL('../../bin/hubcache.js', import.meta.url));
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
type LogLine = Record<string, unknown>;

let up: Upstream;
let upstreamDown = false;
const images: TestImage[] = [];

/** Takes the fake Docker Hub off the network (connection refused) until `upstreamBack()`. */
async function upstreamOff(): Promise<void> {
  await up.front.down();
  upstreamDown = true;
}

async function upstreamBack(): Promise<void> {
  if (upstreamDown) await up.front.up();
  upstreamDown = false;
}

const dirs: string[] = [];

function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), `hubcache-e2e-ops-${prefix}-`));
  dirs.push(d);
  return d;
}

/** Pushes a one-layer image as `repo:v1`. */
async function seeded(repo: string, seed: string, layerSize = 256 * KiB): Promise<TestImage> {
  const img = await makeImage('oci', { seed, layerSize, layers: 1, filesPerLayer: 1 });
  images.push(img);
  await up.push(img, repo, 'v1');
  return img;
}

function get(url: string, headers: Record<string, string> = {}): Promise<RawResponse> {
  return rawRequest(url, { headers, timeoutMs: 60_000 });
}

/** The access-log line of the request with this id (waits for it: it is written when the response closes). */
function accessLine(hc: HubcacheProcess, requestId: string): Promise<LogLine> {
  return hc.waitForLog((l) => l.message === 'request' && l.requestId === requestId);
}

function committedBlobs(storagePath: string): string[] {
  const root = join(storagePath, 'blobs', 'sha256');
  try {
    return readdirSync(root).flatMap((d) => readdirSync(join(root, d)).map((f) => `sha256:${f}`));
  } catch {
    return [];
  }
}

function tmpFiles(storagePath: string): string[] {
  try {
    return readdirSync(join(storagePath, 'tmp')).map(String);
  } catch {
    return [];
  }
}

/**
 * A request whose head is sent except for the final empty line: the connection is already busy
 * (not idle), so it survives the start of a shutdown, which is how a probe that arrives just as
 * SIGTERM lands looks to the server. `finish()` sends the rest and reads the response until the
 * server closes the connection.
 */
async function halfSentRequest(url: string, path: string): Promise<{ finish(): Promise<{ status: number; headers: string; body: string }> }> {
  const u = new URL(url);
  const socket = connect(Number(u.port), u.hostname);
  await once(socket, 'connect');
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  const ended = once(socket, 'close');
  socket.write(`GET ${path} HTTP/1.1\r\nHost: ${u.host}\r\n`); // HTTP/1.1: keep-alive unless the server says otherwise
  return {
    finish: async () => {
      socket.write('\r\n');
      await ended;
      const text = Buffer.concat(chunks).toString();
      const split = text.indexOf('\r\n\r\n');
      const head = text.slice(0, split);
      return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), headers: head, body: text.slice(split + 4) };
    },
  };
}

interface Download {
  /** Resolves when the first body bytes arrived. */
  readonly firstBytes: Promise<void>;
  readonly done: Promise<{ status: number; body: Buffer; outcome: 'complete' | 'error'; error?: Error; endedAt: number }>;
}

/**
 * A GET with Node's fetch (undici): a keep-alive connection, like docker's and containerd's, which
 * outlives the response unless the server ends it. A body cut short is `outcome: 'error'`.
 */
function keepAliveDownload(url: string, headers: Record<string, string> = {}): Download {
  let gotBytes!: () => void;
  const firstBytes = new Promise<void>((r) => (gotBytes = r));
  const done = (async () => {
    const res = await fetch(url, { headers });
    const chunks: Buffer[] = [];
    try {
      for await (const c of res.body as AsyncIterable<Uint8Array>) {
        chunks.push(Buffer.from(c));
        gotBytes();
      }
      return { status: res.status, body: Buffer.concat(chunks), outcome: 'complete' as const, endedAt: performance.now() };
    } catch (error) {
      return { status: res.status, body: Buffer.concat(chunks), outcome: 'error' as const, error: error as Error, endedAt: performance.now() };
    }
  })();
  return { firstBytes, done };
}

/** A free loopback port (for processes whose log level hides the "hubcache started" line). */
async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address() as { port: number };
  srv.close();
  await once(srv, 'close');
  return port;
}

/** A hubcache started with exactly these flags, its stdout kept as raw lines (any format). */
interface RawProcess {
  readonly child: ChildProcess;
  readonly lines: string[];
  waitForLine(pred: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  stop(): Promise<number | null>;
}

function spawnRaw(args: string[]): RawProcess {
  const child = spawn(process.execPath, [BIN, 'serve', ...args], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const waiters = new Set<(l: string) => void>();
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  createInterface({ input: child.stdout! }).on('line', (l) => {
    lines.push(l);
    for (const w of [...waiters]) w(l);
  });
  const exited = once(child, 'exit');
  return {
    child,
    lines,
    waitForLine: (pred, timeoutMs = 20_000) => {
      const found = lines.find(pred);
      if (found !== undefined) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => (waiters.delete(check), reject(new Error(`no matching line within ${timeoutMs} ms; stdout:\n${lines.join('\n')}\nstderr: ${stderr}`))), timeoutMs);
        const check = (l: string) => {
          if (!pred(l)) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(l);
        };
        waiters.add(check);
      });
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return (await exited)[0] as number | null;
    },
  };
}

/** Resolves once `url` accepts connections: the readiness check of a process that logs nothing at start. */
async function listening(url: string, child: ChildProcess, timeoutMs = 20_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  const u = new URL(url);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`hubcache exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(Number(u.port), u.hostname);
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => (s.destroy(), resolve(false)));
    });
    if (ok) return;
    if (performance.now() > deadline) throw new Error(`${url} not listening within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25)); // back-off between connection attempts, not a wait for a result
  }
}

before(async () => {
  up = await startUpstream({ rateLimit: { limit: 100, source: '203.0.113.7' } });
});
after(async () => {
  await up?.close();
  for (const i of images) i.dispose();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('logs: JSON lines, one access line per request, structured events, request ids', () => {
  let hc: HubcacheProcess;
  let img: TestImage;
  const id = (name: string) => `e2e-ops.${name}-${Math.random().toString(36).slice(2, 8)}`;

  before(async () => {
    img = await seeded('library/logged', 'ops-logs');
    // TTL 0: every pull by tag revalidates, so an upstream outage is met (and answered stale).
    hc = await startHubcacheProcess({ upstream: up, args: ['--tag-ttl', '0s'] });
  });
  afterEach(async () => {
    up.front.clearFaults();
    await upstreamBack();
  });
  after(async () => {
    await hc?.close();
  });

  it('a manifest miss, a blob miss and a blob hit: one access line each with id, method, route, status, bytes, duration, cache outcome, upstream; the id is echoed', async () => {
    const ids = { manifest: id('manifest'), miss: id('blob-miss'), hit: id('blob-hit') };
    const layer = img.layers[0]!;
    const manifest = await get(`${hc.url}/v2/library/logged/manifests/v1`, { accept: ACCEPT, 'x-request-id': ids.manifest });
    assert.equal(manifest.status, 200);
    assert.equal(manifest.headers['x-request-id'], ids.manifest, 'a valid incoming id is echoed');
    const miss = await get(`${hc.url}/v2/library/logged/blobs/${layer.digest}`, { 'x-request-id': ids.miss });
    assert.equal(digestOf(miss.body), layer.digest);
    const hit = await get(`${hc.url}/v2/library/logged/blobs/${layer.digest}`, { 'x-request-id': ids.hit });
    assert.equal(hit.headers['x-hubcache-cache'], 'hit');
    assert.equal(hit.headers['x-request-id'], ids.hit);

    const m = await accessLine(hc, ids.manifest);
    assert.equal(m.level, 'info');
    assert.equal(m.service, 'hubcache');
    assert.ok(!Number.isNaN(Date.parse(String(m.timestamp))), 'ISO timestamp');
    assert.deepEqual(
      { method: m.method, route: m.route, status: m.status, bytes: m.bytes, cache: m.cache, upstream: m.upstream, path: m.path },
      { method: 'GET', route: 'manifest', status: 200, bytes: img.manifest.length, cache: 'miss', upstream: 'docker.io', path: '/v2/library/logged/manifests/v1' },
    );
    assert.equal(typeof m.ms, 'number');
    assert.ok((m.ms as number) >= 0);

    const b = await accessLine(hc, ids.miss);
    assert.deepEqual({ route: b.route, status: b.status, bytes: b.bytes, cache: b.cache, upstream: b.upstream }, { route: 'blob', status: 200, bytes: layer.size, cache: 'miss', upstream: 'docker.io' });
    const h = await accessLine(hc, ids.hit);
    assert.deepEqual({ route: h.route, status: h.status, bytes: h.bytes, cache: h.cache }, { route: 'blob', status: 200, bytes: layer.size, cache: 'hit' });

    // The fill is the cache's, but it carries the id of the request that started it.
    const started = await hc.waitForLog((l) => l.message === 'fill started' && l.digest === layer.digest);
    const committed = await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === layer.digest);
    assert.equal(started.requestId, ids.miss);
    assert.equal(committed.requestId, ids.miss);
    assert.deepEqual({ upstream: started.upstream, repository: started.repository, size: started.size }, { upstream: 'docker.io', repository: 'library/logged', size: layer.size });
    assert.deepEqual({ level: committed.level, bytes: committed.bytes, resumes: committed.resumes }, { level: 'info', bytes: layer.size, resumes: 0 });
    assert.equal(typeof committed.ms, 'number');

    // Exactly one access line per request (a later request's line is out, so all of these are).
    await accessLine(hc, (await get(`${hc.url}/v2/`, { 'x-request-id': ids.hit + '.after' })).headers['x-request-id'] as string);
    for (const rid of Object.values(ids)) assert.equal(hc.logs.filter((l) => l.message === 'request' && l.requestId === rid).length, 1, rid);
  });

  it('X-Request-Id: generated (a UUID) when absent or invalid, returned, and used in that request’s log line', async () => {
    const absent = await get(`${hc.url}/v2/`);
    const generated = String(absent.headers['x-request-id']);
    assert.match(generated, UUID_RE);
    assert.equal((await accessLine(hc, generated)).route, 'base');

    for (const bad of ['has spaces in it', 'x'.repeat(129), 'semi;colon', '']) {
      const r = await get(`${hc.url}/v2/`, { 'x-request-id': bad });
      const rid = String(r.headers['x-request-id']);
      assert.notEqual(rid, bad);
      assert.match(rid, UUID_RE, `invalid id ${JSON.stringify(bad)} replaced`);
      assert.equal((await accessLine(hc, rid)).status, 200);
    }
    const longest = 'a'.repeat(128);
    assert.equal((await get(`${hc.url}/v2/`, { 'x-request-id': longest })).headers['x-request-id'], longest, '128 characters is still valid');
  });

  it('upstream events: token fetched, rate limit seen (with the source address), stale served with the id of the request it answered', async () => {
    const token = await hc.waitForLog((l) => l.message === 'token fetched');
    assert.deepEqual({ level: token.level, upstream: token.upstream, ok: token.ok }, { level: 'debug', upstream: 'docker.io', ok: true });
    const rl = await hc.waitForLog((l) => l.message === 'rate limit seen');
    assert.equal(rl.level, 'info', 'the first sighting of a rate-limit source is logged at info');
    assert.deepEqual({ upstream: rl.upstream, limit: rl.limit, windowSeconds: rl.windowSeconds, source: rl.source }, { upstream: 'docker.io', limit: 100, windowSeconds: 21600, source: '203.0.113.7' });
    assert.equal(typeof rl.remaining, 'number');

    await upstreamOff();
    const rid = id('stale');
    const r = await get(`${hc.url}/v2/library/logged/manifests/v1`, { accept: ACCEPT, 'x-request-id': rid });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-hubcache-cache'], 'stale');
    const stale = await hc.waitForLog((l) => l.message === 'stale served' && l.requestId === rid);
    assert.deepEqual(
      { level: stale.level, upstream: stale.upstream, repository: stale.repository, tag: stale.tag, digest: stale.digest, reason: stale.reason },
      { level: 'warn', upstream: 'docker.io', repository: 'library/logged', tag: 'v1', digest: img.digest, reason: 'unavailable' },
    );
    const line = await accessLine(hc, rid);
    assert.deepEqual({ status: line.status, cache: line.cache, stale: line.stale }, { status: 200, cache: 'stale', stale: 'unavailable' });
  });

  it('a failed fill is logged as one event with a reason and the starting request’s id', async () => {
    const bad = await seeded('library/logged-bad', 'ops-logs-bad');
    const layer = bad.layers[0]!;
    up.front.inject({ type: 'wrongBytes', times: 1, when: { kind: 'blob', digest: layer.digest } });
    const rid = id('fill-failed');
    const r = await get(`${hc.url}/v2/library/logged-bad/blobs/${layer.digest}`, { 'x-request-id': rid });
    assert.equal(r.outcome, 'error');
    const failed = await hc.waitForLog((l) => l.message === 'fill failed' && l.digest === layer.digest);
    assert.deepEqual({ level: failed.level, reason: failed.reason, requestId: failed.requestId, expected: failed.expected }, { level: 'warn', reason: 'digest_mismatch', requestId: rid, expected: layer.size });
    const line = await accessLine(hc, rid);
    assert.equal(line.aborted, true);
    assert.equal(line.level, 'warn');
  });

  it('every line is JSON with level, timestamp and a constant message (values are in fields, never in the message)', () => {
    assert.ok(hc.logs.length > 10);
    for (const l of hc.logs) {
      assert.ok(['error', 'warn', 'info', 'debug'].includes(String(l.level)), `not a JSON log line: ${JSON.stringify(l)}`);
      assert.ok(!Number.isNaN(Date.parse(String(l.timestamp))));
      assert.match(String(l.message), /^[a-z][a-z ,]*$/, `message with a value in it: ${JSON.stringify(l)}`);
    }
    const messages = new Set(hc.logs.map((l) => l.message));
    for (const m of ['hubcache started', 'storage opened', 'store scanned', 'request', 'fill started', 'fill committed', 'fill failed', 'token fetched', 'rate limit seen', 'stale served']) assert.ok(messages.has(m), m);
  });
});

describe('log level and format', () => {
  let img: TestImage;
  before(async () => {
    img = await seeded('library/formats', 'ops-formats');
  });

  it('--log-level warn: no info lines (no access lines of successful requests), warnings and failed requests still logged', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const p = spawnRaw(['--listen', `127.0.0.1:${port}`, '--storage-path', tempDir('warn'), '--upstream-url', up.url, '--upstream-allowed-realm-hosts', up.realmOrigin, '--log-level', 'warn', '--tag-ttl', '0s']);
    try {
      await listening(url, p.child);
      assert.equal((await get(`${url}/v2/library/formats/manifests/v1`, { accept: ACCEPT, 'x-request-id': 'warn-ok' })).status, 200);
      assert.equal((await get(`${url}/v2/library/formats/blobs/${img.layers[0]!.digest}`, { 'x-request-id': 'warn-blob' })).status, 200);
      await upstreamOff();
      try {
        const stale = await get(`${url}/v2/library/formats/manifests/v1`, { accept: ACCEPT, 'x-request-id': 'warn-stale' });
        assert.equal(stale.headers['x-hubcache-cache'], 'stale');
        const failed = await get(`${url}/v2/library/formats/manifests/nope`, { accept: ACCEPT, 'x-request-id': 'warn-503' });
        assert.equal(failed.status, 503);
      } finally {
        await upstreamBack();
      }
      const line503 = JSON.parse(await p.waitForLine((l) => l.includes('"warn-503"') && l.includes('"message":"request"'))) as LogLine;
      assert.deepEqual({ level: line503.level, status: line503.status }, { level: 'warn', status: 503 });
      const parsed = p.lines.map((l) => JSON.parse(l) as LogLine);
      assert.ok(parsed.some((l) => l.message === 'stale served' && l.requestId === 'warn-stale'));
      assert.deepEqual(parsed.filter((l) => l.level === 'info' || l.level === 'debug'), [], 'nothing below warn');
      assert.ok(!parsed.some((l) => l.requestId === 'warn-ok' || l.requestId === 'warn-blob'), 'no access line for successful requests');
    } finally {
      assert.equal(await p.stop(), 0);
    }
  });

  it('--log-format pretty: one readable line per event, "HH:MM:SS.mmm level message key=value…", no JSON, no empty fields', async () => {
    const p = spawnRaw(['--listen', '127.0.0.1:0', '--storage-path', tempDir('pretty'), '--upstream-url', up.url, '--upstream-allowed-realm-hosts', up.realmOrigin, '--log-format', 'pretty', '--log-level', 'info']);
    try {
      const started = await p.waitForLine((l) => l.includes(' hubcache started '));
      const url = /\blisten=(\S+)/.exec(started)?.[1];
      assert.ok(url, started);
      const r = await get(`${url}/v2/`, { 'x-request-id': 'pretty-1' });
      assert.equal(r.status, 200);
      const access = await p.waitForLine((l) => l.includes('requestId=pretty-1'));
      assert.match(access, /^\d{2}:\d{2}:\d{2}\.\d{3} info request /);
      for (const field of ['requestId=pretty-1', 'method=GET', 'route=base', 'status=200', 'bytes=2', 'path=/v2/']) assert.ok(access.split(' ').includes(field), `${field} in ${access}`);
      assert.match(access, / ms=\d+/);
      const blob = img.layers[0]!;
      await get(`${url}/v2/library/formats/blobs/${blob.digest}`, { 'x-request-id': 'pretty-2' });
      const committed = await p.waitForLine((l) => l.includes(' fill committed '));
      assert.match(committed, new RegExp(`^\\d{2}:\\d{2}:\\d{2}\\.\\d{3} info fill committed .*digest=${blob.digest}`));
      assert.ok(committed.includes(` bytes=${blob.size}`));
      for (const line of p.lines) {
        // stdout is a pipe here: colours are for terminals only.
        // eslint-disable-next-line no-control-regex
        assert.doesNotMatch(line, /\x1b\[/, `escape codes although stdout is not a terminal: ${JSON.stringify(line)}`);
        assert.match(line, /^\d{2}:\d{2}:\d{2}\.\d{3} (error|warn|info|debug) [a-z][a-z ,]*( [A-Za-z]+=\S.*)?$/, line);
        assert.ok(!line.trimStart().startsWith('{'), `JSON in pretty mode: ${line}`);
        assert.ok(!/=undefined\b/.test(line), `empty field printed: ${line}`);
        assert.ok(!line.includes('service='), 'the constant service field is left out');
      }
    } finally {
      assert.equal(await p.stop(), 0);
    }
  });
});

describe('/healthz and /readyz', () => {
  let hc: HubcacheProcess;
  before(async () => {
    hc = await startHubcacheProcess({ upstream: up });
  });
  afterEach(async () => {
    await upstreamBack();
  });
  after(async () => {
    await hc?.close();
  });

  it('both 200 with the upstream down: readiness is about this process, not Docker Hub', async () => {
    await upstreamOff();
    const health = await get(`${hc.url}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(JSON.parse(health.body.toString()), { status: 'ok' });
    const ready = await get(`${hc.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(JSON.parse(ready.body.toString()), { status: 'ready', checks: { config: true, accepting: true, storeReadable: true, storeWritable: true } });
  });

  it('/readyz stays 200 but says "degraded" while the store cannot be written (cached content is still served), and "ready" again once it can, with no restart', async () => {
    // Root ignores permission bits, so break the store the way a bad volume does: tmp/ (where every
    // write starts) is not a directory.
    const tmp = join(hc.storagePath, 'tmp');
    rmSync(tmp, { recursive: true, force: true });
    writeFileSync(tmp, 'not a directory');
    try {
      // The only replica must stay in its Service: a full disk is no reason to stop serving the cache.
      const ready = await get(`${hc.url}/readyz`, { 'x-request-id': 'readyz-unwritable' });
      assert.equal(ready.status, 200);
      assert.match(String(ready.headers['content-type']), /^application\/json/);
      assert.deepEqual(JSON.parse(ready.body.toString()), { status: 'degraded', checks: { config: true, accepting: true, storeReadable: true, storeWritable: false } });
      assert.match((await get(`${hc.url}/metrics`)).body.toString(), /^hubcache_store_writable 0$/m);
      assert.equal((await get(`${hc.url}/healthz`)).status, 200);
    } finally {
      rmSync(tmp, { force: true });
    }
    const again = await get(`${hc.url}/readyz`);
    assert.equal(again.status, 200);
    assert.equal(JSON.parse(again.body.toString()).status, 'ready');
    assert.equal(JSON.parse(again.body.toString()).checks.storeWritable, true);
    assert.match((await get(`${hc.url}/metrics`)).body.toString(), /^hubcache_store_writable 1$/m);
  });

  it('successful probes and scrapes stay out of the access log', async () => {
    for (const [path, rid] of [['/healthz', 'quiet-healthz'], ['/readyz', 'quiet-readyz'], ['/metrics', 'quiet-metrics']] as const) {
      const r = await get(`${hc.url}${path}`, { 'x-request-id': rid });
      assert.equal(r.status, 200, path);
      assert.equal(r.headers['x-request-id'], rid);
    }
    await accessLine(hc, (await get(`${hc.url}/v2/`, { 'x-request-id': 'quiet-marker' })).headers['x-request-id'] as string);
    assert.deepEqual(hc.logs.filter((l) => String(l.requestId ?? '').startsWith('quiet-h') || l.requestId === 'quiet-readyz' || l.requestId === 'quiet-metrics'), []);
  });
});

describe('graceful shutdown', () => {
  afterEach(() => up.front.clearFaults());

  it('SIGTERM mid-download: new connections refused, readiness 503, the download and its fill finish, exit 0 "drained"; a restart serves the blob with no upstream request', async () => {
    const img = await seeded('library/draining', 'ops-drain', 4 * MiB);
    const layer = img.layers[0]!;
    const storagePath = tempDir('drain');
    const hc = await startHubcacheProcess({ upstream: up, storagePath, args: ['--shutdown-timeout', '20s'] });
    try {
      const exit = once(hc.child, 'exit');
      const probe = await halfSentRequest(hc.url, '/readyz');
      const stall = up.front.inject({ type: 'stall', afterBytes: MiB, times: 1, when: { kind: 'blob', digest: layer.digest } });
      const download = keepAliveDownload(`${hc.url}/v2/library/draining/blobs/${layer.digest}`, { 'x-request-id': 'drain-download' });
      await stall.hit();
      await download.firstBytes;

      hc.child.kill('SIGTERM');
      const shutting = await hc.waitForLog((l) => l.message === 'shutting down');
      assert.deepEqual({ deadlineMs: shutting.deadlineMs, fillsInFlight: shutting.fillsInFlight }, { deadlineMs: 20_000, fillsInFlight: 1 });
      assert.equal((await hc.waitForLog((l) => l.message === 'signal received')).signal, 'SIGTERM');

      const ready = await probe.finish();
      assert.equal(ready.status, 503, 'readiness fails as soon as shutdown begins');
      assert.match(ready.headers, /^connection: close$/im, 'and the connection is not kept alive');
      assert.deepEqual(JSON.parse(ready.body), { status: 'not ready', checks: { config: true, accepting: false, storeReadable: true, storeWritable: true } });
      const refused = await rawRequest(`${hc.url}/v2/`, { timeoutMs: 10_000 });
      assert.equal(refused.errorCode, 'ECONNREFUSED', 'no new connections');

      assert.equal(hc.child.exitCode, null, 'still running: a download is in flight');
      stall.clear();
      const r = await download.done;
      assert.equal(r.status, 200);
      assert.equal(r.outcome, 'complete');
      assert.equal(r.body.length, layer.size);
      assert.equal(digestOf(r.body), layer.digest);

      const [code] = await exit;
      assert.equal(code, 0);
      const stopped = await hc.waitForLog((l) => l.message === 'hubcache stopped');
      assert.equal(stopped.outcome, 'drained');
      const committed = hc.logs.findIndex((l) => l.message === 'fill committed' && l.digest === layer.digest);
      assert.ok(committed >= 0 && committed < hc.logs.indexOf(stopped), 'the fill was committed before the process stopped');
      assert.ok(!hc.logs.some((l) => l.message === 'shutdown deadline reached, closing remaining connections'));
      assert.equal((await accessLine(hc, 'drain-download')).status, 200);
    } finally {
      await hc.close();
    }
    assert.ok(committedBlobs(storagePath).includes(layer.digest));
    assert.deepEqual(tmpFiles(storagePath), []);

    const again = await startHubcacheProcess({ upstream: up, storagePath });
    try {
      up.front.reset();
      const r = await get(`${again.url}/v2/library/draining/blobs/${layer.digest}`);
      assert.equal(r.headers['x-hubcache-cache'], 'hit');
      assert.equal(digestOf(r.body), layer.digest);
      assert.equal(up.front.requests.length, 0, up.front.dump());
    } finally {
      await again.close();
    }
  });

  it('a download that cannot finish before --shutdown-timeout: exit after the deadline, the client is aborted, nothing partial is committed, tmp is swept at the next start', async () => {
    const img = await seeded('library/stuck', 'ops-stuck', 4 * MiB);
    const layer = img.layers[0]!;
    const storagePath = tempDir('deadline');
    const hc = await startHubcacheProcess({ upstream: up, storagePath, args: ['--shutdown-timeout', '1s'] });
    let sentAt = 0;
    try {
      const exit = once(hc.child, 'exit');
      const stall = up.front.inject({ type: 'stall', afterBytes: MiB, when: { kind: 'blob', digest: layer.digest } });
      const download = keepAliveDownload(`${hc.url}/v2/library/stuck/blobs/${layer.digest}`);
      await stall.hit();
      await download.firstBytes;
      await hc.waitForLog((l) => l.message === 'fill started' && l.digest === layer.digest);
      assert.ok(tmpFiles(storagePath).length > 0, 'the fill is writing a temp file');

      sentAt = performance.now();
      hc.child.kill('SIGTERM');
      const r = await download.done;
      const [code] = await exit;
      const took = performance.now() - sentAt;
      assert.ok(took >= 1000, `exited after the 1 s deadline, not before (${Math.round(took)} ms)`);
      assert.ok(took < 15_000, `exited soon after the deadline (${Math.round(took)} ms)`);
      assert.equal(code, 0);
      assert.equal(r.status, 200);
      assert.equal(r.outcome, 'error', 'the connection is aborted, not ended cleanly');
      assert.ok(r.body.length < layer.size);
      assert.ok(r.endedAt - sentAt >= 1000, 'the client was served until the deadline');
      await hc.waitForLog((l) => l.message === 'shutdown deadline reached, closing remaining connections' && l.level === 'warn');
      assert.equal((await hc.waitForLog((l) => l.message === 'hubcache stopped')).outcome, 'timeout');
      assert.ok(!hc.logs.some((l) => l.message === 'fill committed' && l.digest === layer.digest));
    } finally {
      await hc.close();
      up.front.clearFaults();
    }
    assert.ok(!committedBlobs(storagePath).includes(layer.digest), 'no partial blob committed');
    // The process normally exits before the cut-off fill has removed its temp file; if it won that race, nothing is left to sweep.
    const leftovers = tmpFiles(storagePath).length;

    const again = await startHubcacheProcess({ upstream: up, storagePath });
    try {
      if (leftovers > 0) assert.equal((await again.waitForLog((l) => l.message === 'leftover temp files removed')).count, leftovers);
      assert.deepEqual(tmpFiles(storagePath), []);
      const r = await get(`${again.url}/v2/library/stuck/blobs/${layer.digest}`);
      assert.equal(r.headers['x-hubcache-cache'], 'miss', 'fetched again from upstream');
      assert.equal(digestOf(r.body), layer.digest);
    } finally {
      await again.close();
    }
  });

  it('--shutdown-delay: after SIGTERM /readyz fails at once while requests (new connections too) are still served; a second signal exits at once', async () => {
    const img = await seeded('library/delayed', 'ops-delay', 256 * 1024);
    const layer = img.layers[0]!;
    // Long enough that the test, not a timer, decides when it ends.
    const hc = await startHubcacheProcess({ upstream: up, args: ['--shutdown-delay', '1h'] });
    try {
      assert.equal((await get(`${hc.url}/readyz`)).status, 200);
      const exit = once(hc.child, 'exit');
      hc.child.kill('SIGTERM');
      const delayed = await hc.waitForLog((l) => l.message === 'shutdown delay: not ready, still serving');
      assert.equal(delayed.delayMs, 3_600_000);
      const ready = await get(`${hc.url}/readyz`);
      assert.equal(ready.status, 503);
      assert.equal(JSON.parse(ready.body.toString()).checks.accepting, false);
      const blob = await get(`${hc.url}/v2/library/delayed/blobs/${layer.digest}`);
      assert.equal(blob.status, 200, 'still serving, pulls included');
      assert.equal(digestOf(blob.body), layer.digest);
      assert.equal(hc.logs.some((l) => l.message === 'shutting down'), false, 'the listener is still open');
      hc.child.kill('SIGTERM');
      const [code] = await exit;
      assert.equal(code, 1);
      assert.ok(hc.logs.some((l) => l.message === 'second signal, exiting now'));
    } finally {
      await hc.close();
    }
  });

  it('SIGINT (Ctrl-C) of an idle process: the same graceful stop, exit 0', async () => {
    const hc = await startHubcacheProcess({ upstream: up });
    try {
      const exit = once(hc.child, 'exit');
      hc.child.kill('SIGINT');
      const [code] = await exit;
      assert.equal(code, 0);
      assert.equal((await hc.waitForLog((l) => l.message === 'signal received')).signal, 'SIGINT');
      assert.equal((await hc.waitForLog((l) => l.message === 'hubcache stopped')).outcome, 'drained');
    } finally {
      await hc.close();
    }
  });
});
