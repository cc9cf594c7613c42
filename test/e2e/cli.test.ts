/**
 * The operator CLI as users run it (`node bin/hubcache.js …` in a child process with a clean
 * environment) against the fake Docker Hub and real hubcache processes: config check/print,
 * prefetch through a running instance and straight into a store, progress bars on a terminal
 * (a pseudo-terminal from util-linux `script`), and `ls` over the store prefetch filled.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { formatBytes } from '../../src/commands/format.js';
import { writeManyTags } from '../../src/storage/fs/testing/many-tags.js';
import { startHubcacheProcess, type HubcacheProcess } from '../support/hubcache-process.js';
import { makeImage, makeIndex, MediaTypes, type TestImage } from '../support/images.js';
import { skopeoCopy, skopeoInspect } from '../support/skopeo.js';
import { startUpstream, type Upstream } from '../support/upstream-harness.js';

const BIN = fileURLToPath(new URL('../../bin/hubcache.js', import.meta.url));
const KiB = 1024;
const MiB = 1024 * KiB;

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A clean environment, like hubcache-process.ts: no HUBCACHE_* from the host leaks in. */
function cliEnv(env: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', ...env };
}

/** Runs `cmd args` to completion; killed after `timeoutMs` so a hang fails the test instead of stalling the suite. */
async function run(cmd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<CliResult> {
  const child = spawn(cmd, args, { env: cliEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** `hubcache ARGS`. */
function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return run(process.execPath, [BIN, ...args], env);
}

/** `hubcache ARGS` with stdout and stderr on a pseudo-terminal (both arrive merged on stdout). */
function cliOnTty(args: string[]): Promise<CliResult> {
  const command = [process.execPath, BIN, ...args].map(shellQuote).join(' ');
  return run('script', ['-qec', command, '/dev/null']);
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Every entry under `dir` with its type, size and mtime: equal before and after means untouched. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      out.push(`${p.slice(dir.length)} ${st.isDirectory() ? 'd' : 'f'} ${st.size} ${st.mtimeMs}`);
      if (st.isDirectory()) walk(p);
    }
  };
  out.push(`/ ${lstatSync(dir).mtimeMs}`);
  walk(dir);
  return out;
}

const sumSizes = (img: TestImage) => [...img.blobs.values()].reduce((a, b) => a + b.size, 0);
const blobGets = (up: Upstream) => up.front.filter({ kind: 'blob', method: 'GET', status: 200 }).map((r) => r.digest);

let up: Upstream;
let hc: HubcacheProcess;
const images: TestImage[] = [];
const dirs: string[] = [];

function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

async function pushed<T extends TestImage>(img: Promise<T>, repo: string, tag: string): Promise<T> {
  const i = await img;
  images.push(i);
  await up.push(i, repo, tag);
  return i;
}

const small = (seed: string, format: 'docker' | 'oci' = 'docker', layers = 2) => makeImage(format, { seed, layers, layerSize: 64 * KiB, filesPerLayer: 1 });

before(async () => {
  up = await startUpstream();
  hc = await startHubcacheProcess({ upstream: up });
});

after(async () => {
  await hc?.close();
  await up?.close();
  for (const i of images) i.dispose();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/**
 * Preloaded into a `serve` process: every server's listen() waits until a line arrives on stdin, so
 * the test holds the process "still starting" (storage opened, not yet listening) as long as it likes.
 */
const LISTEN_GATE = `
import net from 'node:net';
const open = new Promise((resolve) => process.stdin.once('data', resolve)).then(() => process.stdin.destroy());
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  void open.then(() => listen.apply(this, args));
  return this;
};
`;

interface GatedServe {
  readonly logs: Array<Record<string, unknown>>;
  readonly stderr: () => string;
  /** How the process ended (so far) and its stderr, for assertion messages. */
  readonly status: () => string;
  /** Resolves with the first log line (past or future) whose message is `message`, or undefined if the process exits first. */
  waitFor(message: string): Promise<Record<string, unknown> | undefined>;
  /** Lets listen() proceed: the start completes. */
  openGate(): void;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly child: ReturnType<typeof spawn>;
}

function serveGated(): GatedServe {
  const gate = join(tempDir('hubcache-cli-gate-'), 'listen-gate.mjs');
  writeFileSync(gate, LISTEN_GATE);
  const child = spawn(
    process.execPath,
    ['--import', pathToFileURL(gate).href, BIN, 'serve', '--listen', '127.0.0.1:0', '--storage-path', tempDir('hubcache-cli-serve-'), '--upstream-url', up.url, '--upstream-allowed-realm-hosts', up.realmOrigin],
    { env: cliEnv(), stdio: ['pipe', 'pipe', 'pipe'] },
  );
  // Writing to the gate of a process that died must not fail the test with EPIPE: the exit code tells.
  child.stdin!.on('error', () => {});
  const logs: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  createInterface({ input: child.stdout! }).on('line', (text) => {
    logs.push(JSON.parse(text) as Record<string, unknown>);
    for (const w of [...waiters]) w();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  let done = false;
  void exited.then(() => {
    done = true;
    for (const w of [...waiters]) w();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  void exited.then(() => clearTimeout(timer));
  return {
    logs,
    stderr: () => stderr,
    status: () => `exit code ${child.exitCode}, signal ${child.signalCode}; stderr: ${stderr}`,
    child,
    exited,
    openGate: () => child.stdin!.write('go\n'),
    waitFor: (message) =>
      new Promise((resolve) => {
        const check = () => {
          const found = logs.find((l) => l.message === message);
          if (found || done) {
            waiters.delete(check);
            resolve(found);
          }
        };
        waiters.add(check);
        check();
      }),
  };
}

describe('hubcache serve: a signal during the start', () => {
  it('SIGTERM once the storage is opened (not yet listening): the start completes, then a clean stop, exit 0', async () => {
    const p = serveGated();
    assert.ok(await p.waitFor('storage opened'), p.stderr());
    p.child.kill('SIGTERM');
    const received = await p.waitFor('signal received');
    assert.deepEqual(received, { ...received, signal: 'SIGTERM', starting: true }, p.status());
    p.openGate();
    assert.deepEqual(await p.exited, { code: 0, signal: null }, p.stderr());
    const messages = p.logs.map((l) => l.message);
    const at = (m: string) => messages.indexOf(m);
    assert.ok(at('storage opened') < at('signal received') && at('signal received') < at('hubcache started'), messages.join(', '));
    assert.ok(at('hubcache started') < at('shutting down') && at('shutting down') < at('hubcache stopped'), messages.join(', '));
    assert.equal(p.logs.find((l) => l.message === 'hubcache stopped')!.outcome, 'drained');
  });

  it('a second signal during the start exits 1 at once, without waiting for the start', async () => {
    const p = serveGated();
    try {
      assert.ok(await p.waitFor('storage opened'), p.stderr());
      p.child.kill('SIGINT');
      assert.ok(await p.waitFor('signal received'), p.status());
      p.child.kill('SIGTERM');
      assert.deepEqual(await p.exited, { code: 1, signal: null }, p.stderr());
      assert.equal(p.logs.find((l) => l.message === 'second signal, exiting now')?.signal, 'SIGTERM');
      assert.ok(!p.logs.some((l) => l.message === 'hubcache started'));
    } finally {
      p.openGate();
      p.child.kill('SIGKILL');
    }
  });
});

describe('hubcache config check', () => {
  it('a valid file and flags: exit 0, "configuration OK"', async () => {
    const file = join(tempDir('hubcache-cli-cfg-'), 'ok.yaml');
    writeFileSync(file, 'listen: 127.0.0.1:5001\nupstreams:\n  docker.io:\n    tagTtl: 10m\n');
    const r = await cli(['config', 'check', '--config', file, '--storage-path', '/tmp/hubcache-never-created']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'configuration OK\n');
    assert.equal(existsSync('/tmp/hubcache-never-created'), false, 'checking creates no store');
  });

  it('an unknown key in the YAML file: exit 2, stderr names the key', async () => {
    const file = join(tempDir('hubcache-cli-cfg-'), 'typo.yaml');
    writeFileSync(file, 'cache:\n  fillTimeot: 5m\n');
    const r = await cli(['config', 'check', '--config', file]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /fillTimeot/);
    assert.equal(r.stdout, '');
  });

  it('a bad value (--tag-ttl 5, no unit): exit 2, stderr names the setting and the value', async () => {
    const r = await cli(['config', 'check', '--tag-ttl', '5']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /tagTtl: invalid duration "5"/);
  });

  it('issue #11: credentials in an upstream URL: check and print refuse it (exit 2), pointing at username/passwordFile, never echoing it', async () => {
    const file = join(tempDir('hubcache-cli-cfg-'), 'userinfo.yaml');
    writeFileSync(file, 'upstreams:\n  ghcr.io:\n    url: https://robot:ghp-s3cret-token@ghcr.io\n');
    for (const cmd of ['check', 'print']) {
      const r = await cli(['config', cmd, '--config', file]);
      assert.equal(r.code, 2, `${cmd}: ${r.stdout}`);
      assert.match(r.stderr, /upstreams\.ghcr\.io\.url: must not contain credentials.*username.*passwordFile/);
      assert.equal(r.stdout, '');
      assert.ok(!r.stderr.includes('ghp-s3cret-token'), r.stderr);
    }
  });
});

describe('hubcache config print', () => {
  it('shows the defaults as YAML', async () => {
    const r = await cli(['config', 'print']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^listen: 0\.0\.0\.0:5000$/m);
    assert.match(r.stdout, /^ {2}path: \.\/data$/m);
    assert.match(r.stdout, /url: https:\/\/registry-1\.docker\.io/);
    // Durations and sizes as a person writes them, not as milliseconds and bytes.
    assert.match(r.stdout, /^ {4}tagTtl: 5m$/m);
    assert.match(r.stdout, /^ {2}fillTimeout: 30m$/m);
    assert.match(r.stdout, /^ {2}connectTimeout: 10s$/m);
    assert.match(r.stdout, /^ {2}retryBaseDelay: 200ms$/m);
    assert.match(r.stdout, /^ {2}maxManifestSize: 4MiB$/m);
    assert.match(r.stdout, /^ {2}timeout: 30s$/m);
  });

  it('a compound duration prints in compound form and the output is a config file that loads back', async () => {
    const r = await cli(['config', 'print', '--tag-ttl', '90m', '--shutdown-timeout', '1500ms']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ {4}tagTtl: 1h30m$/m);
    assert.match(r.stdout, /^ {2}timeout: 1s500ms$/m);
    const file = join(tempDir('hubcache-cli-cfg-'), 'printed.yaml');
    writeFileSync(file, r.stdout);
    const again = await cli(['config', 'print', '--config', file]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, r.stdout);
  });

  it('redacts a password given by environment or by flag', async () => {
    const fromEnv = await cli(['config', 'print'], { HUBCACHE_UPSTREAM_USERNAME: 'bob', HUBCACHE_UPSTREAM_PASSWORD: 'env-s3cret-value' });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    assert.ok(!fromEnv.stdout.includes('env-s3cret-value'), fromEnv.stdout);
    assert.match(fromEnv.stdout, /password: <redacted>/);
    assert.match(fromEnv.stdout, /username: bob/);
    const fromFlag = await cli(['config', 'print', '--upstream-username', 'bob', '--upstream-password', 'flag-s3cret-value', '--format', 'json']);
    assert.equal(fromFlag.code, 0, fromFlag.stderr);
    assert.ok(!fromFlag.stdout.includes('flag-s3cret-value'), fromFlag.stdout);
  });

  it('--default-upstream (and HUBCACHE_DEFAULT_UPSTREAM) sets defaultUpstream; the --upstream-* flags address it', async () => {
    const r = await cli(['config', 'print', '--format', 'json', '--default-upstream', 'ghcr.io', '--upstream-url', 'https://ghcr.io', '--tag-ttl', '1h']);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { defaultUpstream: string; upstreams: Record<string, { url: string; tagTtl: string }> };
    assert.equal(doc.defaultUpstream, 'ghcr.io');
    assert.deepEqual(doc.upstreams, { 'ghcr.io': { ...doc.upstreams['ghcr.io'], url: 'https://ghcr.io', tagTtl: '1h' } });
    const fromEnv = await cli(['config', 'check', '--upstream-url', 'https://ghcr.io'], { HUBCACHE_DEFAULT_UPSTREAM: 'ghcr.io' });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    const help = await cli(['config', 'check', '--help']);
    assert.match(help.stdout, /--default-upstream <value>.*\[env HUBCACHE_DEFAULT_UPSTREAM\]/s);
  });

  it('--format json parses', async () => {
    const r = await cli(['config', 'print', '--format', 'json', '--upstream-username', 'bob', '--upstream-password', 'pw-value']);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { listen: string; storage: { path: string }; upstreams: Record<string, { url: string; username?: string; password?: string }> };
    assert.equal(doc.listen, '0.0.0.0:5000');
    assert.equal(doc.storage.path, './data');
    assert.deepEqual(
      { url: doc.upstreams['docker.io']!.url, username: doc.upstreams['docker.io']!.username, password: doc.upstreams['docker.io']!.password },
      { url: 'https://registry-1.docker.io', username: 'bob', password: '<redacted>' },
    );
  });
});

describe('hubcache prefetch', () => {
  it('--server: pulls every blob once through the running instance; a later pull costs no upstream blob GET', async () => {
    const a = await pushed(small('cli-prefetch-a'), 'library/small', '1.0');
    const b = await pushed(small('cli-prefetch-b', 'oci', 1), 'library/tools', '2');
    up.front.reset();
    const r = await cli(['prefetch', 'small:1.0', 'library/tools:2', '--server', hc.url]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^2\/2 images prefetched, /);
    // No terminal: plain lines instead of bars.
    assert.match(r.stderr, new RegExp(`^prefetched small:1\\.0: 3 blobs, ${formatBytes(sumSizes(a))}$`, 'm'));
    assert.match(r.stderr, /^prefetched library\/tools:2: 2 blobs, /m);
    assert.ok(!r.stderr.includes('%'), 'no progress bar without a TTY');
    assert.deepEqual(new Set(blobGets(up)), new Set([...a.blobs.keys(), ...b.blobs.keys()]), up.front.dump());
    assert.equal(blobGets(up).length, a.blobs.size + b.blobs.size, 'each blob downloaded once');

    up.front.reset();
    await skopeoCopy(`docker://${hc.host}/library/small:1.0`, `dir:${tempDir('hubcache-cli-pull-')}`);
    await skopeoCopy(`docker://${hc.host}/library/tools:2`, `dir:${tempDir('hubcache-cli-pull-')}`);
    assert.equal(up.front.count({ kind: 'blob' }), 0, up.front.dump());
  });

  it('-f FILE: references one per line, # comments and blank lines ignored', async () => {
    const img = await pushed(small('cli-prefetch-file'), 'library/filed', '1');
    const file = join(tempDir('hubcache-cli-list-'), 'images.txt');
    writeFileSync(file, '# images to warm before the rollout\n\nlibrary/filed:1   # the app\n   \n');
    up.front.reset();
    const r = await cli(['prefetch', '-f', file, '--server', hc.url]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^1\/1 images prefetched, /);
    assert.deepEqual(new Set(blobGets(up)), new Set(img.blobs.keys()));
  });

  it('one missing image: exit 1, the failing image named, the others still prefetched', async () => {
    const okA = await pushed(small('cli-prefetch-ok-a'), 'library/ok-a', '1');
    const okB = await pushed(small('cli-prefetch-ok-b'), 'library/ok-b', '1');
    up.front.reset();
    const r = await cli(['prefetch', 'library/ok-a:1', 'library/nope:1', 'library/ok-b:1', '--server', hc.url]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /^2\/3 images prefetched, /);
    assert.match(r.stdout, /^ {2}failed: library\/nope:1: manifest 1: HTTP 404/m);
    assert.match(r.stderr, /^failed library\/nope:1: /m);
    assert.deepEqual(new Set(blobGets(up)), new Set([...okA.blobs.keys(), ...okB.blobs.keys()]));
  });

  it('without --server: fills the store directly; a hubcache started on it serves the image without upstream blob GETs', async () => {
    const img = await pushed(small('cli-prefetch-direct'), 'library/direct', '1');
    const store = tempDir('hubcache-cli-store-');
    up.front.reset();
    // A shutdown delay meant for a served instance (here an hour) must not hold prefetch's own
    // in-process server: killed after 30 s, a regression fails with code null.
    const r = await run(process.execPath, [BIN, 'prefetch', 'library/direct:1', '--storage-path', store, '--upstream-url', up.url, '--upstream-allowed-realm-hosts', up.realmOrigin], { HUBCACHE_SHUTDOWN_DELAY: '1h' }, 30_000);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^1\/1 images prefetched, /);
    assert.deepEqual(new Set(blobGets(up)), new Set(img.blobs.keys()));

    const served = await startHubcacheProcess({ storagePath: store, upstream: up });
    try {
      up.front.reset();
      await skopeoCopy(`docker://${served.host}/library/direct:1`, `dir:${tempDir('hubcache-cli-pull-')}`);
      assert.equal(up.front.count({ kind: 'blob' }), 0, up.front.dump());
    } finally {
      await served.close();
    }
  });

  it('without --server: the in-process server logs (warnings only) go to stderr; stdout is just the summary', async () => {
    const good = await pushed(small('cli-prefetch-quiet'), 'library/quiet', '1');
    // A 429 makes the in-process server log a warning ("upstream rate limited").
    const limited = up.front.inject({ type: 'rateLimit', retryAfter: 60, when: { kind: 'manifest', repo: 'library/limited' } });
    try {
      const r = await cli(['prefetch', 'library/quiet:1', 'library/limited:1', '--storage-path', tempDir('hubcache-cli-store-'), '--upstream-url', up.url, '--upstream-allowed-realm-hosts', up.realmOrigin]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.ok(limited.hits > 0, up.front.dump());
      const lines = r.stdout.split('\n');
      assert.equal(lines.length, 3, r.stdout);
      assert.equal(lines[0], `1/2 images prefetched, ${formatBytes(sumSizes(good))}`);
      assert.match(lines[1]!, /^ {2}failed: library\/limited:1: manifest 1: HTTP 429 /);
      assert.equal(lines[2], '');
      const logs = r.stderr
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { level: string; message: string });
      assert.ok(logs.some((l) => l.message === 'upstream rate limited'), r.stderr);
      assert.deepEqual(logs.filter((l) => l.level !== 'warn' && l.level !== 'error'), [], 'nothing below warn');
    } finally {
      limited.clear();
    }
  });

  it('on a terminal: progress bars instead of plain lines', async () => {
    const img = await pushed(makeImage('docker', { seed: 'cli-prefetch-bar', layers: 1, layerSize: 2 * MiB, filesPerLayer: 1 }), 'library/bar', '1');
    const r = await cliOnTty(['prefetch', 'library/bar:1', '--server', hc.url]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const size = formatBytes(sumSizes(img));
    assert.match(r.stdout, new RegExp(`100% \\| ${escapeRe(size)}/${escapeRe(size)} \\| library/bar:1`));
    assert.match(r.stdout, /1\/1 images prefetched/);
    assert.ok(!r.stdout.includes('prefetched library/bar:1:'), 'bars replace the plain lines');
  });

  it('on a terminal: an image under 0.5 MB still ends at 100%, its size in KB', async () => {
    const tiny = await pushed(small('cli-prefetch-tiny-bar'), 'library/tinybar', '1');
    const other = await pushed(small('cli-prefetch-tiny-bar-2', 'oci', 1), 'library/tinybar2', '1');
    const r = await cliOnTty(['prefetch', 'library/tinybar:1', 'library/tinybar2:1', '--server', hc.url]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    for (const [img, name] of [[tiny, 'library/tinybar:1'], [other, 'library/tinybar2:1']] as const) {
      const size = formatBytes(sumSizes(img));
      assert.match(size, / KB$/);
      assert.match(r.stdout, new RegExp(`100% \\| ${escapeRe(size)}/${escapeRe(size)} \\| ${escapeRe(name)}`), r.stdout);
    }
    assert.match(r.stdout, /2\/2 images prefetched/);
  });
});

describe('hubcache ls', () => {
  let store: string;
  let image: TestImage;
  let index: TestImage;
  let started: number;
  let finished: number;

  before(async () => {
    image = await pushed(small('cli-ls-image'), 'library/lsimg', '1');
    index = await pushed(makeIndex('oci', { seed: 'cli-ls-index', layers: 1, layerSize: 32 * KiB, filesPerLayer: 1 }), 'library/lsmulti', '1');
    store = tempDir('hubcache-cli-ls-');
    started = Date.now();
    const r = await cli(['prefetch', 'library/lsimg:1', 'library/lsmulti:1', '--platform', 'linux/amd64', '--storage-path', store, '--upstream-url', up.url, '--upstream-allowed-realm-hosts', up.realmOrigin]);
    finished = Date.now();
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });

  /** The rows expected for the prefetched store, `validatedAt` aside. */
  function expectedRows() {
    const amd64 = index.children.find((c) => c.platform?.architecture === 'amd64')!;
    return [
      {
        upstream: 'docker.io',
        repository: 'library/lsimg',
        tag: '1',
        digest: image.digest,
        mediaType: MediaTypes.dockerManifest,
        size: sumSizes(image),
        blobs: { cached: 3, referenced: 3 },
        manifests: { cached: 1, referenced: 1 },
      },
      {
        upstream: 'docker.io',
        repository: 'library/lsmulti',
        tag: '1',
        digest: index.digest,
        mediaType: MediaTypes.ociIndex,
        size: sumSizes(amd64),
        blobs: { cached: amd64.blobs.size, referenced: amd64.blobs.size },
        manifests: { cached: 1, referenced: 2 },
      },
    ];
  }

  it('--json: exact rows and summary; the index pulled for one platform shows 1 of 2 manifests', async () => {
    const r = await cli(['ls', '--json', '--storage-path', store]);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { rows: Array<Record<string, unknown> & { validatedAt: string }>; summary: unknown };
    for (const row of doc.rows) {
      const t = Date.parse(row.validatedAt);
      assert.ok(t >= started - 1000 && t <= finished + 1000, `validatedAt ${row.validatedAt} is when prefetch ran`);
    }
    assert.deepEqual(
      doc.rows.map(({ validatedAt: _, ...rest }) => rest),
      expectedRows(),
    );
    const bytes = sumSizes(image) + expectedRows()[1]!.size;
    const blobs = image.blobs.size + expectedRows()[1]!.blobs.cached;
    assert.deepEqual(doc.summary, { repositories: 2, tags: 2, blobs, bytes, store: { blobs, bytes } });
  });

  it('table: upstream, repository, tag, short digest, size and cached counts, then a summary line', async () => {
    const r = await cli(['ls', '--storage-path', store]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 4, r.stdout);
    assert.match(lines[0]!, /^UPSTREAM +REPOSITORY +TAG +DIGEST +SIZE +CACHED +VALIDATED$/);
    const [rowImage, rowIndex] = expectedRows();
    const cells = (line: string) => line.split(/ {2,}/);
    assert.deepEqual(cells(lines[1]!).slice(0, 6), ['docker.io', 'library/lsimg', '1', image.digest.slice(0, 19), formatBytes(rowImage!.size), '3/3 blobs']);
    assert.deepEqual(cells(lines[2]!).slice(0, 6), ['docker.io', 'library/lsmulti', '1', index.digest.slice(0, 19), formatBytes(rowIndex!.size), '2/2 blobs, 1/2 manifests']);
    assert.match(cells(lines[1]!)[6]!, /^\d+s ago$/);
    // Columns line up: every cell starts where its header does.
    const at = (line: string, text: string) => line.indexOf(text);
    assert.equal(at(lines[1]!, 'library/lsimg'), at(lines[0]!, 'REPOSITORY'));
    assert.equal(at(lines[2]!, formatBytes(rowIndex!.size)), at(lines[0]!, 'SIZE'));
    const bytes = rowImage!.size + rowIndex!.size;
    assert.equal(lines[3], `2 repositories, 2 tags, ${formatBytes(bytes)} in 5 blobs (whole store: ${formatBytes(bytes)} in 5 blobs)`);
  });

  it('a repository argument filters by name prefix (short Docker Hub names too)', async () => {
    for (const filter of ['lsmulti', 'library/lsm', 'docker.io/library/lsmulti']) {
      const r = await cli(['ls', filter, '--json', '--storage-path', store]);
      assert.equal(r.code, 0, r.stderr);
      const doc = JSON.parse(r.stdout) as { rows: Array<{ repository: string }>; summary: { repositories: number; tags: number } };
      assert.deepEqual(doc.rows.map((x) => x.repository), ['library/lsmulti'], filter);
      assert.equal(doc.summary.tags, 1);
    }
    const none = await cli(['ls', 'ghcr.io/', '--storage-path', store]);
    assert.equal(none.code, 0);
    assert.match(none.stdout, /^nothing cached matching "ghcr\.io\/" in /);
  });

  it('leaves the store unchanged (no tmp/ sweep, no directories created)', async () => {
    // What a serving instance's upload in progress looks like: init() at start would sweep it.
    mkdirSync(join(store, 'tmp'), { recursive: true });
    writeFileSync(join(store, 'tmp', 'blob-in-progress'), 'partial');
    const beforeLs = snapshot(store);
    assert.equal((await cli(['ls', '--storage-path', store])).code, 0);
    assert.equal((await cli(['ls', '--json', '--storage-path', store])).code, 0);
    assert.deepEqual(snapshot(store), beforeLs);
  });

  it('an empty or missing store: says nothing is cached, exit 0, creates nothing', async () => {
    const empty = tempDir('hubcache-cli-empty-');
    const r = await cli(['ls', '--storage-path', empty]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `nothing cached in ${empty} (store: 0 blobs, 0 B)\n`);
    assert.deepEqual(readdirSync(empty), []);
    const missing = join(empty, 'not-there');
    const m = await cli(['ls', '--json', '--storage-path', missing]);
    assert.equal(m.code, 0, m.stderr);
    assert.deepEqual(JSON.parse(m.stdout), { rows: [], summary: { repositories: 0, tags: 0, blobs: 0, bytes: 0, store: { blobs: 0, bytes: 0 } } });
    assert.equal(existsSync(missing), false);
  });

  it('while an instance serves: an image whose layers were never pulled (skopeo inspect) shows 1 of 3 blobs', async () => {
    const img = await pushed(small('cli-ls-inspected'), 'library/inspected', '1');
    await skopeoInspect(`docker://${hc.host}/library/inspected:1`);
    // The client has the config once the fill is under way; ls must run after it is committed.
    await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === img.config!.digest);
    const r = await cli(['ls', 'inspected', '--json', '--storage-path', hc.storagePath]);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { rows: Array<{ repository: string; digest: string; size: number; blobs: unknown; manifests: unknown }> };
    assert.equal(doc.rows.length, 1);
    const { repository, digest, size, blobs, manifests } = doc.rows[0]!;
    assert.deepEqual(
      { repository, digest, size, blobs, manifests },
      { repository: 'library/inspected', digest: img.digest, size: img.config!.size, blobs: { cached: 1, referenced: 3 }, manifests: { cached: 1, referenced: 1 } },
    );
  });

  it('issue #13: 5000 tags stream out; --json is one row per line and parses to every row; a reader leaving early (| head) is exit 0', async () => {
    const root = tempDir('hubcache-cli-ls-many-');
    const TAGS = 5000;
    const many = await writeManyTags({ root, tags: TAGS, tagsPerRepository: 2000 });
    const r = await cli(['ls', '--json', '--storage-path', root]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 1 + TAGS + 2, 'opening, a line per row, closing, summary');
    const doc = JSON.parse(r.stdout) as { rows: Array<{ repository: string; tag: string; blobs: unknown }>; summary: unknown };
    assert.deepEqual(
      doc.rows.map((x) => `${x.repository}:${x.tag}`),
      Array.from({ length: TAGS }, (_, i) => `${many.repository(i)}:${many.tag(i)}`),
    );
    assert.deepEqual(doc.rows[0]!.blobs, { cached: 2, referenced: 2 });
    assert.deepEqual(doc.summary, { repositories: 3, tags: TAGS, blobs: many.blobs, bytes: many.bytes, store: { blobs: many.blobs, bytes: many.bytes } });
    const head = await run('bash', ['-c', `set -o pipefail; ${[process.execPath, BIN, 'ls', '--storage-path', root].map(shellQuote).join(' ')} | head -n 2`]);
    assert.equal(head.code, 0, head.stderr);
    assert.equal(head.stdout.split('\n').length, 3);
  });
});
