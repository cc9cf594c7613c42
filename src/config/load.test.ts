import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, redactConfig } from './load.js';
import type { Config } from './schema.js';

/** The storage section of a config expected to use the filesystem driver. */
function fsStorage(c: Config): Extract<Config['storage'], { driver: 'filesystem' }> {
  assert.equal(c.storage.driver, 'filesystem');
  return c.storage as Extract<Config['storage'], { driver: 'filesystem' }>;
}

const tmp = mkdtempSync(join(tmpdir(), 'hubcache-config-'));
function file(name: string, text: string): string {
  const p = join(tmp, name);
  writeFileSync(p, text);
  return p;
}

test('defaults: listen 0.0.0.0:5000, ./data, Docker Hub upstream with a 5m tag TTL', () => {
  const c = loadConfig({ env: {} });
  assert.equal(c.listen, '0.0.0.0:5000');
  assert.equal(fsStorage(c).path, './data');
  assert.equal(c.defaultUpstream, 'docker.io');
  assert.equal(c.upstreams['docker.io']!.url, 'https://registry-1.docker.io');
  assert.equal(c.upstreams['docker.io']!.tagTtl, 300_000);
  assert.ok(Object.isFrozen(c.upstreams['docker.io']));
});

test('precedence: file < env < flags', () => {
  const f = file('p.yaml', 'listen: 127.0.0.1:6000\nstorage:\n  path: /from-file\n');
  const c = loadConfig({ file: f, env: { HUBCACHE_LISTEN: '127.0.0.1:7000', HUBCACHE_TAG_TTL: '90s' }, flags: { listen: '127.0.0.1:8000' } });
  assert.equal(c.listen, '127.0.0.1:8000');
  assert.equal(fsStorage(c).path, '/from-file');
  assert.equal(c.upstreams['docker.io']!.tagTtl, 90_000);
});

test('HUBCACHE_CONFIG names the file', () => {
  const f = file('e.yaml', 'log:\n  level: debug\n');
  assert.equal(loadConfig({ env: { HUBCACHE_CONFIG: f } }).log.level, 'debug');
});

test('an unknown key stops the start with a message naming it', () => {
  const f = file('u.yaml', 'storage:\n  path: /x\n  pth: /y\nlisten: 0.0.0.0:5000\n');
  assert.throws(() => loadConfig({ file: f, env: {} }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /storage: unknown key "pth"/);
    return true;
  });
});

test('bad values are each named', () => {
  assert.throws(
    () => loadConfig({ env: {}, flags: { listen: 'nope', 'tag-ttl': 'forever', 'upstream-url': 'ftp://x' } }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /listen: expected HOST:PORT/);
      assert.match(err.message, /upstreams\.docker\.io\.tagTtl: invalid duration "forever"/);
      assert.match(err.message, /upstreams\.docker\.io\.url: must be an http\(s\) URL/);
      return true;
    },
  );
});

test('storage.lockStaleAfter: 30s by default, from the file, HUBCACHE_STORAGE_LOCK_STALE_AFTER or the flag; at least 1s', () => {
  assert.equal(fsStorage(loadConfig({ env: {} })).lockStaleAfter, 30_000);
  assert.equal(fsStorage(loadConfig({ file: file('l.yaml', 'storage:\n  lockStaleAfter: 1m\n'), env: {} })).lockStaleAfter, 60_000);
  assert.equal(fsStorage(loadConfig({ env: { HUBCACHE_STORAGE_LOCK_STALE_AFTER: '2s' } })).lockStaleAfter, 2_000);
  assert.equal(fsStorage(loadConfig({ env: {}, flags: { 'storage-lock-stale-after': '45s' } })).lockStaleAfter, 45_000);
  assert.throws(() => loadConfig({ env: { HUBCACHE_STORAGE_LOCK_STALE_AFTER: '500ms' } }), /storage\.lockStaleAfter: must be at least 1s/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_STORAGE_LOCK_STALE_AFTER: '30' } }), /storage\.lockStaleAfter: invalid duration "30"/);
});

test('storage.driver (issue #12): filesystem by default and when named; an unknown driver, or another driver\'s key, is a config error', () => {
  assert.equal(loadConfig({ env: {} }).storage.driver, 'filesystem');
  assert.equal(fsStorage(loadConfig({ file: file('d.yaml', 'storage:\n  driver: filesystem\n  path: /srv\n'), env: {} })).path, '/srv');
  assert.equal(fsStorage(loadConfig({ env: { HUBCACHE_STORAGE_DRIVER: 'filesystem' }, flags: { 'storage-path': '/x' } })).path, '/x');
  assert.throws(
    () => loadConfig({ file: file('gcs.yaml', 'storage:\n  driver: gcs\n  bucket: b\n'), env: {} }),
    (err: unknown) => err instanceof ConfigError && err.problems.length === 1 && err.problems[0] === 'storage.driver: unknown storage driver "gcs" (drivers: filesystem, s3)',
  );
  assert.throws(() => loadConfig({ env: {}, flags: { 'storage-driver': 'nfs' } }), /storage\.driver: unknown storage driver "nfs"/);
  assert.throws(() => loadConfig({ file: file('b.yaml', 'storage:\n  bucket: b\n'), env: {} }), /storage: unknown key "bucket"/);
});

test('storage.driver: s3 (issue #15): defaults, keys from the file, HUBCACHE_STORAGE_* or flags; clear errors', () => {
  const d = loadConfig({ file: file('s3.yaml', 'storage:\n  driver: s3\n  bucket: hubcache\n'), env: {} }).storage;
  assert.equal(d.driver, 's3');
  assert.deepEqual(
    { ...d, eviction: undefined },
    { driver: 's3', bucket: 'hubcache', region: 'us-east-1', prefix: '', forcePathStyle: false, partSize: 16 * 1024 * 1024, partsInFlight: 4, accessFlushInterval: 10_000, eviction: undefined },
  );
  const e = loadConfig({
    env: { HUBCACHE_STORAGE_DRIVER: 's3', HUBCACHE_STORAGE_BUCKET: 'b-1', HUBCACHE_STORAGE_ENDPOINT: 'http://127.0.0.1:7480', HUBCACHE_STORAGE_FORCE_PATH_STYLE: 'true', HUBCACHE_STORAGE_PART_SIZE: '8MiB', HUBCACHE_STORAGE_ACCESS_KEY_ID_FILE: '/run/secrets/id', HUBCACHE_STORAGE_SECRET_ACCESS_KEY_FILE: '/run/secrets/secret' },
    flags: { 'storage-prefix': 'mirror/', 'storage-parts-in-flight': '2' },
  }).storage;
  assert.ok(e.driver === 's3');
  assert.deepEqual([e.bucket, e.endpoint, e.forcePathStyle, e.partSize, e.partsInFlight, e.prefix, e.accessKeyIdFile, e.secretAccessKeyFile], ['b-1', 'http://127.0.0.1:7480', true, 8 * 1024 * 1024, 2, 'mirror/', '/run/secrets/id', '/run/secrets/secret']);
  const problems = (yaml: string) => {
    try {
      loadConfig({ file: file('bad.yaml', `storage:\n  driver: s3\n${yaml}`), env: {} });
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err.problems.join('\n');
    }
    return '';
  };
  assert.match(problems(''), /storage\.bucket: storage\.bucket is required with driver s3/);
  assert.match(problems('  bucket: b1b\n  endpoint: ftp://x\n'), /storage\.endpoint: must be an http\(s\) URL/);
  assert.match(problems('  bucket: b1b\n  partSize: 1MiB\n'), /partSize must be between 5MiB and 5GiB/);
  assert.match(problems('  bucket: b1b\n  prefix: /x\n'), /a prefix ends with \/ and does not start with one/);
  assert.match(problems('  bucket: b1b\n  accessKeyId: AK\n'), /an access key id needs a secret access key/);
  assert.match(problems('  bucket: b1b\n  accessKeyId: AK\n  accessKeyIdFile: /f\n  secretAccessKey: S\n'), /set accessKeyId or accessKeyIdFile/);
  assert.match(problems('  bucket: b1b\n  path: /srv\n'), /storage: unknown key "path"/);
  const secret = loadConfig({ file: file('k.yaml', 'storage:\n  driver: s3\n  bucket: b1b\n  accessKeyId: AK\n  secretAccessKey: s3cr3t\n'), env: {} });
  const printed = JSON.stringify(redactConfig(secret));
  assert.ok(!printed.includes('s3cr3t') && printed.includes('"secretAccessKey":"<redacted>"') && printed.includes('"partSize":"16MiB"'));
});

test('server bounds: defaults; from the file, the environment or flags; numbers from strings; print writes units back', () => {
  const d = loadConfig({ env: {} }).server;
  assert.deepEqual(d, { headersTimeout: 60_000, keepAliveTimeout: 65_000, sendTimeout: 60_000, maxConnections: 4096, maxConnectionsPerClient: 256, blobBufferPool: 64 * 1024 * 1024, trustedProxies: [] });
  const f = file('s.yaml', 'server:\n  maxConnections: 100\n  sendTimeout: 2m\n  blobBufferPool: 16MiB\n');
  const c = loadConfig({ file: f, env: { HUBCACHE_MAX_CONNECTIONS_PER_CLIENT: '0', HUBCACHE_HEADERS_TIMEOUT: '10s' }, flags: { 'max-connections': '200', 'keep-alive-timeout': '5s', 'blob-buffer-pool': '8MiB' } }).server;
  assert.deepEqual(c, { headersTimeout: 10_000, keepAliveTimeout: 5_000, sendTimeout: 120_000, maxConnections: 200, maxConnectionsPerClient: 0, blobBufferPool: 8 * 1024 * 1024, trustedProxies: [] });
  const printed = redactConfig(loadConfig({ file: f, env: {} })) as { server: Record<string, unknown> };
  assert.deepEqual(printed.server, { headersTimeout: '1m', keepAliveTimeout: '1m5s', sendTimeout: '2m', maxConnections: 100, maxConnectionsPerClient: 256, blobBufferPool: '16MiB', trustedProxies: [] });
});

test('server.trustedProxies: none by default; CIDR ranges from the file, HUBCACHE_TRUSTED_PROXIES or the flag', () => {
  assert.deepEqual(loadConfig({ file: file('tp.yaml', 'server:\n  trustedProxies: [10.0.0.0/8, "fd00::/8"]\n'), env: {} }).server.trustedProxies, ['10.0.0.0/8', 'fd00::/8']);
  assert.deepEqual(loadConfig({ env: { HUBCACHE_TRUSTED_PROXIES: '10.0.0.0/8, 192.168.1.1' } }).server.trustedProxies, ['10.0.0.0/8', '192.168.1.1']);
  assert.deepEqual(loadConfig({ env: {}, flags: { 'trusted-proxies': '172.16.0.0/12' } }).server.trustedProxies, ['172.16.0.0/12']);
  assert.throws(() => loadConfig({ env: { HUBCACHE_TRUSTED_PROXIES: 'proxy.example' } }), /server\.trustedProxies\.0: "proxy\.example" is not an address or a CIDR range/);
});

test('server bounds: no timeout below 1s (0 would mean none at all), whole connection counts', () => {
  assert.throws(() => loadConfig({ env: { HUBCACHE_HEADERS_TIMEOUT: '0s' } }), /server\.headersTimeout: must be at least 1s/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_SEND_TIMEOUT: '500ms' } }), /server\.sendTimeout: must be at least 1s/);
  assert.throws(() => loadConfig({ env: {}, flags: { 'keep-alive-timeout': '0s' } }), /server\.keepAliveTimeout: must be at least 1s/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_MAX_CONNECTIONS: 'lots' } }), /server\.maxConnections: expected a whole number/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_MAX_CONNECTIONS: '0' } }), /server\.maxConnections/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_MAX_CONNECTIONS_PER_CLIENT: '1.5' } }), /server\.maxConnectionsPerClient/);
});

test('cache.maxConcurrentFills: 32 by default, from the file, HUBCACHE_MAX_CONCURRENT_FILLS or the flag; 1–1024', () => {
  assert.equal(loadConfig({ env: {} }).cache.maxConcurrentFills, 32);
  assert.equal(loadConfig({ file: file('f.yaml', 'cache:\n  maxConcurrentFills: 8\n'), env: {} }).cache.maxConcurrentFills, 8);
  assert.equal(loadConfig({ env: { HUBCACHE_MAX_CONCURRENT_FILLS: '4' } }).cache.maxConcurrentFills, 4);
  assert.equal(loadConfig({ env: {}, flags: { 'max-concurrent-fills': '64' } }).cache.maxConcurrentFills, 64);
  assert.throws(() => loadConfig({ env: { HUBCACHE_MAX_CONCURRENT_FILLS: '0' } }), /cache\.maxConcurrentFills: Number must be greater than or equal to 1/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_MAX_CONCURRENT_FILLS: 'many' } }), /cache\.maxConcurrentFills: Expected number/);
});

test('cache.abandonedFills: a 5s grace, finish from 50% or with at most 16MiB left by default; each key checked; printed back with units', () => {
  const MiB = 1024 * 1024;
  assert.deepEqual({ ...loadConfig({ env: {} }).cache.abandonedFills }, { grace: 5_000, minProgressToFinish: 0.5, maxRemainingToFinish: 16 * MiB });
  const c = loadConfig({ file: file('a.yaml', 'cache:\n  abandonedFills:\n    grace: 0s\n    minProgressToFinish: 0.9\n    maxRemainingToFinish: 1GiB\n'), env: {} });
  assert.deepEqual({ ...c.cache.abandonedFills }, { grace: 0, minProgressToFinish: 0.9, maxRemainingToFinish: 1024 * MiB });
  assert.deepEqual((redactConfig(c) as { cache: { abandonedFills: unknown } }).cache.abandonedFills, { grace: '0s', minProgressToFinish: 0.9, maxRemainingToFinish: '1GiB' });
  const bad = file('ab.yaml', 'cache:\n  abandonedFills:\n    grace: soon\n    minProgressToFinish: 50\n    maxRemainingToFinish: lots\n    budget: 1\n');
  assert.throws(() => loadConfig({ file: bad, env: {} }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /cache\.abandonedFills: unknown key "budget"/);
    return true;
  });
  const badValues = file('ab2.yaml', 'cache:\n  abandonedFills:\n    grace: soon\n    minProgressToFinish: 50\n    maxRemainingToFinish: lots\n');
  assert.throws(() => loadConfig({ file: badValues, env: {} }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /cache\.abandonedFills\.grace: invalid duration "soon"/);
    assert.match(err.message, /cache\.abandonedFills\.minProgressToFinish: Number must be less than or equal to 1/);
    assert.match(err.message, /cache\.abandonedFills\.maxRemainingToFinish: invalid size "lots"/);
    return true;
  });
});

test('credentials from a password file; print redacts them', () => {
  const pw = file('pw', 's3cret\n');
  const c = loadConfig({ env: { HUBCACHE_UPSTREAM_USERNAME: 'me', HUBCACHE_UPSTREAM_PASSWORD_FILE: pw } });
  assert.equal(c.upstreams['docker.io']!.password, 's3cret');
  assert.doesNotMatch(JSON.stringify(redactConfig(c)), /s3cret/);
});

test('a password without a username is refused', () => {
  assert.throws(() => loadConfig({ env: { HUBCACHE_UPSTREAM_PASSWORD: 'x' } }), /a password needs a username/);
});

test('invalid YAML is reported with the file name', () => {
  const f = file('bad.yaml', 'listen: [\n');
  assert.throws(() => loadConfig({ file: f, env: {} }), /bad\.yaml: not valid YAML/);
});

test('config print output loads back to the same configuration', async () => {
  const { stringify } = await import('yaml');
  const c = loadConfig({ env: { HUBCACHE_TAG_TTL: '90s' } });
  const f = file('round.yaml', stringify(redactConfig(c)));
  assert.deepEqual(loadConfig({ file: f, env: {} }), c);
});

test('print writes durations and sizes as a person would, in forms the loader reads back', async () => {
  const { stringify } = await import('yaml');
  const c = loadConfig({ env: { HUBCACHE_TAG_TTL: '90m', HUBCACHE_SHUTDOWN_TIMEOUT: '45s' } });
  const printed = redactConfig(c) as {
    upstreams: Record<string, { tagTtl: unknown }>;
    cache: { fillTimeout: unknown };
    upstreamClient: { connectTimeout: unknown; retryBaseDelay: unknown; maxManifestSize: unknown };
    shutdown: { timeout: unknown };
  };
  assert.equal(printed.upstreams['docker.io']!.tagTtl, '1h30m');
  assert.equal(printed.cache.fillTimeout, '30m');
  assert.equal(printed.upstreamClient.connectTimeout, '10s');
  assert.equal(printed.upstreamClient.retryBaseDelay, '200ms');
  assert.equal(printed.upstreamClient.maxManifestSize, '4MiB');
  assert.equal(printed.shutdown.timeout, '45s');
  assert.deepEqual(loadConfig({ file: file('natural.yaml', stringify(printed)), env: {} }), c);
});

test('upstream deadline and tag-list bounds: defaults, printed with units, a request timeout under 100ms refused', async () => {
  const { stringify } = await import('yaml');
  const c = loadConfig({ env: {} });
  assert.equal(c.upstreamClient.requestTimeout, 60_000);
  assert.equal(c.upstreamClient.maxTagListSize, 32 * 1024 * 1024);
  assert.equal(c.cache.tagListCacheSize, 64 * 1024 * 1024);
  const printed = redactConfig(loadConfig({ file: file('bounds.yaml', 'upstreamClient:\n  requestTimeout: 90s\n  maxTagListSize: 8MiB\ncache:\n  tagListCacheSize: 0\n'), env: {} })) as {
    upstreamClient: { requestTimeout: unknown; maxTagListSize: unknown };
    cache: { tagListCacheSize: unknown };
  };
  assert.deepEqual([printed.upstreamClient.requestTimeout, printed.upstreamClient.maxTagListSize, printed.cache.tagListCacheSize], ['1m30s', '8MiB', '0B']);
  assert.deepEqual(loadConfig({ file: file('bounds2.yaml', stringify(printed)), env: {} }).upstreamClient.requestTimeout, 90_000);
  assert.throws(() => loadConfig({ file: file('short.yaml', 'upstreamClient:\n  requestTimeout: 50ms\n'), env: {} }), /upstreamClient\.requestTimeout: must be at least 100ms/);
});

test('durations need a unit', () => {
  const f = file('d.yaml', 'cache:\n  fillTimeout: 30\n');
  assert.throws(() => loadConfig({ file: f, env: {} }), /cache\.fillTimeout: durations need a unit/);
});

test('several upstreams from a file; credentials per upstream from the environment; filters and redirect hosts', () => {
  const pw = file('ghcr-pw', 'ghcr-token\n');
  const f = file(
    'multi.yaml',
    [
      'upstreams:',
      '  ghcr.io:',
      '    url: https://ghcr.io',
      '    repositories:',
      '      allow: ["myorg/**"]',
      '      deny: ["myorg/secret-*"]',
      '  quay.io:',
      '    url: https://quay.io',
      '    username: robot',
      '    password: from-file',
      '  registry.example.com:5000:',
      '    url: https://registry.example.com:5000',
      '    allowedRedirectHosts: [minio.internal:9000]',
      '',
    ].join('\n'),
  );
  const c = loadConfig({
    file: f,
    env: {
      HUBCACHE_UPSTREAMS_GHCR_IO_USERNAME: 'me',
      HUBCACHE_UPSTREAMS_GHCR_IO_PASSWORD_FILE: pw,
      HUBCACHE_UPSTREAMS_QUAY_IO_PASSWORD: 'from-env',
      HUBCACHE_UPSTREAMS_REGISTRY_EXAMPLE_COM_5000_TAG_TTL: '1h',
      HUBCACHE_UPSTREAMS_DOCKER_IO_ALLOWED_REDIRECT_HOSTS: 'cdn1.internal, cdn2.internal:8443',
      HUBCACHE_UPSTREAMS_NOT_CONFIGURED_IO_URL: 'https://ignored.example',
    },
  });
  assert.deepEqual(Object.keys(c.upstreams).sort(), ['docker.io', 'ghcr.io', 'quay.io', 'registry.example.com:5000']);
  assert.equal(c.upstreams['docker.io']!.url, 'https://registry-1.docker.io', 'docker.io stays configured by default');
  assert.equal(c.upstreams['ghcr.io']!.password, 'ghcr-token');
  assert.equal(c.upstreams['ghcr.io']!.username, 'me');
  assert.deepEqual(c.upstreams['ghcr.io']!.repositories, { allow: ['myorg/**'], deny: ['myorg/secret-*'] });
  assert.equal(c.upstreams['quay.io']!.password, 'from-env');
  assert.equal(c.upstreams['registry.example.com:5000']!.tagTtl, 3_600_000);
  assert.deepEqual(c.upstreams['registry.example.com:5000']!.allowedRedirectHosts, ['minio.internal:9000']);
  assert.deepEqual(c.upstreams['docker.io']!.allowedRedirectHosts, ['cdn1.internal', 'cdn2.internal:8443']);
  assert.doesNotMatch(JSON.stringify(redactConfig(c)), /ghcr-token|from-env|from-file/);
});

test('bad repository patterns and registry names are named', () => {
  const f = file('badpat.yaml', 'upstreams:\n  ghcr.io:\n    url: https://ghcr.io\n    repositories:\n      allow: ["My Org/*"]\n  "http://x": {url: "https://x"}\n');
  assert.throws(() => loadConfig({ file: f, env: {} }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /upstreams\.ghcr\.io\.repositories\.allow\.0: repository patterns/);
    assert.match(err.message, /registry names are hostnames/);
    return true;
  });
});

test('upstream names the router and the store would refuse are refused at start, each with its reason (issue #12)', () => {
  const long = `${'a'.repeat(64)}.example.com`;
  const refused = (names: string[]) => {
    const yaml = `upstreams:\n${names.map((n) => `  ${JSON.stringify(n)}: {url: "https://x.example"}`).join('\n')}\n`;
    try {
      loadConfig({ file: file('names.yaml', yaml), env: {} });
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err.message;
    }
    return assert.fail(`accepted ${names.join(', ')}`);
  };
  const message = refused(['registry.local:05000', 'host.example:99999', long, 'myregistry', 'index.docker.io', 'registry-1.docker.io']);
  assert.match(message, /"registry\.local:05000" is not a registry name: port 05000 has a leading zero \(write 5000\)/);
  assert.match(message, /"host\.example:99999" is not a registry name: port 99999 is out of range \(1–65535\)/);
  assert.match(message, /the label "a{20}\.\.\." is 64 characters long, at most 63/);
  assert.match(message, /"myregistry" is not a registry name: it has no dot and no port/);
  assert.match(message, /"index\.docker\.io" is Docker Hub: configure it as docker\.io/);
  assert.match(message, /"registry-1\.docker\.io" is Docker Hub: configure it as docker\.io/);
  // defaultUpstream follows the same rule.
  assert.throws(() => loadConfig({ env: { HUBCACHE_DEFAULT_UPSTREAM: 'Quay.io' }, flags: { 'upstream-url': 'https://quay.io' } }), /defaultUpstream: "Quay\.io" is not a registry name: registry names are lowercase/);
  // The limits themselves are accepted.
  const c = loadConfig({ file: file('edge.yaml', `upstreams:\n  ${'a'.repeat(63)}.io:5000: {url: "https://x.example"}\n  localhost:65535: {url: "http://localhost:65535"}\n`), env: {} });
  assert.deepEqual(Object.keys(c.upstreams).sort(), [`${'a'.repeat(63)}.io:5000`, 'docker.io', 'localhost:65535']);
});

test('defaultUpstream from the environment or the --default-upstream flag: it is the effective default, and the --upstream-* settings address it', () => {
  const f = file('du.yaml', 'defaultUpstream: quay.io\nupstreams:\n  quay.io:\n    url: https://quay.io\n  ghcr.io:\n    url: https://ghcr.io\n  registry.example.com:\n    url: https://registry.example.com\n');
  const fromEnv = loadConfig({ file: f, env: { HUBCACHE_DEFAULT_UPSTREAM: 'ghcr.io', HUBCACHE_TAG_TTL: '1h' } });
  assert.equal(fromEnv.defaultUpstream, 'ghcr.io');
  assert.equal(fromEnv.upstreams['ghcr.io']!.tagTtl, 3_600_000);
  assert.equal(fromEnv.upstreams['quay.io']!.tagTtl, 300_000);
  // A flag beats the environment, which beats the file.
  const fromFlag = loadConfig({ file: f, env: { HUBCACHE_DEFAULT_UPSTREAM: 'ghcr.io' }, flags: { 'default-upstream': 'registry.example.com', 'tag-ttl': '2h' } });
  assert.equal(fromFlag.defaultUpstream, 'registry.example.com');
  assert.equal(fromFlag.upstreams['registry.example.com']!.tagTtl, 7_200_000);
  assert.equal(fromFlag.upstreams['ghcr.io']!.tagTtl, 300_000);
  // Without a file: the flag plus --upstream-url configure the default upstream on their own.
  const bare = loadConfig({ env: {}, flags: { 'default-upstream': 'ghcr.io', 'upstream-url': 'https://ghcr.io' } });
  assert.equal(bare.defaultUpstream, 'ghcr.io');
  assert.deepEqual(Object.keys(bare.upstreams), ['ghcr.io']);
});

test('issue #11: credentials in an upstream URL are refused, from the file, the environment or a flag, pointing at username and passwordFile, without repeating them', () => {
  const f = file('userinfo.yaml', 'upstreams:\n  ghcr.io:\n    url: https://robot:s3cr3t-token@ghcr.io\n');
  const refused = (load: () => unknown, where: string) =>
    assert.throws(load, (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, new RegExp(`${where.replaceAll('.', '\\.')}\\.url: must not contain credentials.*username.*passwordFile`));
      assert.doesNotMatch(err.message, /s3cr3t|robot/);
      return true;
    });
  refused(() => loadConfig({ file: f, env: {} }), 'upstreams.ghcr.io');
  refused(() => loadConfig({ env: { HUBCACHE_UPSTREAM_URL: 'https://robot:s3cr3t-token@registry.example' } }), 'upstreams.docker.io');
  refused(() => loadConfig({ env: {}, flags: { 'upstream-url': 'https://robot@registry.example' } }), 'upstreams.docker.io');
  refused(() => loadConfig({ file: file('userinfo-env.yaml', 'upstreams:\n  ghcr.io:\n    url: https://ghcr.io\n'), env: { HUBCACHE_UPSTREAMS_GHCR_IO_URL: 'https://:s3cr3t@ghcr.io' } }), 'upstreams.ghcr.io');
});

test('issue #11: allowedRealmHosts as a list, or comma-separated from HUBCACHE_UPSTREAMS_<NAME>_ALLOWED_REALM_HOSTS, --upstream-allowed-realm-hosts or its variable', () => {
  const f = file('realms.yaml', 'upstreams:\n  ghcr.io:\n    url: https://ghcr.io\n    allowedRealmHosts: [https://ghcr.io, "auth.ghcr.example:8443"]\n  quay.io:\n    url: https://quay.io\n');
  const c = loadConfig({ file: f, env: { HUBCACHE_UPSTREAMS_QUAY_IO_ALLOWED_REALM_HOSTS: 'https://quay.io, http://127.0.0.1:5001' } });
  assert.deepEqual(c.upstreams['ghcr.io']!.allowedRealmHosts, ['https://ghcr.io', 'auth.ghcr.example:8443']);
  assert.deepEqual(c.upstreams['quay.io']!.allowedRealmHosts, ['https://quay.io', 'http://127.0.0.1:5001']);
  assert.equal(c.upstreams['docker.io']!.allowedRealmHosts, undefined, 'unset: the upstream client applies its default');
  const env = loadConfig({ env: { HUBCACHE_UPSTREAM_ALLOWED_REALM_HOSTS: 'http://127.0.0.1:5001' } });
  assert.deepEqual(env.upstreams['docker.io']!.allowedRealmHosts, ['http://127.0.0.1:5001']);
  const flag = loadConfig({ env: { HUBCACHE_UPSTREAM_ALLOWED_REALM_HOSTS: 'http://127.0.0.1:5001' }, flags: { 'upstream-allowed-realm-hosts': 'https://auth.docker.io,127.0.0.1:5002' } });
  assert.deepEqual(flag.upstreams['docker.io']!.allowedRealmHosts, ['https://auth.docker.io', '127.0.0.1:5002']);
});

test('issue #11: allowed realm entries are validated at load, each named', () => {
  const f = file('badrealms.yaml', 'upstreams:\n  ghcr.io:\n    url: https://ghcr.io\n    allowedRealmHosts: ["https://ghcr.io/token", "ftp://ghcr.io", "ghcr.io/token", "https://u:pw@ghcr.io"]\n');
  assert.throws(() => loadConfig({ file: f, env: {} }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /upstreams\.ghcr\.io\.allowedRealmHosts\.0: "https:\/\/ghcr\.io\/token": only the origin, no path \(write https:\/\/ghcr\.io/);
    assert.match(err.message, /allowedRealmHosts\.1: "ftp:\/\/ghcr\.io": a realm is http\(s\)/);
    assert.match(err.message, /allowedRealmHosts\.2: "ghcr\.io\/token": expected an origin/);
    assert.match(err.message, /allowedRealmHosts\.3: "https:\/\/…@ghcr\.io": no credentials/);
    assert.doesNotMatch(err.message, /pw@/);
    return true;
  });
});

test('storage.maxSize and minFreeSpace (issue #13): unset by default; sizes, or a percentage of the filesystem; from the file, env or flags', () => {
  const d = loadConfig({ env: {} });
  assert.equal(d.storage.maxSize, undefined);
  assert.equal(fsStorage(d).minFreeSpace, undefined);
  assert.deepEqual(d.storage.eviction, { highWatermark: 95, lowWatermark: 85, interval: 60_000, concurrency: 4 });
  assert.equal(d.storage.accessFlushInterval, 10_000);
  const f = loadConfig({ file: file('cap.yaml', 'storage:\n  maxSize: 200GiB\n  minFreeSpace: 10%\n  eviction:\n    highWatermark: 90\n    lowWatermark: 70\n'), env: {} });
  assert.equal(f.storage.maxSize, 200 * 1024 ** 3);
  assert.deepEqual(fsStorage(f).minFreeSpace, { percent: 10 });
  assert.equal(f.storage.eviction.highWatermark, 90);
  assert.equal(f.storage.eviction.lowWatermark, 70);
  const e = loadConfig({ env: { HUBCACHE_STORAGE_MAX_SIZE: '1GB', HUBCACHE_STORAGE_MIN_FREE_SPACE: '20GiB', HUBCACHE_EVICTION_HIGH_WATERMARK: '80%', HUBCACHE_EVICTION_LOW_WATERMARK: '60' } });
  assert.equal(e.storage.maxSize, 1e9);
  assert.deepEqual(fsStorage(e).minFreeSpace, { bytes: 20 * 1024 ** 3 });
  assert.equal(e.storage.eviction.highWatermark, 80);
  assert.equal(e.storage.eviction.lowWatermark, 60);
  const fl = loadConfig({ env: {}, flags: { 'storage-max-size': '5MiB', 'storage-min-free-space': '2.5%', 'eviction-high-watermark': '99', 'eviction-low-watermark': '98' } });
  assert.equal(fl.storage.maxSize, 5 * 1024 ** 2);
  assert.deepEqual(fsStorage(fl).minFreeSpace, { percent: 2.5 });
  // Printed back in forms that load to the same values.
  const printed = redactConfig(f) as { storage: Record<string, unknown> };
  assert.equal(printed.storage.maxSize, '200GiB');
  assert.equal(printed.storage.minFreeSpace, '10%');
  assert.equal((redactConfig(e) as { storage: Record<string, unknown> }).storage.minFreeSpace, '20GiB');
});

test('storage eviction settings are validated with clear messages', () => {
  assert.throws(() => loadConfig({ env: { HUBCACHE_STORAGE_MAX_SIZE: 'lots' } }), /storage\.maxSize: invalid size "lots"/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_STORAGE_MIN_FREE_SPACE: '100%' } }), /storage\.minFreeSpace: a percentage of the filesystem must be between 0% and 100%/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_STORAGE_MIN_FREE_SPACE: 'half' } }), /storage\.minFreeSpace: invalid size or percentage "half"/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_EVICTION_HIGH_WATERMARK: '80', HUBCACHE_EVICTION_LOW_WATERMARK: '80' } }), /storage\.eviction: highWatermark must be above lowWatermark/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_EVICTION_HIGH_WATERMARK: '120' } }), /storage\.eviction\.highWatermark: must be at most 100/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_EVICTION_LOW_WATERMARK: '0' } }), /storage\.eviction\.lowWatermark: must be above 0/);
});

test('cache.tagRetention: 90d by default, from the file, HUBCACHE_TAG_RETENTION or --tag-retention; at least 1m', () => {
  assert.equal(loadConfig({ env: {} }).cache.tagRetention, 90 * 86_400_000);
  assert.equal(loadConfig({ file: file('ret.yaml', 'cache:\n  tagRetention: 30d\n'), env: {} }).cache.tagRetention, 30 * 86_400_000);
  assert.equal(loadConfig({ env: { HUBCACHE_TAG_RETENTION: '7d' } }).cache.tagRetention, 7 * 86_400_000);
  assert.equal(loadConfig({ env: {}, flags: { 'tag-retention': '12h' } }).cache.tagRetention, 12 * 3_600_000);
  assert.throws(() => loadConfig({ env: { HUBCACHE_TAG_RETENTION: '10s' } }), /cache\.tagRetention: must be at least 1m/);
  assert.equal((redactConfig(loadConfig({ env: {} })) as { cache: Record<string, unknown> }).cache.tagRetention, '90d');
});

test('hosted: nothing hosted by default; patterns from the file (strings or {pattern, fallThrough}), HUBCACHE_HOSTED_REPOSITORIES or the flag', () => {
  const def = loadConfig({ env: {} }).hosted;
  assert.deepEqual(def.repositories, []);
  assert.equal(def.uploadTimeout, 3_600_000);
  assert.equal(def.allowDelete, false);
  assert.equal(def.maxUploadSessions, 1000);
  const fromFile = loadConfig({ file: file('h.yaml', 'hosted:\n  repositories:\n    - myorg/**\n    - pattern: ci/*\n      fallThrough: docker.io\n  uploadTimeout: 10m\n  allowDelete: true\n'), env: {} }).hosted;
  assert.deepEqual(fromFile.repositories, [{ pattern: 'myorg/**' }, { pattern: 'ci/*', fallThrough: 'docker.io' }]);
  assert.equal(fromFile.uploadTimeout, 600_000);
  assert.equal(fromFile.allowDelete, true);
  const fromEnv = loadConfig({ env: { HUBCACHE_HOSTED_REPOSITORIES: 'myorg/**, ci/*', HUBCACHE_HOSTED_ALLOW_DELETE: 'true', HUBCACHE_HOSTED_UPLOAD_TIMEOUT: '5m' } }).hosted;
  assert.deepEqual(fromEnv.repositories.map((r) => r.pattern), ['myorg/**', 'ci/*']);
  assert.equal(fromEnv.allowDelete, true);
  assert.equal(fromEnv.uploadTimeout, 300_000);
  assert.deepEqual(loadConfig({ env: {}, flags: { 'hosted-repositories': 'team/*' } }).hosted.repositories.map((r) => r.pattern), ['team/*']);
});

test('hosted: invalid patterns, an unconfigured fallThrough upstream and bad values are refused with the key named', () => {
  assert.throws(() => loadConfig({ env: { HUBCACHE_HOSTED_REPOSITORIES: 'MyOrg/**' } }), /hosted\.repositories\.0\.pattern: repository patterns use lowercase name characters/);
  assert.throws(() => loadConfig({ file: file('h1.yaml', 'hosted:\n  repositories:\n    - pattern: ci/*\n      fallThrough: ghcr.io\n'), env: {} }), /hosted\.repositories\.0\.fallThrough: ghcr\.io is not configured under upstreams/);
  assert.throws(() => loadConfig({ file: file('h2.yaml', 'hosted:\n  repositories:\n    - pattern: ci/*\n      upstream: docker.io\n'), env: {} }), /hosted\.repositories\.0/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_HOSTED_ALLOW_DELETE: 'yes' } }), /hosted\.allowDelete: expected true or false/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_HOSTED_UPLOAD_TIMEOUT: '10' } }), /hosted\.uploadTimeout: invalid duration/);
});

test('auth: off by default; htpasswd, challenge, CIDRs and expiry from the file, the environment or flags', () => {
  const off = loadConfig({ env: {} }).auth;
  assert.equal(off.htpasswd, undefined);
  assert.equal(off.challenge, 'bearer');
  assert.equal(off.anonymousPull, true);
  assert.equal(off.tokenExpiry, 300_000);
  assert.equal(off.refreshTokenExpiry, 7 * 86_400_000);
  assert.equal(off.maxFailedLogins, 10);
  assert.equal(off.maxFailedLoginsPerAddress, 50);
  assert.equal(off.failedLoginWindow, 300_000);
  const env = loadConfig({
    env: { HUBCACHE_AUTH_HTPASSWD: '/etc/hubcache/htpasswd', HUBCACHE_AUTH_CHALLENGE: 'basic', HUBCACHE_AUTH_ANONYMOUS_PULL: 'false', HUBCACHE_AUTH_ANONYMOUS_PULL_CIDRS: '10.0.0.0/8, fd00::/8', HUBCACHE_AUTH_TOKEN_EXPIRY: '1m' },
  }).auth;
  assert.deepEqual([env.htpasswd, env.challenge, env.anonymousPull, env.anonymousPullCidrs, env.tokenExpiry], ['/etc/hubcache/htpasswd', 'basic', false, ['10.0.0.0/8', 'fd00::/8'], 60_000]);
  const flags = loadConfig({ env: {}, flags: { 'auth-htpasswd': '/h', 'auth-realm': 'https://registry.example/auth/token', 'auth-service': 'registry.example' } }).auth;
  assert.deepEqual([flags.htpasswd, flags.realm, flags.service], ['/h', 'https://registry.example/auth/token', 'registry.example']);
  const fromFile = loadConfig({
    file: file('auth.yaml', 'auth:\n  htpasswd: /h\n  groups: {devs: [alice]}\n  rules:\n    - repositories: ["myorg/**"]\n      groups: [devs]\n      actions: [pull, push]\n      cidrs: [192.0.2.0/24]\n'),
    env: {},
  }).auth;
  assert.deepEqual(fromFile.rules, [{ repositories: ['myorg/**'], groups: ['devs'], actions: ['pull', 'push'], cidrs: ['192.0.2.0/24'] }]);
});

test('auth: clear messages for wrong rules, groups, ranges and durations', () => {
  const bad = (yaml: string, message: RegExp) => assert.throws(() => loadConfig({ file: file('bad-auth.yaml', yaml), env: {} }), message);
  bad('auth:\n  rules:\n    - repositories: ["a/*"]\n      actions: [pull]\n', /auth\.rules\.0: a rule must name whom it grants to: users, groups, authenticated: true or anonymous: true/);
  bad('auth:\n  rules:\n    - repositories: ["a/*"]\n      users: [x]\n      actions: [write]\n', /auth\.rules\.0\.actions\.0: actions are pull, push, delete/);
  bad('auth:\n  rules:\n    - repositories: []\n      users: [x]\n      actions: [pull]\n', /auth\.rules\.0\.repositories: name at least one repository pattern/);
  bad('auth:\n  rules:\n    - repositories: ["A/*"]\n      users: [x]\n      actions: [pull]\n', /auth\.rules\.0\.repositories\.0: repository patterns use lowercase/);
  bad('auth:\n  rules:\n    - repositories: ["a/*"]\n      groups: [ops]\n      actions: [pull]\n', /auth\.rules\.0\.groups: unknown group "ops" \(define it under auth\.groups\)/);
  bad('auth:\n  rules:\n    - repositories: ["a/*"]\n      users: [x]\n      actions: [pull]\n      verbs: [get]\n', /auth\.rules\.0: unknown key "verbs"/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_AUTH_ANONYMOUS_PULL_CIDRS: '10.0.0.0/40' } }), /auth\.anonymousPullCidrs\.0: "10\.0\.0\.0\/40": the prefix length must be 0–32/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_AUTH_CHALLENGE: 'digest' } }), /auth\.challenge/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_AUTH_TOKEN_EXPIRY: '5s' } }), /auth\.tokenExpiry: must be at least 10s/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_AUTH_ANONYMOUS_PULL: 'maybe' } }), /auth\.anonymousPull/);
});

test('cache.pin (issue #13): a list from the file, or comma-separated from HUBCACHE_PIN or --pin; each entry validated with its reason', () => {
  assert.deepEqual(loadConfig({ env: {} }).cache.pin, []);
  const f = file('pin.yaml', 'cache:\n  pin:\n    - nginx:1.27\n    - redis:7.*\n    - alpine@sha256:' + 'a'.repeat(64) + '\n');
  assert.deepEqual(loadConfig({ file: f, env: {} }).cache.pin, ['nginx:1.27', 'redis:7.*', `alpine@sha256:${'a'.repeat(64)}`]);
  assert.deepEqual(loadConfig({ env: { HUBCACHE_PIN: 'nginx:1.27, myorg/base:*' } }).cache.pin, ['nginx:1.27', 'myorg/base:*']);
  assert.deepEqual(loadConfig({ env: {}, flags: { pin: 'alpine' } }).cache.pin, ['alpine']);
  assert.throws(
    () => loadConfig({ env: { HUBCACHE_PIN: 'Nginx:1, alpine@sha256:zz, redis:7.[0-9], ghcr.io/org/app:1' } }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, [
        'cache.pin.0: "Nginx:1": invalid repository name (lowercase letters, digits, separators . _ __ -, components joined by /)',
        'cache.pin.1: "alpine@sha256:zz": invalid digest (expected sha256:<64 hex digits>)',
        'cache.pin.2: "redis:7.[0-9]": invalid tag (A-Z a-z 0-9 _ . -, at most 128, not starting with . or -; a tag pattern may add * and ?, nothing else)',
      ]);
      return true;
    },
  );
  // The registry must be configured: checked once the syntax is right.
  assert.throws(() => loadConfig({ env: { HUBCACHE_PIN: 'nginx, ghcr.io/org/app:1' } }), /cache\.pin\.1: "ghcr\.io\/org\/app:1": registry ghcr\.io is not configured under upstreams/);
  const withGhcr = file('pin-ghcr.yaml', 'upstreams:\n  ghcr.io:\n    url: https://ghcr.io\ncache:\n  pin: [ghcr.io/org/app:v1, index.docker.io/library/nginx]\n');
  assert.deepEqual(loadConfig({ file: withGhcr, env: {} }).cache.pin, ['ghcr.io/org/app:v1', 'index.docker.io/library/nginx']);
});

test('cache.pinConcurrency, pinPlatforms, pinMaxTags: defaults 2, all platforms, 64; from the file, the environment and flags', () => {
  const c = loadConfig({ env: {} });
  assert.equal(c.cache.pinConcurrency, 2);
  assert.deepEqual(c.cache.pinPlatforms, []);
  assert.equal(c.cache.pinMaxTags, 64);
  assert.equal(loadConfig({ env: { HUBCACHE_PIN_CONCURRENCY: '4' } }).cache.pinConcurrency, 4);
  assert.equal(loadConfig({ env: {}, flags: { 'pin-concurrency': '1' } }).cache.pinConcurrency, 1);
  assert.deepEqual(loadConfig({ env: { HUBCACHE_PIN_PLATFORMS: 'linux/amd64,linux/arm/v7' } }).cache.pinPlatforms, ['linux/amd64', 'linux/arm/v7']);
  assert.equal(loadConfig({ file: file('pm.yaml', 'cache:\n  pinMaxTags: 5\n'), env: {} }).cache.pinMaxTags, 5);
  assert.throws(() => loadConfig({ env: { HUBCACHE_PIN_CONCURRENCY: '0' } }), /cache\.pinConcurrency: Number must be greater than or equal to 1/);
  assert.throws(() => loadConfig({ env: { HUBCACHE_PIN_PLATFORMS: 'amd64' } }), /cache\.pinPlatforms\.0: platforms are os\/architecture\[\/variant\]/);
});

test('config print round-trips the pins as written', () => {
  const c = loadConfig({ env: { HUBCACHE_PIN: 'nginx:1.27,redis:7.*' } });
  const printed = redactConfig(c) as { cache: { pin: string[] } };
  assert.deepEqual(printed.cache.pin, ['nginx:1.27', 'redis:7.*']);
});
