import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { acquireStoreLock, parseProcStat, StoreLockedError, StoreLockLostError, type LockRecord, type LockWait, type StoreLock, type StoreLockOptions } from './store-lock.js';

const MODULE = pathToFileURL(fileURLToPath(new URL('./store-lock.ts', import.meta.url))).href;

let root: string;
let lockPath: string;
const held: StoreLock[] = [];

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'hubcache-lock-'));
  lockPath = join(root, 'hubcache.lock');
});
afterEach(async () => {
  await Promise.all(held.splice(0).map((l) => l.release()));
  await rm(root, { recursive: true, force: true });
});

/**
 * Acquires with no real timer (tests drive the heartbeat), released after the test. A wait for the
 * holder fails the test unless it injects its own clock and sleep (`fakeWait`): none really sleeps.
 */
async function acquire(opts: Partial<StoreLockOptions> = {}): Promise<StoreLock> {
  const lock = await acquireStoreLock({ root, schedule: () => () => {}, sleep: () => Promise.reject(new Error('unexpected wait for the lock')), ...opts });
  held.push(lock);
  return lock;
}

/**
 * The wait's seams, faked: a monotonic clock that only the injected sleep advances, by exactly what
 * was asked; `onSleep(n)` runs after the n-th sleep, before the lock is read again (the holder's
 * move: refresh, release, replace). Records the onWait calls and every sleep's length.
 */
interface FakeWait {
  clock: number;
  readonly sleeps: number[];
  readonly waits: LockWait[];
  readonly opts: Pick<StoreLockOptions, 'monotonic' | 'sleep' | 'onWait'>;
}

function fakeWait(onSleep?: (n: number) => Promise<void> | void): FakeWait {
  const w: FakeWait = {
    clock: 0,
    sleeps: [],
    waits: [],
    opts: {
      monotonic: () => w.clock,
      sleep: async (ms) => {
        w.clock += ms;
        w.sleeps.push(ms);
        await onSleep?.(w.sleeps.length);
      },
      onWait: (x) => void w.waits.push(x),
    },
  };
  return w;
}

/** Sets the lock's mtime, as its holder's heartbeat would. */
async function touchLock(atMs: number): Promise<void> {
  await utimes(lockPath, atMs / 1000, atMs / 1000);
}

async function readRecord(): Promise<LockRecord> {
  return JSON.parse(await readFile(lockPath, 'utf8')) as LockRecord;
}

/** A lock file written by hand, as another process would have left it; `ageMs` back-dates its mtime. */
async function writeLock(record: Partial<LockRecord>, ageMs = 0): Promise<LockRecord> {
  const full = { pid: process.ppid, hostname: hostname(), startedAt: '2024-01-02T03:04:05.000Z', token: 'someone-else', ...record } as LockRecord;
  await writeFile(lockPath, JSON.stringify(full));
  const t = (Date.now() - ageMs) / 1000;
  await utimes(lockPath, t, t);
  return full;
}

/** Our own identity (hostname and PID namespace), read from a lock we take and give back. */
async function ownIdentity(): Promise<Pick<LockRecord, 'hostname' | 'pidNamespace'>> {
  const lock = await acquireStoreLock({ root, schedule: () => () => {} });
  await lock.release();
  return { hostname: lock.record.hostname, pidNamespace: lock.record.pidNamespace };
}

async function leftoversInTmp(): Promise<string[]> {
  return readdir(join(root, 'tmp')).catch(() => []);
}

/** A pid that was just in use on this host and whose process has exited (and been reaped). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  assert.equal(r.status, 0);
  return r.pid!;
}

/** Field 3 (state) and field 22 (starttime) of /proc/PID/stat, read without the module's parser (a node's comm has no spaces). */
function procFields(pid: number | 'self'): { state: string; startTime: number } {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return { state: fields[0]!, startTime: Number(fields[19]) };
}

/**
 * Polls until `probe` returns a value. Only for a kernel state no event reports (a process
 * becoming a zombie); bounded, so a wrong expectation fails instead of hanging.
 */
async function until<T>(what: string, probe: () => T | undefined): Promise<T> {
  for (let i = 0; i < 500; i++) {
    const v = probe();
    if (v !== undefined) return v;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return assert.fail(`timed out waiting for ${what}`);
}

/**
 * A zombie on this host, as a holder killed under a parent that reaps late leaves one (issue #12):
 * `sh` starts a child blocked reading fd 3, then execs `sleep`, which never reaps children; closing
 * our end of fd 3 ends the child, and it stays a zombie while the sleep runs. `parent` is the sleep;
 * killing it lets init reap the zombie.
 */
async function zombie(): Promise<{ pid: number; parent: ChildProcess }> {
  const parent = spawn('sh', ['-c', '(read x <&3) >/dev/null & echo $!; exec sleep 600 3<&- >/dev/null'], { stdio: ['ignore', 'pipe', 'inherit', 'pipe'] });
  let out = '';
  parent.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  await once(parent.stdout!, 'end'); // sh gave up its stdout: it is exec'ing the sleep
  const pid = Number(out.trim());
  await until('sh to become sleep', () => (readFileSync(`/proc/${parent.pid}/comm`, 'utf8').trim() === 'sleep' || undefined));
  (parent.stdio[3] as NodeJS.WritableStream).end();
  await until(`pid ${pid} to be a zombie`, () => (procFields(pid).state === 'Z' || undefined));
  return { pid, parent };
}

describe('/proc/PID/stat', () => {
  const cat = '16345 (cat) R 16340 16340 13125 0 -1 4194304 101 0 0 0 0 0 0 0 20 0 1 0 65751 3133440 383 18446744073709551615 93913150500864 0';

  it('state is field 3 and starttime field 22', () => {
    assert.deepEqual(parseProcStat(`${cat}\n`), { state: 'R', startTime: 65751 });
  });

  it('a command name holding spaces and parentheses is skipped up to the last ")"', () => {
    assert.deepEqual(parseProcStat(cat.replace('(cat) R', '(evil) R 1 (x y)) Z')), { state: 'Z', startTime: 65751 });
    assert.deepEqual(parseProcStat(cat.replace('(cat)', '()')), { state: 'R', startTime: 65751 });
  });

  it('anything else is not a stat line', () => {
    for (const text of ['', 'garbage', '1 (x) R 1 2 3', cat.replace(' R ', ' RR '), cat.replace(' 65751 ', ' -5 '), cat.replace(' 65751 ', ' 99999999999999999999 ')]) {
      assert.equal(parseProcStat(text), undefined, text);
    }
  });
});

describe('storage lock', () => {
  it('acquire writes pid, hostname and a token; release removes it; the root can then be locked again', async () => {
    const lock = await acquire();
    const rec = await readRecord();
    assert.deepEqual(rec, lock.record);
    assert.equal(rec.pid, process.pid);
    assert.equal(rec.hostname, hostname());
    assert.ok(!Number.isNaN(Date.parse(rec.startedAt)));
    if (process.platform === 'linux') assert.equal(rec.procStartTime, procFields('self').startTime, 'the /proc start time, in clock ticks since boot');
    assert.equal(lock.takenOver, undefined);
    await lock.release();
    await assert.rejects(stat(lockPath), { code: 'ENOENT' });
    await lock.release(); // idempotent
    const again = await acquire();
    assert.notEqual(again.record.token, lock.record.token);
  });

  it('creates a missing root', async () => {
    const nested = join(root, 'a', 'b');
    const lock = await acquireStoreLock({ root: nested, schedule: () => () => {} });
    held.push(lock);
    assert.ok((await stat(join(nested, 'hubcache.lock'))).isFile());
  });

  it('a live holder on this host: acquire fails at once (its pid is checked: no wait) naming the root, pid, host and start time, and leaves its lock alone', async () => {
    const holder = await writeLock({ ...(await ownIdentity()), pid: process.ppid }); // the test runner: alive
    const before = await readFile(lockPath, 'utf8');
    const err = await acquire().then(
      () => assert.fail('acquired a held lock'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof StoreLockedError);
    assert.equal(err.code, 'STORE_LOCKED');
    assert.deepEqual(err.holder, holder);
    assert.ok(err.message.includes(`storage root ${root} is in use by another hubcache process`), err.message);
    assert.ok(err.message.includes(`pid ${process.ppid} on host ${hostname()}, started 2024-01-02T03:04:05.000Z`), err.message);
    assert.equal(await readFile(lockPath, 'utf8'), before);
  });

  it('a second acquire in the same process fails too', async () => {
    await acquire();
    await assert.rejects(acquire(), (e: unknown) => e instanceof StoreLockedError && /already open in this process/.test(e.message));
  });

  it('same host, pid gone: taken over at once, whatever the mtime', async () => {
    const old = await writeLock({ ...(await ownIdentity()), pid: deadPid() });
    const lock = await acquire();
    assert.deepEqual(lock.takenOver, { holder: old, reason: 'its process is gone' });
    assert.equal((await readRecord()).token, lock.record.token);
    assert.deepEqual(await leftoversInTmp(), [], 'the stale file moved aside is removed');
  });

  it('same host, the holder a zombie (killed, its parent has not reaped it yet): taken over at once, with or without a recorded start time (issue #12)', async () => {
    const id = await ownIdentity();
    const z = await zombie();
    try {
      for (const record of [{ pid: z.pid }, { pid: z.pid, procStartTime: procFields(z.pid).startTime }]) {
        const old = await writeLock({ ...id, ...record });
        const lock = await acquire();
        assert.deepEqual(lock.takenOver, { holder: old, reason: 'its process is gone (a zombie: exited, not reaped yet)' });
        assert.equal((await readRecord()).token, lock.record.token);
        await lock.release();
      }
      assert.equal(procFields(z.pid).state, 'Z', 'still a zombie throughout');
    } finally {
      z.parent.kill();
      await once(z.parent, 'exit');
    }
  });

  it('same host, a live pid with another start time than the holder recorded (the pid was reused): taken over at once; with the same start time: refused', async () => {
    const id = await ownIdentity();
    const runner = procFields(process.ppid); // the test runner: alive
    const reused = await writeLock({ ...id, pid: process.ppid, procStartTime: runner.startTime - 1 });
    const lock = await acquire();
    assert.deepEqual(lock.takenOver, { holder: reused, reason: 'its pid belongs to another process now (another start time)' });
    await lock.release();
    const alive = await writeLock({ ...id, pid: process.ppid, procStartTime: runner.startTime });
    await assert.rejects(acquire(), (e: unknown) => e instanceof StoreLockedError && e.holder?.procStartTime === alive.procStartTime);
    assert.equal((await readRecord()).token, alive.token);
  });

  it('same host, our own pid but not our lock (a previous process that had our pid, e.g. before a reboot): taken over', async () => {
    await writeLock({ ...(await ownIdentity()), pid: process.pid });
    const lock = await acquire();
    assert.equal(lock.takenOver?.reason, 'its pid is this process');
  });

  it('failFast (prefetch): another host (or another PID namespace), refreshed recently: refused at once, no wait, even if that pid is not alive here', async () => {
    const id = await ownIdentity();
    const w = fakeWait();
    await writeLock({ hostname: 'other-host', pid: deadPid() }, 5_000);
    await assert.rejects(acquire({ failFast: true, ...w.opts }), (e: unknown) => e instanceof StoreLockedError && /pid \d+ on host other-host/.test(e.message) && / refreshed 5s ago/.test(e.message));
    await writeLock({ ...id, pidNamespace: 'pid:[1]', pid: deadPid() });
    await assert.rejects(acquire({ failFast: true, ...w.opts }), StoreLockedError);
    await writeFile(lockPath, '');
    await assert.rejects(acquire({ failFast: true, ...w.opts }), (e: unknown) => e instanceof StoreLockedError && /unreadable lock file/.test(e.message));
    assert.deepEqual(w.waits, [], 'no onWait');
    assert.deepEqual(w.sleeps, [], 'no sleep');
  });

  it('another PID namespace with our hostname (a restarted container), lock fresh: watched; an mtime that does not move for staleMs by our monotonic clock is taken over', async () => {
    const crashed = await writeLock({ ...(await ownIdentity()), pidNamespace: 'pid:[1]', pid: 1 });
    const w = fakeWait();
    const lock = await acquire(w.opts);
    assert.equal(w.waits.length, 1, 'onWait once');
    const { ageMs, ...wait } = w.waits[0]!;
    assert.deepEqual(wait, { lockPath, holder: crashed, maxWaitMs: 30_000 });
    assert.ok(ageMs >= 0 && ageMs < 5_000, String(ageMs));
    assert.equal(w.clock, 30_000, 'waited the stale threshold, by the injected clock, and not longer');
    assert.ok(w.sleeps.every((ms) => ms > 0 && ms <= 1_000), `polls at most every second: ${w.sleeps}`);
    assert.deepEqual(lock.takenOver, { holder: crashed, reason: 'not refreshed while watched for 30s' });
    assert.equal((await readRecord()).token, lock.record.token);
    assert.deepEqual(await leftoversInTmp(), []);
  });

  it('another host whose clock is an hour ahead (mtime in the future): still taken over after staleMs watched, whatever the clocks say', async () => {
    const other = await writeLock({ hostname: 'other-host', pid: 4242 }, -3_600_000);
    const w = fakeWait();
    const lock = await acquire({ staleMs: 12_000, ...w.opts });
    assert.equal(w.waits[0]!.maxWaitMs, 12_000);
    assert.ok(w.waits[0]!.ageMs < -3_500_000, 'the age is reported as found');
    assert.equal(w.clock, 12_000);
    assert.deepEqual(lock.takenOver, { holder: other, reason: 'not refreshed while watched for 12s' });
  });

  it('another host, lock 25s old when watching starts: the absolute-age rule still applies during the wait', async () => {
    const other = await writeLock({ hostname: 'other-host', pid: 4242 }, 25_000);
    const w = fakeWait();
    const epoch = Date.now();
    const lock = await acquire({ ...w.opts, now: () => epoch + w.clock });
    assert.equal(w.waits.length, 1);
    assert.ok(w.clock >= 5_000 && w.clock <= 7_000, `stale by its age after about 5s more, not 30s: waited ${w.clock} ms`);
    assert.equal(lock.takenOver?.holder?.token, other.token);
    assert.match(lock.takenOver!.reason, /^not refreshed for 3[01]s$/);
  });

  it('another host: its holder refreshes the lock while we watch → alive: refused naming it, its lock untouched', async () => {
    const other = await writeLock({ hostname: 'other-host', pid: 4242 });
    const refreshedAt = (Math.floor(Date.now() / 1000) + 1) * 1000; // whole seconds: exact as an mtime
    const w = fakeWait(async (n) => {
      if (n === 3) await touchLock(refreshedAt);
    });
    const before = await readFile(lockPath, 'utf8');
    const err = await acquire(w.opts).then(
      () => assert.fail('acquired a lock whose holder is alive'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof StoreLockedError);
    assert.deepEqual(err.holder, other);
    assert.ok(err.message.includes(`storage root ${root} is in use by another hubcache process (pid 4242 on host other-host, started 2024-01-02T03:04:05.000Z;`), err.message);
    assert.equal(w.clock, 3_000, 'stopped watching at the refresh');
    assert.equal(await readFile(lockPath, 'utf8'), before);
    assert.equal((await stat(lockPath)).mtimeMs, refreshedAt);
    assert.deepEqual(await leftoversInTmp(), []);
  });

  it('another host: an abort while we watch (SIGTERM while starting) rejects with its reason at once, the lock untouched', async () => {
    await writeLock({ hostname: 'other-host', pid: 4242 });
    const before = await readFile(lockPath, 'utf8');
    const stop = new AbortController();
    const w = fakeWait((n) => {
      if (n === 2) stop.abort(new Error('SIGTERM while starting'));
    });
    await assert.rejects(acquire({ ...w.opts, signal: stop.signal }), /SIGTERM while starting/);
    assert.equal(w.sleeps.length, 2, 'no further polling after the abort');
    assert.equal(await readFile(lockPath, 'utf8'), before);
  });

  it('another host: the lock released while we watch → acquired, nothing taken over', async () => {
    await writeLock({ hostname: 'other-host', pid: 4242 });
    const w = fakeWait(async (n) => {
      if (n === 2) await rm(lockPath);
    });
    const lock = await acquire(w.opts);
    assert.equal(w.clock, 2_000);
    assert.equal(lock.takenOver, undefined);
    assert.equal((await readRecord()).token, lock.record.token);
  });

  it('another host: the lock replaced while we watch (another starter got it) → refused naming the new holder, with no second wait', async () => {
    await writeLock({ hostname: 'other-host', pid: 4242 });
    const w = fakeWait(async (n) => {
      if (n === 2) await writeLock({ hostname: 'third-host', pid: 77, token: 'newcomer' });
    });
    await assert.rejects(acquire(w.opts), (e: unknown) => e instanceof StoreLockedError && e.holder?.token === 'newcomer' && /pid 77 on host third-host/.test(e.message));
    assert.equal(w.waits.length, 1);
    assert.equal(w.clock, 2_000);
    assert.equal((await readRecord()).token, 'newcomer');
  });

  it('two starters watching the same dead holder’s lock: exactly one takes it over, the other is refused naming the winner', async () => {
    await writeLock({ hostname: 'other-host', pid: 4242 });
    const [a, b] = [fakeWait(), fakeWait()];
    const results = await Promise.allSettled([acquire(a.opts), acquire(b.opts)]);
    const won = results.filter((r): r is PromiseFulfilledResult<StoreLock> => r.status === 'fulfilled');
    assert.equal(won.length, 1, results.map((r) => r.status).join(', '));
    const lost = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!;
    assert.ok(lost.reason instanceof StoreLockedError && lost.reason.holder?.token === won[0]!.value.record.token, String(lost.reason));
    assert.equal((await readRecord()).token, won[0]!.value.record.token);
    assert.deepEqual(await leftoversInTmp(), []);
  });

  it('the heartbeat defaults to a third of the stale threshold', async () => {
    let every = 0;
    await acquire({ staleMs: 3_000, schedule: (_fn, ms) => ((every = ms), () => {}) });
    assert.equal(every, 1_000);
  });

  it('another host, mtime older than the stale threshold: taken over', async () => {
    const old = await writeLock({ hostname: 'other-host', pid: 1 }, 60_000);
    const lock = await acquire();
    assert.equal(lock.takenOver?.holder?.hostname, old.hostname);
    assert.match(lock.takenOver!.reason, /^not refreshed for 6\ds$/);
    // The threshold is an option.
    await lock.release();
    await writeLock({ hostname: 'other-host', pid: 1 }, 60_000);
    await assert.rejects(acquire({ staleMs: 120_000, heartbeatMs: 40_000, failFast: true }), StoreLockedError);
  });

  it('an unreadable lock file is held until its mtime is stale, or watched like another host’s', async () => {
    await writeFile(lockPath, '');
    await assert.rejects(acquire({ failFast: true }), (e: unknown) => e instanceof StoreLockedError && e.holder === undefined && /unreadable lock file/.test(e.message));
    const w = fakeWait();
    const watched = await acquire(w.opts);
    assert.deepEqual([w.waits[0]!.holder, w.clock], [undefined, 30_000]);
    assert.deepEqual(watched.takenOver, { holder: undefined, reason: 'not refreshed while watched for 30s' });
    await watched.release();
    await writeFile(lockPath, '');
    const t = (Date.now() - 60_000) / 1000;
    await utimes(lockPath, t, t);
    assert.equal((await acquire()).takenOver?.holder, undefined);
  });

  it('heartbeat: scheduled every heartbeatMs; each beat sets the mtime to the injected clock', async () => {
    let tick: (() => Promise<void>) | undefined;
    let every = 0;
    let cancelled = false;
    let clock = Date.parse('2030-01-01T00:00:00Z');
    const lock = await acquire({
      heartbeatMs: 7_000,
      now: () => clock,
      schedule: (fn, ms) => {
        tick = fn;
        every = ms;
        return () => (cancelled = true);
      },
    });
    assert.equal(every, 7_000);
    assert.equal(lock.record.startedAt, '2030-01-01T00:00:00.000Z');
    assert.equal((await stat(lockPath)).mtimeMs, clock, 'a new lock carries the holder clock too');
    clock += 7_000;
    await tick!();
    assert.equal((await stat(lockPath)).mtimeMs, clock);
    await lock.release();
    assert.ok(cancelled, 'release stops the heartbeat');
  });

  it('heartbeat: a lock taken over by another process is reported once, and release leaves the new holder’s lock in place', async () => {
    let tick: (() => Promise<void>) | undefined;
    const lost: StoreLockLostError[] = [];
    const lock = await acquire({ schedule: (fn) => ((tick = fn), () => {}), onCompromised: (e) => lost.push(e) });
    const other = await writeLock({ hostname: 'other-host', pid: 4242, token: 'theirs' });
    const before = await stat(lockPath);
    await tick!();
    await tick!();
    assert.equal(lost.length, 1);
    assert.deepEqual(lost[0]!.holder, other);
    assert.match(lost[0]!.message, /taken over by pid 4242 on host other-host/);
    assert.equal((await stat(lockPath)).mtimeMs, before.mtimeMs, 'not refreshed: not ours');
    await lock.release();
    assert.equal((await readRecord()).token, 'theirs');
  });

  it('heartbeat: a removed lock is reported as lost', async () => {
    let tick: (() => Promise<void>) | undefined;
    const lost: StoreLockLostError[] = [];
    await acquire({ schedule: (fn) => ((tick = fn), () => {}), onCompromised: (e) => lost.push(e) });
    await rm(lockPath);
    await tick!();
    assert.equal(lost.length, 1);
    assert.match(lost[0]!.message, /no longer ours/);
  });

  it('release removes only our own lock', async () => {
    const lock = await acquire();
    await writeLock({ token: 'someone-else', hostname: 'other-host' });
    await lock.release();
    assert.equal((await readRecord()).token, 'someone-else');
  });

  it('two acquires racing for one stale lock: exactly one wins', async () => {
    const stale = { ...(await ownIdentity()), pid: deadPid() };
    for (let i = 0; i < 20; i++) {
      await writeLock({ ...stale, token: `stale-${i}` });
      const results = await Promise.allSettled([acquire(), acquire()]);
      const won = results.filter((r): r is PromiseFulfilledResult<StoreLock> => r.status === 'fulfilled');
      assert.equal(won.length, 1, `round ${i}: ${results.map((r) => r.status).join(', ')}`);
      const lost = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.ok(lost?.reason instanceof StoreLockedError, String(lost?.reason));
      assert.equal((await readRecord()).token, won[0]!.value.record.token);
      await won[0]!.value.release();
    }
  });

  it('a stale lock another starter is taking over (a live claim on it) is left to that starter; a claim its starter left behind crashing is passed over once stale', async () => {
    await writeLock({ ...(await ownIdentity()), pid: deadPid() });
    // The claim's name is derived from the stale lock's bytes and mtime (store-lock.ts, takeOver).
    const { mtimeMs } = await stat(lockPath);
    const id = createHash('sha256').update(`${mtimeMs}\n${await readFile(lockPath, 'utf8')}`).digest('hex').slice(0, 16);
    await mkdir(join(root, 'tmp'), { recursive: true });
    const claim = join(root, 'tmp', `lock-claim-${id}-1`);
    await writeFile(claim, JSON.stringify({ pid: process.ppid, hostname: 'claimer-host', startedAt: '2024-05-06T07:08:09.000Z', token: 'claimer' }));
    await assert.rejects(acquire(), (e: unknown) => e instanceof StoreLockedError && /pid \d+ on host claimer-host/.test(e.message));
    const t = (Date.now() - 60_000) / 1000;
    await utimes(claim, t, t);
    const lock = await acquire();
    assert.equal(lock.takenOver?.reason, 'its process is gone');
    assert.deepEqual(await leftoversInTmp(), [], 'the dead claim is removed too');
  });

  it('a lock is never seen empty: a reader polling from another process sees no lock or a whole record (a racing starter took an empty one for unreadable and waited)', async () => {
    const script = `
      const { readFileSync } = require('node:fs');
      let reads = 0, partial = 0, stop = false;
      process.stdin.on('end', () => (stop = true)).resume();
      const spin = () => {
        for (let i = 0; i < 2000; i++) {
          try { const t = readFileSync(${JSON.stringify(lockPath)}, 'utf8'); reads++; try { JSON.parse(t); } catch { partial++; } } catch {}
        }
        if (stop) console.log(JSON.stringify({ reads, partial })); else setImmediate(spin);
      };
      console.log('ready');
      spin();`;
    const reader = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: reader.stdout! })[Symbol.asyncIterator]();
    assert.equal((await lines.next()).value, 'ready');
    for (let i = 0; i < 300; i++) await (await acquireStoreLock({ root, schedule: () => () => {} })).release();
    reader.stdin!.end();
    const { reads, partial } = JSON.parse(String((await lines.next()).value)) as { reads: number; partial: number };
    assert.ok(reads > 0, 'the reader saw the lock at all');
    assert.equal(partial, 0, `${partial} of ${reads} reads found the lock empty or half-written`);
  });

  it('processes racing for a stale lock: exactly one wins, and its exit removes the lock', async () => {
    await writeLock({ ...(await ownIdentity()), pid: deadPid() });
    // Each child loads the module, says "ready", tries once on "go" (all at once) and reports; the
    // winner holds the lock until its stdin closes, then exits without release().
    const script = `
      import { createInterface } from 'node:readline';
      import { acquireStoreLock } from ${JSON.stringify(MODULE)};
      const rl = createInterface({ input: process.stdin });
      rl.once('line', async () => {
        try { await acquireStoreLock({ root: ${JSON.stringify(root)} }); console.log('won'); }
        catch (e) { console.log(e.code === 'STORE_LOCKED' ? 'locked' : 'error ' + e.message); }
        rl.once('close', () => process.exit(0));
      });
      console.log('ready');`;
    const children = Array.from({ length: 4 }, () => spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] }));
    const lines = children.map((c) => createInterface({ input: c.stdout! })[Symbol.asyncIterator]());
    assert.deepEqual(await Promise.all(lines.map(async (l) => (await l.next()).value)), ['ready', 'ready', 'ready', 'ready']);
    for (const c of children) c.stdin!.write('go\n');
    const said = await Promise.all(lines.map(async (l) => String((await l.next()).value)));
    assert.deepEqual([...said].sort(), ['locked', 'locked', 'locked', 'won']);
    const winner = children[said.indexOf('won')]!;
    assert.equal((await readRecord()).pid, winner.pid);
    await Promise.all(children.map((c) => (c.stdin!.end(), once(c, 'exit'))));
    await assert.rejects(stat(lockPath), { code: 'ENOENT' }, 'the exit handler removed the lock');
    assert.deepEqual(await leftoversInTmp(), [], 'no claim files left');
  });
});
