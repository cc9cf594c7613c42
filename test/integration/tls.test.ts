/**
 * TLS on the registry listener (issue #14): HTTPS with a certificate from a test CA, the
 * connection bounds of issue #11 on TLS sockets (a client that never handshakes is closed), the
 * certificate reloaded without dropping open connections (a bad new pair keeps the old one), client
 * certificates, and the challenge's realm behind TLS and behind trusted proxies. Timeouts are tiny
 * (1 s) and the tests wait for the server's doing (a close, a reload), never for time.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { copyFileSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { loadConfig } from '../../src/config/load.js';
import { readTlsPair, TlsFiles } from '../../src/lib/tls-files.js';
import { metricValue } from '../support/hubcache-process.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';
import { createTestCa, type IssuedCertificate, type TestCa } from '../support/test-ca.js';

const TEST_TIMEOUT = 60_000;

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  socket: TLSSocket;
  fingerprint: string;
}

function httpsGet(url: string, path: string, opts: { ca: string; agent?: Agent; headers?: Record<string, string>; cert?: IssuedCertificate } ): Promise<Reply> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: u.hostname,
        port: u.port,
        path,
        ca: readFileSync(opts.ca),
        servername: 'localhost',
        agent: opts.agent ?? false,
        headers: opts.headers,
        ...(opts.cert ? { cert: readFileSync(opts.cert.certificate), key: readFileSync(opts.cert.key) } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        const socket = res.socket as TLSSocket;
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString(), socket, fingerprint: socket.getPeerCertificate().fingerprint256 }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Waits for a condition only the server's doing shows (a reload after a file changed). */
async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20)); // re-check interval, not a wait for a result
  }
}

/** Files as a Kubernetes Secret mount or an operator would replace them: written beside, renamed over. */
function replace(target: string, source: string): void {
  copyFileSync(source, `${target}.new`);
  renameSync(`${target}.new`, target);
}

describe('TLS on the registry listener', { timeout: TEST_TIMEOUT }, () => {
  let ca: TestCa;
  let dir: string;
  let first: IssuedCertificate;
  let second: IssuedCertificate;
  let hc: InProcessHubcache;
  const served = () => ({ certificate: join(dir, 'tls.crt'), key: join(dir, 'tls.key') });

  before(async () => {
    ca = createTestCa();
    dir = mkdtempSync(join(tmpdir(), 'hubcache-tls-'));
    first = ca.issueServer('first');
    second = ca.issueServer('second');
    copyFileSync(first.certificate, served().certificate);
    copyFileSync(first.key, served().key);
    hc = await startInProcess({
      config: { tls: served(), server: { headersTimeout: '1s', maxConnectionsPerClient: 4 } },
      flags: { 'upstream-url': 'http://127.0.0.1:9' },
    });
  });
  after(async () => {
    await hc?.close();
    rmSync(dir, { recursive: true, force: true });
    ca?.close();
  });

  it('serves HTTPS with the configured certificate; the URL says https; expiry is a metric', async () => {
    assert.match(hc.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const res = await httpsGet(hc.url, '/v2/', { ca: ca.caCertificate });
    assert.equal(res.status, 200);
    assert.equal(res.fingerprint, first.fingerprint);
    const notAfter = new Date(readTlsPair(served()).notAfter).getTime() / 1000;
    assert.equal(metricValue(await hc.hub.metrics.registry.metrics(), 'hubcache_tls_certificate_expiry_timestamp_seconds'), Math.floor(notAfter));
  });

  it('refuses plain HTTP on the TLS port (no request is served unencrypted)', async () => {
    const u = new URL(hc.url);
    const outcome = await new Promise<string>((resolve) => {
      const req = httpRequest({ host: u.hostname, port: u.port, path: '/v2/', agent: false }, (res) => resolve(`status ${res.statusCode}`));
      req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      req.end();
    });
    assert.doesNotMatch(outcome, /^status 200/);
  });

  it('closes a connection that never starts its handshake (headersTimeout covers the handshake), and counts it', async () => {
    const u = new URL(hc.url);
    const before = metricValue(await hc.hub.metrics.registry.metrics(), 'hubcache_tls_handshake_failures_total') ?? 0;
    const socket: Socket = netConnect({ host: u.hostname, port: Number(u.port) });
    await once(socket, 'connect');
    socket.resume();
    await once(socket, 'close');
    assert.equal(metricValue(await hc.hub.metrics.registry.metrics(), 'hubcache_tls_handshake_failures_total'), before + 1);
  });

  it('closes a TLS connection that handshakes but never sends a request head (408)', async () => {
    const u = new URL(hc.url);
    const socket = tlsConnect({ host: u.hostname, port: Number(u.port), ca: readFileSync(ca.caCertificate), servername: 'localhost' });
    await once(socket, 'secureConnect');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    await once(socket, 'close');
    assert.match(Buffer.concat(chunks).toString(), /^HTTP\/1\.1 408 /);
  });

  it('applies maxConnectionsPerClient to TLS connections (503 beyond it)', async () => {
    const u = new URL(hc.url);
    const held: TLSSocket[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        const s = tlsConnect({ host: u.hostname, port: Number(u.port), ca: readFileSync(ca.caCertificate), servername: 'localhost', localAddress: '127.0.0.9' } as ConnectionOptions);
        await once(s, 'secureConnect');
        held.push(s);
      }
      const extra = tlsConnect({ host: u.hostname, port: Number(u.port), ca: readFileSync(ca.caCertificate), servername: 'localhost', localAddress: '127.0.0.9' } as ConnectionOptions);
      await once(extra, 'secureConnect');
      const chunks: Buffer[] = [];
      extra.on('data', (c: Buffer) => chunks.push(c));
      extra.write('GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n');
      await once(extra, 'close');
      assert.match(Buffer.concat(chunks).toString(), /^HTTP\/1\.1 503 [\s\S]*too many connections from this client/);
    } finally {
      for (const s of held) s.destroy();
    }
  });

  it('reloads a replaced certificate: new connections get it, a connection opened before keeps working', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const before = await httpsGet(hc.url, '/v2/', { ca: ca.caCertificate, agent });
      assert.equal(before.fingerprint, first.fingerprint);
      // The key first, then the certificate: in between, the files don't match (logged, old pair kept).
      replace(served().key, second.key);
      replace(served().certificate, second.certificate);
      await until('a new connection gets the new certificate', async () => (await httpsGet(hc.url, '/v2/', { ca: ca.caCertificate })).fingerprint === second.fingerprint);
      const again = await httpsGet(hc.url, '/v2/', { ca: ca.caCertificate, agent });
      assert.equal(again.socket, before.socket, 'the same kept-alive connection');
      assert.equal(again.status, 200);
      assert.equal(again.fingerprint, first.fingerprint, 'an open connection keeps the certificate it was opened with');
      assert.ok(hc.logs.some((l) => l.message === 'TLS certificate reloaded' && typeof l.fingerprint === 'string'));
      assert.ok((metricValue(await hc.hub.metrics.registry.metrics(), 'hubcache_tls_reloads_total', { result: 'success' }) ?? 0) >= 1);
    } finally {
      agent.destroy();
    }
  });

  it('keeps the previous pair when the new files are not a valid pair, and logs it', async () => {
    const failures = () => hc.hub.metrics.registry.metrics().then((m) => metricValue(m, 'hubcache_tls_reloads_total', { result: 'failure' }) ?? 0);
    const before = await failures();
    const current = (await httpsGet(hc.url, '/v2/', { ca: ca.caCertificate })).fingerprint;
    const stranger = ca.issueServer('stranger');
    replace(served().key, stranger.key);
    await until('the mismatched pair is refused', async () => (await failures()) > before);
    const line = await hc.waitForLog((l) => l.message === 'TLS certificate not reloaded');
    assert.match(String(line.problem), /is not the key of the certificate/);
    const res = await httpsGet(hc.url, '/v2/', { ca: ca.caCertificate });
    assert.equal(res.status, 200);
    assert.equal(res.fingerprint, current, 'still the pair loaded before');
  });
});

describe('the other bounds on TLS connections: keepAliveTimeout and sendTimeout', { timeout: TEST_TIMEOUT }, () => {
  let ca: TestCa;
  let hc: InProcessHubcache;
  const blob = Buffer.alloc(32 * 1024 * 1024, 0x5a);
  let digest: string;
  before(async () => {
    ca = createTestCa();
    const s = ca.issueServer('server');
    hc = await startInProcess({
      config: { tls: { certificate: s.certificate, key: s.key }, server: { keepAliveTimeout: '1s', sendTimeout: '1s' }, hosted: { repositories: ['team/**'] } },
      flags: { 'upstream-url': 'http://127.0.0.1:9' },
    });
    digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
    const u = new URL(hc.url);
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpsRequest({ host: u.hostname, port: u.port, method: 'POST', path: `/v2/team/big/blobs/uploads/?digest=${digest}`, ca: readFileSync(ca.caCertificate), servername: 'localhost', agent: false, headers: { 'content-type': 'application/octet-stream', 'content-length': blob.length } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.end(blob);
    });
    assert.equal(status, 201);
  });
  after(async () => {
    await hc?.close();
    ca?.close();
  });

  it('closes a kept-alive TLS connection idle for keepAliveTimeout', async () => {
    // A raw TLS socket: Node's Agent would close it itself on the `Keep-Alive: timeout=1` hint.
    const u = new URL(hc.url);
    const socket = tlsConnect({ host: u.hostname, port: Number(u.port), ca: readFileSync(ca.caCertificate), servername: 'localhost' });
    await once(socket, 'secureConnect');
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString()));
    socket.write('GET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n');
    await once(socket, 'close');
    assert.match(text, /^HTTP\/1\.1 200 [\s\S]*Connection: keep-alive/i, 'answered and kept alive, then closed by the server when idle');
  });

  it('aborts a response over TLS the client stopped reading (send timeout), and counts it', async () => {
    const u = new URL(hc.url);
    const socket = tlsConnect({ host: u.hostname, port: Number(u.port), ca: readFileSync(ca.caCertificate), servername: 'localhost' });
    await once(socket, 'secureConnect');
    socket.write(`GET /v2/team/big/blobs/${digest} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
    // Read the first bytes (the answer started), then stop reading: the socket buffers fill.
    await once(socket, 'data');
    socket.pause();
    try {
      // A paused socket doesn't see the server's close: the server's count shows the abort.
      await until('the send timeout aborts the response', async () => metricValue(await hc.hub.metrics.registry.metrics(), 'hubcache_http_timeouts_total', { kind: 'send' }) === 1);
      await hc.waitForLog((l) => l.message === 'send timeout: the client stopped reading, response aborted');
    } finally {
      socket.destroy();
    }
  });
});

describe('TLS configuration', () => {
  let ca: TestCa;
  before(() => (ca = createTestCa()));
  after(() => ca.close());

  it('tls.certificate/key from the file, HUBCACHE_TLS_* or the flags; minVersion TLSv1.2 by default', () => {
    const s = ca.issueServer('cfg');
    assert.deepEqual(loadConfig({ env: {} }).tls, { minVersion: 'TLSv1.2' });
    const fromEnv = loadConfig({ env: { HUBCACHE_TLS_CERTIFICATE: s.certificate, HUBCACHE_TLS_KEY: s.key, HUBCACHE_TLS_MIN_VERSION: 'TLSv1.3' } }).tls;
    assert.deepEqual(fromEnv, { certificate: s.certificate, key: s.key, minVersion: 'TLSv1.3' });
    const fromFlags = loadConfig({ env: {}, flags: { 'tls-certificate': s.certificate, 'tls-key': s.key, 'tls-client-ca': ca.caCertificate } }).tls;
    assert.deepEqual(fromFlags, { certificate: s.certificate, key: s.key, clientCA: ca.caCertificate, minVersion: 'TLSv1.2' });
  });

  it('refuses at load: one of certificate and key, unreadable files, a key that is not the certificate\'s, not PEM, clientCA without TLS', () => {
    const a = ca.issueServer('a');
    const b = ca.issueServer('b');
    assert.throws(() => loadConfig({ env: { HUBCACHE_TLS_CERTIFICATE: a.certificate } }), /tls: set both certificate and key, or neither/);
    assert.throws(() => loadConfig({ env: { HUBCACHE_TLS_CERTIFICATE: a.certificate, HUBCACHE_TLS_KEY: '/nonexistent/tls.key' } }), /tls\.key: cannot read \/nonexistent\/tls\.key: ENOENT/);
    assert.throws(() => loadConfig({ env: { HUBCACHE_TLS_CERTIFICATE: a.certificate, HUBCACHE_TLS_KEY: b.key } }), /tls\.key: .*b\.key is not the key of the certificate in .*a\.crt/);
    assert.throws(() => loadConfig({ env: { HUBCACHE_TLS_CERTIFICATE: a.key, HUBCACHE_TLS_KEY: a.key } }), /tls\.certificate: .*a\.key is not a PEM certificate/);
    assert.throws(() => loadConfig({ env: { HUBCACHE_TLS_CERTIFICATE: a.certificate, HUBCACHE_TLS_KEY: a.certificate } }), /tls\.key: .*a\.crt is not an unencrypted PEM private key/);
    assert.throws(() => loadConfig({ env: { HUBCACHE_TLS_CLIENT_CA: ca.caCertificate } }), /tls: clientCA needs certificate and key/);
    assert.throws(() => loadConfig({ env: { HUBCACHE_TLS_CERTIFICATE: a.certificate, HUBCACHE_TLS_KEY: a.key, HUBCACHE_TLS_MIN_VERSION: 'TLSv1.1' } }), /tls\.minVersion/);
  });

  it('TlsFiles reports one bad state once, and reloads once it is fixed', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hubcache-tlsfiles-'));
    try {
      const a = ca.issueServer('fa');
      const b = ca.issueServer('fb');
      const paths = { certificate: join(dir, 'c'), key: join(dir, 'k') };
      copyFileSync(a.certificate, paths.certificate);
      copyFileSync(a.key, paths.key);
      const errors: string[] = [];
      const reloads: string[] = [];
      const files = new TlsFiles({ ...paths, onReload: (p) => reloads.push(p.fingerprint), onError: (m) => errors.push(m) });
      files.check();
      assert.deepEqual([errors, reloads], [[], []], 'unchanged files: nothing happens');
      copyFileSync(b.key, paths.key);
      files.check();
      files.check();
      assert.equal(errors.length, 1, 'one line for one bad state');
      assert.match(errors[0]!, /still serving the certificate loaded before \(CN=fa, expires /);
      writeFileSync(paths.key, 'garbage');
      files.check();
      assert.equal(errors.length, 2, 'another bad state: another line');
      copyFileSync(b.certificate, paths.certificate);
      copyFileSync(b.key, paths.key);
      files.check();
      assert.deepEqual(reloads, [b.fingerprint]);
      assert.equal(files.current.fingerprint, b.fingerprint);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('client certificates (tls.clientCA)', { timeout: TEST_TIMEOUT }, () => {
  let ca: TestCa;
  let other: TestCa;
  let hc: InProcessHubcache;
  before(async () => {
    ca = createTestCa();
    other = createTestCa('another CA');
    const s = ca.issueServer('server');
    hc = await startInProcess({ config: { tls: { certificate: s.certificate, key: s.key, clientCA: ca.caCertificate } }, flags: { 'upstream-url': 'http://127.0.0.1:9' } });
  });
  after(async () => {
    await hc?.close();
    ca?.close();
    other?.close();
  });

  it('serves a client presenting a certificate the CA issued', async () => {
    const res = await httpsGet(hc.url, '/v2/', { ca: ca.caCertificate, cert: ca.issueClient('ci-runner') });
    assert.equal(res.status, 200);
  });

  it('refuses the handshake without a client certificate, or with one from another CA', async () => {
    await assert.rejects(httpsGet(hc.url, '/v2/', { ca: ca.caCertificate }), (err: NodeJS.ErrnoException) => /certificate|ECONNRESET|socket hang up/i.test(`${err.code} ${err.message}`));
    await assert.rejects(httpsGet(hc.url, '/v2/', { ca: ca.caCertificate, cert: other.issueClient('intruder') }), (err: NodeJS.ErrnoException) => /certificate|ECONNRESET|socket hang up/i.test(`${err.code} ${err.message}`));
    assert.ok((metricValue(await hc.hub.metrics.registry.metrics(), 'hubcache_tls_handshake_failures_total') ?? 0) >= 2);
  });
});

describe('the token realm behind TLS and behind trusted proxies', { timeout: TEST_TIMEOUT }, () => {
  let ca: TestCa;
  let dir: string;
  let tlsHub: InProcessHubcache;
  let proxied: InProcessHubcache;
  const challenge = (r: { headers: Record<string, string | string[] | undefined> }) => String(r.headers['www-authenticate']);

  before(async () => {
    ca = createTestCa();
    dir = mkdtempSync(join(tmpdir(), 'hubcache-realm-'));
    const htpasswd = join(dir, 'htpasswd');
    writeFileSync(htpasswd, `alice:${bcrypt.hashSync('alice-secret', 4).replace(/^\$2b\$/, '$2y$')}\n`);
    const s = ca.issueServer('server');
    tlsHub = await startInProcess({ config: { tls: { certificate: s.certificate, key: s.key }, auth: { htpasswd } }, flags: { 'upstream-url': 'http://127.0.0.1:9' } });
    // Behind a proxy: 127.0.0.1 is the trusted proxy; anonymous pull only from 10.1.0.0/16.
    proxied = await startInProcess({
      config: { server: { trustedProxies: ['127.0.0.1/32'] }, auth: { htpasswd, anonymousPullCidrs: ['10.1.0.0/16'] } },
      flags: { 'upstream-url': 'http://127.0.0.1:9' },
    });
  });
  after(async () => {
    await tlsHub?.close();
    await proxied?.close();
    rmSync(dir, { recursive: true, force: true });
    ca?.close();
  });

  it('challenges with an https:// realm on a TLS listener', async () => {
    const res = await httpsGet(tlsHub.url, '/v2/', { ca: ca.caCertificate });
    assert.equal(res.status, 401);
    assert.match(challenge(res), new RegExp(`^Bearer realm="https://${new URL(tlsHub.url).host}/auth/token"`));
  });

  it('ignores X-Forwarded-Proto/-Host from a client that is not a trusted proxy', async () => {
    const res = await httpsGet(tlsHub.url, '/v2/', { ca: ca.caCertificate, headers: { 'X-Forwarded-Proto': 'http', 'X-Forwarded-Host': 'evil.example' } });
    assert.match(challenge(res), new RegExp(`^Bearer realm="https://${new URL(tlsHub.url).host}/auth/token"`));
  });

  it('believes X-Forwarded-For from a trusted proxy for the client address of CIDR rules, and only the nearest untrusted hop', async () => {
    // Anonymous pull of a mirrored name is allowed from 10.1.0.0/16 only; past auth the request goes
    // to the (unreachable) upstream: any answer but 401 means the address was believed.
    const pull = (headers: Record<string, string>) => fetch(`${proxied.url}/v2/library/alpine/manifests/latest`, { headers }).then((r) => r.status);
    assert.equal(await pull({}), 401, 'the proxy itself (127.0.0.1) is outside 10.1.0.0/16');
    const inside = await pull({ 'X-Forwarded-For': '10.1.2.3' });
    assert.ok(inside !== 401 && inside !== 403, `a client inside the range, through the trusted proxy: ${inside}`);
    assert.equal(await pull({ 'X-Forwarded-For': '10.1.2.3, 192.0.2.7' }), 401, 'an entry before an untrusted hop is not believed');
  });

  it('builds the realm from X-Forwarded-Proto and X-Forwarded-Host of a trusted proxy (a TLS-terminating proxy)', async () => {
    const res = await fetch(`${proxied.url}/v2/`, { headers: { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'registry.example.com' } });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer realm="https:\/\/registry\.example\.com\/auth\/token"/);
    const plain = await fetch(`${proxied.url}/v2/`);
    assert.match(plain.headers.get('www-authenticate') ?? '', new RegExp(`^Bearer realm="http://${new URL(proxied.url).host}/auth/token"`));
  });
});
