/**
 * One process owns a storage root (docs/storage-layout.md): against real hubcache processes, a
 * second `serve` and a `prefetch` without --server on a served store fail at start naming the lock
 * holder, without touching the store the first one is writing; `ls` still reads next to it; a lock
 * left by a SIGKILLed process is taken over at once by the next start; a clean stop removes it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
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

/** `hubcache ARGS` in a clean environment; killed after 60 s so that a hang fails instead of stalling. */
async function cli(args: string[]): Promise<CliResult> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

function readLock(storagePath: string): { pid: number; hostname: string; startedAt: string; token: string } {
  return JSON.parse(readFileSync(join(storagePath, 'hubcache.lock'), 'utf8'));
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
