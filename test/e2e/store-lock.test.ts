/**
 * One process owns a storage root (docs/storage-layout.md): against real hubcache processes, a
 * second `serve` and a `prefetch` without --server on a served store fail at start naming the lock
 * holder, without touching the store the first one is writing; `ls` still reads next to it; a lock
 * left by a SIGKILLed process is taken over at once by the next start, also while that process is
 * a zombie its parent hasn't reaped, and so is a lock whose pid now names another process (issue
 * #12); a clean stop removes it.
 * A lock held from another host (or PID namespace) makes `serve` wait and watch it: taken over when
 * nothing refreshes it, refused when its holder does; `prefetch` doesn't wait.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startHubcacheProcess, type HubcacheProcess } from '../support/hubcache-process.js';
import { rawRequest } from '../support/raw-http.js';

const BIN = fileURLToPath(new URL('../../bin/hubcache.js', import.meta.url));
// Nothing listens there: these tests never reach an upstream.
const UPSTREAM = 'http://127.0.0.1:9';

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `hubcache ARGS` in a clean environment (plus `env`); killed after 60 s so that a hang fails instead of stalling. */
async function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

function readLock(storagePath: string): { pid: number; hostname: string; startedAt: string; procStartTime?: number; token: string } {
  return JSON.parse(readFileSync(join(storagePath, 'hubcache.lock'), 'utf8'));
}

/** Field 3 (state) and field 22 (starttime) of /proc/PID/stat (a node's comm has no spaces). */
function procFields(pid: number): { state: string; startTime: number } {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return { state: fields[0]!, startTime: Number(fields[19]) };
}

/** Fresh storage roots for the calling describe block, removed after it. */
function tempStores(prefix: string): () => string {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  return () => {
    const d = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(d);
    return d;
  };
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

describe('storage lock: one hubcache process per storage root', () => {
  const storagePath = mkdtempSync(join(tmpdir(), 'hubcache-e2e-lock-'));
  let first: HubcacheProcess;
  let holderRe: RegExp;
  // What a download in progress of the first process looks like: a start-up sweep would delete it.
  const inFlight = join(storagePath, 'tmp', 'blob-in-flight');

  before(async () => {
    first = await startHubcacheProcess({ storagePath, upstreamUrl: UPSTREAM });
    mkdirSync(join(storagePath, 'tmp'), { recursive: true });
    writeFileSync(inFlight, 'partial');
    const lock = readLock(storagePath);
    holderRe = new RegExp(
      `^hubcache: storage root ${escapeRe(storagePath)} is in use by another hubcache process \\(pid ${lock.pid} on host ${escapeRe(lock.hostname)}, started ${escapeRe(lock.startedAt)};`,
    );
  });
  after(async () => {
    await first?.close();
    rmSync(storagePath, { recursive: true, force: true });
  });

  it('the running process holds <root>/hubcache.lock: its pid, hostname and start time', () => {
    const lock = readLock(storagePath);
    assert.equal(lock.pid, first.child.pid);
    assert.equal(lock.hostname, hostname());
    assert.ok(Math.abs(Date.now() - Date.parse(lock.startedAt)) < 120_000, lock.startedAt);
    if (process.platform === 'linux') assert.equal(lock.procStartTime, procFields(first.child.pid!).startTime, 'its /proc start time, to tell a reused pid');
  });

  it('a second `serve` on the same root exits 1 naming the holder, and the first keeps serving with its store untouched', async () => {
    const before = readFileSync(join(storagePath, 'hubcache.lock'), 'utf8');
    const r = await cli(['serve', '--listen', '127.0.0.1:0', '--storage-path', storagePath, '--upstream-url', UPSTREAM, '--log-format', 'json']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, holderRe);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'a message, not a stack trace');
    assert.doesNotMatch(r.stdout, /hubcache started/);
    assert.equal(readFileSync(join(storagePath, 'hubcache.lock'), 'utf8'), before, 'the lock is still the first process’s');
    assert.ok(existsSync(inFlight), 'no sweep of tmp/');
    assert.equal((await rawRequest(`${first.url}/v2/`)).status, 200);
    assert.equal(first.child.exitCode, null);
  });

  it('`prefetch` without --server on that root fails the same way and points at --server', async () => {
    const r = await cli(['prefetch', 'library/alpine:3.20', '--storage-path', storagePath, '--upstream-url', UPSTREAM]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, holderRe);
    assert.match(r.stderr, /^hubcache: .*hubcache prefetch --server http:\/\/HOST:PORT/m);
    assert.equal(r.stdout, '');
    assert.ok(existsSync(inFlight));
    assert.equal((await rawRequest(`${first.url}/v2/`)).status, 200);
  });

  it('`ls` reads next to it without taking the lock', async () => {
    const before = readFileSync(join(storagePath, 'hubcache.lock'), 'utf8');
    const r = await cli(['ls', '--storage-path', storagePath]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(join(storagePath, 'hubcache.lock'), 'utf8'), before);
  });

  it('after SIGKILL the lock stays behind; the next start takes it over at once (pid gone), and a clean stop removes it', async () => {
    const deadPid = first.child.pid;
    await first.stop('SIGKILL');
    assert.equal(readLock(storagePath).pid, deadPid, 'nothing removed the lock of the killed process');

    const next = await startHubcacheProcess({ storagePath, upstreamUrl: UPSTREAM });
    try {
      const taken = await next.waitForLog((l) => l.message === 'stale storage lock taken over');
      assert.equal(taken.level, 'warn');
      assert.equal(taken.reason, 'its process is gone');
      assert.equal((taken.previous as { pid: number }).pid, deadPid);
      assert.equal(readLock(storagePath).pid, next.child.pid);
      assert.ok(!existsSync(inFlight), 'the new owner swept the dead one’s leftovers');
      assert.equal((await rawRequest(`${next.url}/v2/`)).status, 200);
    } finally {
      assert.equal(await next.stop(), 0);
    }
    assert.ok(!existsSync(join(storagePath, 'hubcache.lock')), 'a clean stop releases the lock');
  });
});

describe('storage lock of a dead holder on this host that its pid alone does not show (issue #12)', () => {
  const newStore = tempStores('hubcache-e2e-lock-dead-');

  it('SIGKILLed under a parent that does not reap it (a zombie): the next `serve` takes the lock over at once and starts', async () => {
    const storagePath = newStore();
    // hubcache in the background of a shell that then execs `sleep`: the sleep is its parent and
    // never reaps it, as a supervisor or shell that reaps late doesn't.
    const parent = spawn('sh', ['-c', '"$@" & exec sleep 600 >/dev/null 2>&1', 'sh', process.execPath, BIN, 'serve', '--listen', '127.0.0.1:0', '--storage-path', storagePath, '--upstream-url', UPSTREAM, '--log-format', 'json'], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const closed = once(parent.stdout!, 'end'); // hubcache holds the only write end left
      const rl = createInterface({ input: parent.stdout! });
      for await (const text of rl) if ((JSON.parse(text) as Record<string, unknown>).message === 'hubcache started') break;
      parent.stdout!.resume(); // readline paused it: read on to the end
      const killed = readLock(storagePath).pid;
      assert.notEqual(killed, parent.pid);
      process.kill(killed, 'SIGKILL');
      await closed; // its stdout closed: it has exited
      // From exit to zombie is a moment no event reports: poll /proc, bounded.
      for (let i = 0; procFields(killed).state !== 'Z'; i++) {
        assert.ok(i < 500, `pid ${killed} never became a zombie`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }

      const startedAt = Date.now();
      const next = await startHubcacheProcess({ storagePath, upstreamUrl: UPSTREAM });
      try {
        const taken = await next.waitForLog((l) => l.message === 'stale storage lock taken over');
        assert.equal(taken.reason, 'its process is gone (a zombie: exited, not reaped yet)');
        assert.equal((taken.previous as { pid: number }).pid, killed);
        assert.ok(!next.logs.some((l) => l.message === 'storage lock held, waiting'), 'no wait');
        assert.ok(Date.now() - startedAt < 20_000, 'at once, not after the lock went stale');
        assert.equal(readLock(storagePath).pid, next.child.pid);
        assert.equal(procFields(killed).state, 'Z', 'the old holder was a zombie all along');
        assert.equal((await rawRequest(`${next.url}/v2/`)).status, 200);
      } finally {
        assert.equal(await next.stop(), 0);
      }
    } finally {
      parent.kill();
      await once(parent, 'exit');
    }
  });

  it('a lock naming a live pid of this host with another start time (the pid was reused): the next `serve` takes it over at once and starts', async () => {
    const storagePath = newStore();
    const lockFile = join(storagePath, 'hubcache.lock');
    // This test process stands in for whatever got the dead holder's pid.
    const reused = {
      pid: process.pid,
      hostname: hostname(),
      pidNamespace: readlinkSync('/proc/self/ns/pid'),
      startedAt: '2024-01-02T03:04:05.000Z',
      procStartTime: procFields(process.pid).startTime - 1,
      token: 'pid-reused',
    };
    writeFileSync(lockFile, JSON.stringify(reused));
    const next = await startHubcacheProcess({ storagePath, upstreamUrl: UPSTREAM });
    try {
      const taken = await next.waitForLog((l) => l.message === 'stale storage lock taken over');
      assert.equal(taken.reason, 'its pid belongs to another process now (another start time)');
      assert.deepEqual(taken.previous, reused);
      assert.ok(!next.logs.some((l) => l.message === 'storage lock held, waiting'), 'no wait');
      assert.equal(readLock(storagePath).pid, next.child.pid);
    } finally {
      assert.equal(await next.stop(), 0);
    }
  });
});

describe('storage lock held from another host or PID namespace: serve waits and watches it', () => {
  const newStore = tempStores('hubcache-e2e-lock-wait-');
  const isWaitLine = (l: Record<string, unknown>) => l.message === 'storage lock held, waiting';

  it('nobody refreshes it: serve logs the wait, takes the lock over once its mtime stood still for storage.lockStaleAfter, and starts', async () => {
    const storagePath = newStore();
    const lockFile = join(storagePath, 'hubcache.lock');
    const crashed = { pid: 4242, hostname: 'other-host', startedAt: '2024-01-02T03:04:05.000Z', token: 'crashed-elsewhere' };
    writeFileSync(lockFile, JSON.stringify(crashed));
    // Fresh, and from a host whose clock runs 5 s ahead of ours: only watching the mtime not move can
    // tell it is stale (its age by our clock stays below the threshold for the whole wait).
    const mtime = (Date.now() + 5_000) / 1000;
    utimesSync(lockFile, mtime, mtime);
    mkdirSync(join(storagePath, 'tmp'));
    writeFileSync(join(storagePath, 'tmp', 'blob-left-by-the-crash'), 'partial');

    const startedAt = Date.now();
    const hc = await startHubcacheProcess({ storagePath, upstreamUrl: UPSTREAM, env: { HUBCACHE_STORAGE_LOCK_STALE_AFTER: '2s' } });
    try {
      const elapsed = Date.now() - startedAt;
      const waiting = await hc.waitForLog(isWaitLine);
      assert.equal(waiting.level, 'warn');
      assert.deepEqual(waiting.holder, { pid: 4242, hostname: 'other-host', startedAt: '2024-01-02T03:04:05.000Z' });
      assert.equal(waiting.maxWaitMs, 2_000);
      assert.equal(typeof waiting.lockAgeMs, 'number');
      assert.ok((waiting.lockAgeMs as number) < 0, `the age as found, by our clock: ${waiting.lockAgeMs}`);
      const taken = await hc.waitForLog((l) => l.message === 'stale storage lock taken over');
      assert.equal(taken.reason, 'not refreshed while watched for 2s');
      assert.deepEqual(taken.previous, crashed);
      const order = ['storage lock held, waiting', 'stale storage lock taken over', 'hubcache started'].map((m) => hc.logs.findIndex((l) => l.message === m));
      assert.deepEqual([...order].sort((a, b) => a - b), order, `logged in that order: ${order}`);
      assert.equal(hc.logs.filter(isWaitLine).length, 1, 'the wait is logged once');
      assert.ok(elapsed >= 2_000, `started after the wait, ${elapsed} ms`);
      assert.equal(readLock(storagePath).pid, hc.child.pid);
      assert.ok(!existsSync(join(storagePath, 'tmp', 'blob-left-by-the-crash')), 'swept after the takeover');
      assert.equal((await rawRequest(`${hc.url}/v2/`)).status, 200);
    } finally {
      assert.equal(await hc.stop(), 0);
    }
  });

  it('SIGTERM while waiting: the wait ends at once, exit 0, the store and its lock untouched', async () => {
    const storagePath = newStore();
    const lockFile = join(storagePath, 'hubcache.lock');
    const foreign = { pid: 4343, hostname: 'other-host', startedAt: '2024-01-02T03:04:05.000Z', token: 'held-elsewhere' };
    writeFileSync(lockFile, JSON.stringify(foreign));
    mkdirSync(join(storagePath, 'tmp'));
    writeFileSync(join(storagePath, 'tmp', 'blob-in-progress-elsewhere'), 'partial');
    // The default 30 s threshold: only the signal can end this wait quickly.
    const child = spawn(process.execPath, [BIN, 'serve', '--listen', '127.0.0.1:0', '--storage-path', storagePath, '--upstream-url', UPSTREAM, '--log-format', 'json'], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: Array<Record<string, unknown>> = [];
    const exit = once(child, 'exit');
    const rl = createInterface({ input: child.stdout! });
    for await (const text of rl) {
      lines.push(JSON.parse(text) as Record<string, unknown>);
      if (isWaitLine(lines.at(-1)!)) break;
    }
    const signalled = Date.now();
    child.kill('SIGTERM');
    const [code] = await exit;
    assert.equal(code, 0);
    assert.ok(Date.now() - signalled < 10_000, 'ended by the signal, not by the 30 s wait');
    rl.close();
    assert.deepEqual(JSON.parse(readFileSync(lockFile, 'utf8')), foreign, 'the other holder keeps its lock');
    assert.ok(existsSync(join(storagePath, 'tmp', 'blob-in-progress-elsewhere')), 'nothing swept');
  });

  describe('a live holder on another host, refreshing the lock', () => {
    const storagePath = newStore();
    const lockFile = join(storagePath, 'hubcache.lock');
    let holder: ReturnType<typeof spawn>;
    let holderRe: RegExp;

    before(async () => {
      // A stand-in for a hubcache on another host sharing the volume: it writes its lock and keeps
      // setting the mtime, as the heartbeat does (faster here, so the test doesn't wait 10 s).
      const script = `
        const { utimesSync, writeFileSync } = require('node:fs');
        const path = ${JSON.stringify(lockFile)};
        writeFileSync(path, JSON.stringify({ pid: process.pid, hostname: 'other-host', startedAt: '2024-05-06T07:08:09.000Z', token: 'alive-elsewhere' }));
        setInterval(() => { const t = Date.now() / 1000; utimesSync(path, t, t); }, 200);
        console.log('ready');`;
      holder = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      const [line] = (await once(createInterface({ input: holder.stdout! }), 'line')) as [string];
      assert.equal(line, 'ready');
      holderRe = new RegExp(
        `^hubcache: storage root ${escapeRe(storagePath)} is in use by another hubcache process \\(pid ${holder.pid} on host other-host, started 2024-05-06T07:08:09.000Z;`,
      );
    });
    after(async () => {
      if (holder && holder.exitCode === null) {
        holder.kill();
        await once(holder, 'exit');
      }
    });

    it('`serve` (default threshold) waits, sees the mtime move, and exits 1 naming the holder, leaving its lock alone', async () => {
      const startedAt = Date.now();
      const r = await cli(['serve', '--listen', '127.0.0.1:0', '--storage-path', storagePath, '--upstream-url', UPSTREAM, '--log-format', 'json']);
      const elapsed = Date.now() - startedAt;
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const lines = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
      const waiting = lines.filter(isWaitLine);
      assert.equal(waiting.length, 1, r.stdout);
      assert.deepEqual(waiting[0]!.holder, { pid: holder.pid, hostname: 'other-host', startedAt: '2024-05-06T07:08:09.000Z' });
      assert.equal(waiting[0]!.maxWaitMs, 30_000);
      assert.match(r.stderr, holderRe);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'a message, not a stack trace');
      assert.doesNotMatch(r.stdout, /hubcache started|stale storage lock taken over/);
      assert.ok(elapsed < 15_000, `gave up as soon as the mtime moved, not after the 30 s threshold: ${elapsed} ms`);
      assert.equal(readLock(storagePath).token, 'alive-elsewhere');
      assert.ok(Date.now() - statSync(lockFile).mtimeMs < 5_000, 'the holder still refreshes its lock');
    });

    it('`prefetch` without --server does not wait: it fails at once naming the holder', async () => {
      const r = await cli(['prefetch', 'library/alpine:3.20', '--storage-path', storagePath, '--upstream-url', UPSTREAM]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, holderRe);
      assert.doesNotMatch(r.stderr, /storage lock held, waiting/);
      assert.equal(r.stdout, '');
      assert.equal(readLock(storagePath).token, 'alive-elsewhere');
    });
  });
});
