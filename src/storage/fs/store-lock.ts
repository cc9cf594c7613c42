/**
 * The ownership lock of a storage root (`<root>/hubcache.lock`, see layout.ts): one process owns a
 * root, because `FsBlobStore.init()` sweeps tmp/ and would delete another process's writes in
 * progress.
 *
 * Why our own code and not `proper-lockfile`: that library (mkdir + mtime) records no holder,
 * so it can neither name the process in the way nor take over at once from a dead pid on the same
 * host (it waits for the mtime to age), and its stale takeover is rmdir-then-mkdir, which lets two
 * starters both believe they hold the lock (moxystudio/node-proper-lockfile#121, open).
 *
 * The protocol:
 * - Acquire: create the lock file exclusively (written under a temporary name, then link(2)ed into
 *   place, which fails if it exists: local filesystems and NFS) holding JSON
 *   {pid, hostname, pidNamespace, startedAt, procStartTime, token}; the random token is what "ours"
 *   means. A lock is never seen empty.
 * - Heartbeat: the holder sets the file's mtime to its clock every `heartbeatMs` (an unref'd timer).
 * - Stale: a holder on this host (same hostname and PID namespace, the only case where a pid means
 *   anything to us) whose process is gone: its pid is free (ESRCH), or /proc/PID/stat shows a
 *   zombie (exited, its parent hasn't reaped it yet: a supervisor or shell that reaps late, issue
 *   #12) or a process with another start time (the pid was reused); or any lock whose mtime is
 *   more than `staleMs` old by our wall clock, so that a crash on another host sharing the volume
 *   doesn't block forever (this rule assumes clocks within a few seconds of each other).
 * - Wait: a holder whose liveness we can't check (another host, or this hostname in another PID
 *   namespace: a container restarted after a crash looks exactly like that) and whose lock is not
 *   stale yet is watched rather than refused, unless `failFast`: its mtime moving is a live
 *   holder's heartbeat (refused); the lock disappearing is a release (acquired); an mtime that
 *   didn't move for `staleMs` by our monotonic clock is a dead holder (taken over). Judging by
 *   whether the mtime moves, not by its value, is immune to clock skew between hosts. One wait per
 *   acquire, so it ends within about `staleMs`.
 * - Takeover: a starter that judged the lock stale first creates, with O_EXCL, a claim file whose
 *   name derives from that lock's bytes and mtime (`tmp/lock-claim-<hash>-<n>`): exactly one
 *   starter may remove that particular lock, and a starter that judged an older lock can never
 *   remove a newer one (its claim names the old one, and it re-reads the lock under the claim).
 *   Removing a lock by name after merely looking at it is the race of proper-lockfile#121 and
 *   npm/lockfile#4: two starters see the same stale lock, one replaces it, the other deletes the
 *   replacement. A claim left by a starter that crashed mid-takeover is passed over once it is
 *   `staleMs` old (claim n+1); the next owner's sweep of tmp/ removes leftovers. (That sweep can't
 *   hit a claim that matters: nobody can judge the owner's fresh lock stale.)
 */
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync, unlinkSync } from 'node:fs';
import { constants, copyFile, link, mkdir, open, readFile, readlink, rename, unlink, utimes } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { StoreOwnedError } from '../storage.js';
import { isNotFound } from './fs-util.js';
import { StorageLayout } from './layout.js';

/** What the lock file holds. */
export interface LockRecord {
  readonly pid: number;
  readonly hostname: string;
  /** `/proc/self/ns/pid` (Linux): containers with the same hostname don't share pids. */
  readonly pidNamespace?: string;
  /** ISO time the lock was taken. */
  readonly startedAt: string;
  /**
   * The holder's start time as /proc/PID/stat shows it (field 22, `starttime`: clock ticks since
   * boot; Linux), so that a live pid with another start time is known to be another process.
   * Absent in locks written before it was recorded, and off Linux.
   */
  readonly procStartTime?: number;
  /** Random; identifies this acquisition, so that release and heartbeat touch only our own lock. */
  readonly token: string;
}

export interface StoreLockOptions {
  /** The storage root; created when missing. */
  readonly root: string;
  /**
   * A lock whose mtime is older than this, or that a waiting starter watched not move for this
   * long, is taken over. Every process sharing a store must use the same value. Default 30 s.
   */
  readonly staleMs?: number;
  /** How often the holder refreshes the mtime; well below `staleMs`. Default `staleMs` / 3 (10 s). */
  readonly heartbeatMs?: number;
  /**
   * When the holder's liveness can't be checked from here (another host, or another PID namespace)
   * and its lock isn't stale yet: throw `StoreLockedError` at once instead of watching the lock for
   * up to `staleMs` (see the protocol above). For callers that must not block (`prefetch`).
   */
  readonly failFast?: boolean;
  /** Called once when acquire starts watching such a lock, before it waits. */
  readonly onWait?: (wait: LockWait) => void;
  /** Ends a wait early (a SIGTERM while starting): acquire rejects with the signal's reason. */
  readonly signal?: AbortSignal;
  /** Epoch ms; injected by tests. */
  readonly now?: () => number;
  /** Monotonic ms that time the wait (the wall clock may jump); injected by tests. Default performance.now. */
  readonly monotonic?: () => number;
  /**
   * Resolves after `ms`; the wait polls the lock with it. Injected by tests. Default: a (ref'd)
   * setTimeout, since nothing else may keep a waiting start's process alive.
   */
  readonly sleep?: (ms: number) => Promise<void>;
  /** Runs `tick` every `everyMs` and returns a cancel function. Default: an unref'd setInterval. */
  readonly schedule?: (tick: () => Promise<void>, everyMs: number) => () => void;
  /** Called once if the heartbeat finds the lock gone or owned by another process. */
  readonly onCompromised?: (err: StoreLockLostError) => void;
}

/** A held lock acquire is about to watch (see `StoreLockOptions.onWait`). */
export interface LockWait {
  readonly lockPath: string;
  /** Undefined when the lock file can't be parsed. */
  readonly holder: LockRecord | undefined;
  /** Our wall clock minus the lock's mtime (negative when the holder's clock is ahead of ours). */
  readonly ageMs: number;
  /** The longest the watch can take (plus one read of the lock). */
  readonly maxWaitMs: number;
}

/** A lock found at acquire, judged stale and removed. */
export interface TakenOver {
  readonly holder: LockRecord | undefined;
  readonly reason: string;
}

/** The root is owned by a live process (or one that refreshed the lock less than `staleMs` ago). */
export class StoreLockedError extends StoreOwnedError {
  override readonly code = 'STORE_LOCKED';
  readonly root: string;
  readonly lockPath: string;
  /** Undefined when the lock file can't be parsed (being written, or not ours to read). */
  readonly holder: LockRecord | undefined;
  readonly refreshedAgoMs: number;

  constructor(o: { root: string; lockPath: string; holder: LockRecord | undefined; refreshedAgoMs: number; staleMs: number; thisProcess: boolean }) {
    const who = o.holder ? `pid ${o.holder.pid} on host ${o.holder.hostname}, started ${o.holder.startedAt}` : 'unreadable lock file';
    super(
      o.thisProcess
        ? `storage root ${o.root} is already open in this process (pid ${process.pid})`
        : `storage root ${o.root} is in use by another hubcache process (${who}; ${o.lockPath} refreshed ${seconds(o.refreshedAgoMs)} ago). ` +
            `One process owns a storage root: stop that one first. A lock its holder stopped refreshing is taken over once it is ${seconds(o.staleMs)} old.`,
    );
    this.name = 'StoreLockedError';
    this.root = o.root;
    this.lockPath = o.lockPath;
    this.holder = o.holder;
    this.refreshedAgoMs = o.refreshedAgoMs;
  }
}

/** The heartbeat found the lock removed, or holding another process's token. */
export class StoreLockLostError extends Error {
  readonly lockPath: string;
  readonly holder: LockRecord | undefined;

  constructor(lockPath: string, holder: LockRecord | undefined) {
    super(
      holder
        ? `storage lock ${lockPath} was taken over by pid ${holder.pid} on host ${holder.hostname}, started ${holder.startedAt}`
        : `storage lock ${lockPath} is no longer ours (removed or overwritten)`,
    );
    this.name = 'StoreLockLostError';
    this.lockPath = lockPath;
    this.holder = holder;
  }
}

/**
 * Tokens of the locks this process holds or is creating. A lock file with our pid but a token not in
 * here was left by a previous process that had our pid; one with a token in here is ours, even
 * before `createExclusive` has returned (so a concurrent acquire in this process can't mistake it).
 */
const ourTokens = new Set<string>();

/**
 * Takes the root's lock, taking over a stale one; waits up to about `staleMs` for a lock whose
 * holder's liveness can't be checked (unless `failFast`). Throws `StoreLockedError` when it is held.
 * The caller owns the returned lock and must `release()` it; a process that exits without doing so
 * still removes it in its 'exit' handler (not on SIGKILL or a crash: that is what staleness is for).
 */
export async function acquireStoreLock(opts: StoreLockOptions): Promise<StoreLock> {
  const layout = new StorageLayout({ root: opts.root });
  const staleMs = opts.staleMs ?? 30_000;
  const heartbeatMs = opts.heartbeatMs ?? Math.round(staleMs / 3);
  if (!(heartbeatMs > 0 && heartbeatMs < staleMs)) throw new Error(`store lock: heartbeat (${heartbeatMs} ms) must be shorter than the stale threshold (${staleMs} ms)`);
  const now = opts.now ?? Date.now;
  const self = { hostname: hostname(), pidNamespace: await pidNamespace() };
  const own = await readProcStat('self');
  const procStartTime = typeof own === 'object' ? own.startTime : undefined;
  const record: LockRecord = { pid: process.pid, ...self, startedAt: new Date(now()).toISOString(), ...(procStartTime !== undefined && { procStartTime }), token: randomUUID() };
  await mkdir(layout.tmpDir, { recursive: true });

  let takenOver: TakenOver | undefined;
  let last: { holder: LockRecord | undefined; ageMs: number } | undefined;
  let waited = false;
  /** The lock the wait found stale: still stale in later rounds, though its mtime looks recent. */
  let watchedStale: { found: Found; reason: string } | undefined;
  const locked = (holder: LockRecord | undefined, ageMs: number, thisProcess = false) =>
    new StoreLockedError({ root: layout.root, lockPath: layout.lockPath, holder, refreshedAgoMs: ageMs, staleMs, thisProcess });
  // Each round creates the lock, fails against a live holder, or deals with a stale one; a few
  // rounds cover starters racing for the same stale lock (the one that loses sees the winner's).
  ourTokens.add(record.token);
  try {
    for (let round = 0; round < 5; round++) {
      if (await createExclusive(layout.lockPath, record, now(), layout.tmpDir)) {
        return new StoreLock({ path: layout.lockPath, record, takenOver, now, heartbeatMs, schedule: opts.schedule ?? everyUnref, onCompromised: opts.onCompromised });
      }
      let found = await readLock(layout.lockPath);
      if (!found) continue; // released meanwhile
      const { holder } = found;
      const ageMs = now() - found.mtimeMs;
      last = { holder, ageMs };
      if (holder && ourTokens.has(holder.token)) throw locked(holder, ageMs, true);
      let reason = watchedStale && sameLock(found, watchedStale.found) ? watchedStale.reason : await staleReason(holder, self, ageMs, staleMs);
      if (!reason) {
        // Alive as far as we can tell. Only a holder on this host has a pid we can check: any other
        // one is watched, once per acquire (a lock that replaced the watched one is judged as found).
        if (opts.failFast || waited || onThisHost(holder, self)) throw locked(holder, ageMs);
        waited = true;
        opts.onWait?.({ lockPath: layout.lockPath, holder, ageMs, maxWaitMs: staleMs });
        const seen = await watch({ path: layout.lockPath, judged: found, now, staleMs, monotonic: opts.monotonic ?? (() => performance.now()), sleep: opts.sleep ?? sleep, signal: opts.signal });
        if (seen.outcome === 'refreshed') throw locked(seen.found.holder, now() - seen.found.mtimeMs);
        if (seen.outcome === 'gone') continue; // released or replaced: look again
        found = seen.found;
        reason = seen.reason;
        watchedStale = { found, reason };
      }
      const outcome = await takeOver({ layout, judged: found, record, now, staleMs });
      if (outcome.taken) takenOver = { holder, reason };
      // Another starter is taking it over: if it stays at that, that starter is the one in the way.
      else if (outcome.busyWith) last = { holder: outcome.busyWith.holder, ageMs: now() - outcome.busyWith.mtimeMs };
    }
  } catch (err) {
    ourTokens.delete(record.token);
    throw err;
  }
  ourTokens.delete(record.token);
  throw locked(last?.holder, last?.ageMs ?? 0);
}

/**
 * Watches the lock `judged` (held by a holder whose liveness we can't check) until it is released
 * or replaced (`gone`: look again), refreshed by its holder (`refreshed`: it is alive), or stale
 * (`stale`, with the lock as last read: unchanged for `staleMs` by our monotonic clock, or its
 * mtime more than `staleMs` old by our wall clock). Polls about ten times per `staleMs`, at most
 * every second; returns within `staleMs` plus one read.
 */
async function watch(o: {
  path: string;
  judged: Found;
  now: () => number;
  staleMs: number;
  monotonic: () => number;
  sleep: (ms: number) => Promise<void>;
  signal?: AbortSignal;
}): Promise<{ outcome: 'gone' } | { outcome: 'refreshed'; found: Found } | { outcome: 'stale'; found: Found; reason: string }> {
  const pollMs = Math.min(1_000, o.staleMs / 10);
  const start = o.monotonic();
  const aborted = o.signal && new Promise<never>((_, reject) => o.signal!.addEventListener('abort', () => reject(o.signal!.reason), { once: true }));
  aborted?.catch(() => {});
  for (;;) {
    o.signal?.throwIfAborted();
    const nap = o.sleep(Math.max(0, Math.min(pollMs, o.staleMs - (o.monotonic() - start))));
    await (aborted ? Promise.race([nap, aborted]) : nap);
    const current = await readLock(o.path);
    if (!current || current.raw !== o.judged.raw) return { outcome: 'gone' };
    if (current.mtimeMs !== o.judged.mtimeMs) return { outcome: 'refreshed', found: current };
    const watchedMs = o.monotonic() - start;
    if (watchedMs >= o.staleMs) return { outcome: 'stale', found: current, reason: `not refreshed while watched for ${seconds(watchedMs)}` };
    const ageMs = o.now() - current.mtimeMs;
    if (ageMs > o.staleMs) return { outcome: 'stale', found: current, reason: `not refreshed for ${seconds(ageMs)}` };
  }
}

/** A held lock; refreshes its mtime until `release()`. */
export class StoreLock {
  readonly path: string;
  readonly record: LockRecord;
  /** The stale lock this acquisition replaced, if any (worth a log line). */
  readonly takenOver: TakenOver | undefined;
  readonly #now: () => number;
  readonly #cancel: () => void;
  readonly #onCompromised: ((err: StoreLockLostError) => void) | undefined;
  readonly #onExit = () => this.#releaseSync();
  #state: 'held' | 'lost' | 'released' = 'held';
  #refreshing: Promise<void> | undefined;

  constructor(o: {
    path: string;
    record: LockRecord;
    takenOver: TakenOver | undefined;
    now: () => number;
    heartbeatMs: number;
    schedule: NonNullable<StoreLockOptions['schedule']>;
    onCompromised: StoreLockOptions['onCompromised'];
  }) {
    this.path = o.path;
    this.record = o.record;
    this.takenOver = o.takenOver;
    this.#now = o.now;
    this.#onCompromised = o.onCompromised;
    this.#cancel = o.schedule(() => this.refresh(), o.heartbeatMs);
    process.on('exit', this.#onExit);
  }

  /**
   * The heartbeat: sets the lock's mtime to now if the lock is still ours. Finding it gone or
   * another's makes the lock `lost` (reported once through `onCompromised`, no more heartbeats).
   * Other errors (an NFS hiccup) are left to the next beat: two more chances before it goes stale.
   */
  refresh(): Promise<void> {
    return (this.#refreshing ??= this.#refresh().finally(() => (this.#refreshing = undefined)));
  }

  async #refresh(): Promise<void> {
    if (this.#state !== 'held') return;
    let current: LockRecord | undefined;
    try {
      current = parseRecord(await readFile(this.path, 'utf8'));
    } catch (err) {
      if (!isNotFound(err)) return;
    }
    if (current?.token === this.record.token) {
      const t = this.#now() / 1000;
      // A failure here is transient or a removal that the next beat reports.
      await utimes(this.path, t, t).catch(() => {});
      return;
    }
    if (this.#state !== 'held') return;
    this.#state = 'lost';
    this.#stop();
    this.#onCompromised?.(new StoreLockLostError(this.path, current));
  }

  /** Stops the heartbeat and removes the lock file if it is still ours. Idempotent; never throws. */
  async release(): Promise<void> {
    if (this.#state === 'released') return;
    const wasHeld = this.#state === 'held';
    this.#state = 'released';
    this.#stop();
    await this.#refreshing;
    if (!wasHeld) return;
    try {
      if (parseRecord(await readFile(this.path, 'utf8'))?.token === this.record.token) await unlink(this.path);
    } catch {
      // Gone already, or unreadable: a lock we can't remove goes stale by pid or mtime.
    }
  }

  #releaseSync(): void {
    if (this.#state !== 'held') return;
    this.#state = 'released';
    try {
      if (parseRecord(readFileSync(this.path, 'utf8'))?.token === this.record.token) unlinkSync(this.path);
    } catch {
      // As in release().
    }
  }

  #stop(): void {
    this.#cancel();
    process.off('exit', this.#onExit);
    ourTokens.delete(this.record.token);
  }
}

interface Found {
  readonly raw: string;
  readonly holder: LockRecord | undefined;
  readonly mtimeMs: number;
}

/** Whether `holder`'s pid means anything here: same hostname and PID namespace as ours. */
function onThisHost(holder: LockRecord | undefined, self: { hostname: string; pidNamespace?: string }): boolean {
  return holder !== undefined && holder.hostname === self.hostname && holder.pidNamespace === self.pidNamespace;
}

/** Why `holder` is stale, or undefined if it must be presumed alive. */
async function staleReason(holder: LockRecord | undefined, self: { hostname: string; pidNamespace?: string }, ageMs: number, staleMs: number): Promise<string | undefined> {
  if (holder && onThisHost(holder, self)) {
    // Our own pid, but not one of our tokens (checked by the caller): a previous process that had our pid.
    if (holder.pid === process.pid) return 'its pid is this process';
    const gone = await goneReason(holder);
    if (gone) return gone;
  }
  if (ageMs > staleMs) return `not refreshed for ${seconds(ageMs)}`;
  return undefined;
}

/**
 * Why the process of `holder` (on this host) is gone, or undefined if it must be presumed alive.
 * A zombie still answers kill(pid, 0) (issue #12: after a SIGKILL under a parent that reaps late,
 * the next start was refused), so /proc/PID/stat decides when it can be read: state Z or X is an
 * exited process; another start time than the one the holder recorded is another process that got
 * its pid. Unreadable (not Linux, or /proc mounted with hidepid): as alive as kill() says.
 */
async function goneReason(holder: LockRecord): Promise<string | undefined> {
  if (!isAlive(holder.pid)) return 'its process is gone';
  const stat = await readProcStat(String(holder.pid));
  if (stat === 'missing') return isAlive(holder.pid) ? undefined : 'its process is gone'; // exited since, or hidden from us
  if (!stat) return undefined;
  if (stat.state === 'Z' || stat.state === 'X') return `its process is gone (${stat.state === 'Z' ? 'a zombie: exited, not reaped yet' : 'dead'})`;
  if (holder.procStartTime !== undefined && stat.startTime !== holder.procStartTime) return 'its pid belongs to another process now (another start time)';
  return undefined;
}

/** The fields of a /proc/PID/stat line that the lock uses (proc(5)). */
export interface ProcStat {
  /** Field 3: R, S, D, … ; Z is a zombie, X dead. */
  readonly state: string;
  /** Field 22, `starttime`: clock ticks after boot at which the process started. */
  readonly startTime: number;
}

/**
 * Parses the text of /proc/PID/stat; undefined when it doesn't have the expected shape. Field 2 is
 * the command name in parentheses, which may itself hold spaces and parentheses (`(a) b (c))`),
 * so the numbered fields are counted from after the LAST ')'.
 */
export function parseProcStat(text: string): ProcStat | undefined {
  const close = text.lastIndexOf(')');
  if (close === -1) return undefined;
  const fields = text.slice(close + 1).trim().split(/\s+/); // fields[0] is field 3
  const state = fields[0];
  const startTime = fields[22 - 3];
  if (!state || !/^[A-Za-z]$/.test(state) || !startTime || !/^\d+$/.test(startTime)) return undefined;
  const ticks = Number(startTime);
  return Number.isSafeInteger(ticks) ? { state, startTime: ticks } : undefined;
}

/** /proc/`pid`/stat parsed; `missing` when there is no such entry; undefined when it can't be read or parsed. */
async function readProcStat(pid: string): Promise<ProcStat | 'missing' | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    // ESRCH: the process went away between the open and the read.
    return isNotFound(err) || (err as NodeJS.ErrnoException).code === 'ESRCH' ? 'missing' : undefined;
  }
  return parseProcStat(text);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, under another user.
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Creates `path` holding `record`, only if it doesn't exist; false if it does. The file is written,
 * synced and given our clock as its mtime (like a heartbeat) under a temporary name in `tmpDir`,
 * then hard-linked into place: link(2) fails with EEXIST like O_EXCL does (on NFS too), and nobody
 * ever reads a lock that is there but still empty. (Created with O_EXCL and then written, a racing
 * starter could read it empty, take it for an unreadable lock and wait for it to go stale.) A
 * filesystem without hard links falls back to O_EXCL: a reader may then see it empty for a moment.
 */
async function createExclusive(path: string, record: LockRecord, nowMs: number, tmpDir: string): Promise<boolean> {
  const temp = join(tmpDir, `lock-new-${randomUUID()}`);
  await writeSynced(temp, 'w', record, nowMs);
  try {
    await link(temp, path);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    // The temp file swept meanwhile by an owner that just started: its lock is there, look at it.
    if (code === 'ENOENT') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err;
  } finally {
    await unlink(temp).catch(() => {});
  }
  try {
    await writeSynced(path, 'wx', record, nowMs);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

/** Writes `record` to `path` opened with `flags`, sets its mtime to `nowMs`, syncs; removes it on failure. */
async function writeSynced(path: string, flags: 'w' | 'wx', record: LockRecord, nowMs: number): Promise<void> {
  const fh = await open(path, flags, 0o644);
  try {
    await fh.writeFile(`${JSON.stringify(record)}\n`);
    await fh.utimes(nowMs / 1000, nowMs / 1000);
    await fh.sync();
    await fh.close();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(path).catch(() => {});
    throw err;
  }
}

/** The lock's content and mtime, read through one handle (one inode); undefined when there is none. */
async function readLock(path: string): Promise<Found | undefined> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
  try {
    const { mtimeMs } = await fh.stat();
    const raw = await fh.readFile('utf8');
    return { raw, holder: parseRecord(raw), mtimeMs };
  } finally {
    await fh.close();
  }
}

/**
 * Removes the stale lock `judged` if it is still the one in place, under a claim on it (see the
 * protocol at the top). `taken`: removed; `busyWith`: another starter holds a live claim on it;
 * neither: the lock changed meanwhile, look again.
 */
async function takeOver(o: { layout: StorageLayout; judged: Found; record: LockRecord; now: () => number; staleMs: number }): Promise<{ taken?: true; busyWith?: Found }> {
  const { layout, judged } = o;
  const id = createHash('sha256').update(`${judged.mtimeMs}\n${judged.raw}`).digest('hex').slice(0, 16);
  const passed: string[] = [];
  let claim: string | undefined;
  await mkdir(layout.tmpDir, { recursive: true });
  for (let n = 1; !claim; n++) {
    // Inside the root: `id` is hex and `n` a number.
    const path = join(layout.tmpDir, `lock-claim-${id}-${n}`);
    if (await createExclusive(path, o.record, o.now(), layout.tmpDir)) claim = path;
    else {
      const other = await readLock(path);
      if (!other) return {}; // that takeover just finished
      if (o.now() - other.mtimeMs <= o.staleMs) return { busyWith: other };
      passed.push(path); // its starter died mid-takeover
    }
  }
  try {
    // Only `judged`'s own holder can still change the lock now (by releasing it). Look before moving
    // anything, so that a lock created since is never disturbed.
    const current = await readLock(layout.lockPath);
    if (!current || !sameLock(current, judged)) return {};
    const aside = layout.tempPath('lock');
    try {
      await rename(layout.lockPath, aside);
    } catch (err) {
      if (isNotFound(err)) return {};
      throw err;
    }
    const moved = await readLock(aside);
    if (moved && !sameLock(moved, judged)) {
      // Released and recreated between the look and the move: put it back, never over a newer one.
      await copyFile(aside, layout.lockPath, constants.COPYFILE_EXCL).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
      await unlink(aside);
      return {};
    }
    await unlink(aside).catch(() => {});
    await Promise.all(passed.map((p) => unlink(p).catch(() => {})));
    return { taken: true };
  } finally {
    await unlink(claim).catch(() => {});
  }
}

function sameLock(a: Found, b: Found): boolean {
  return a.raw === b.raw && a.mtimeMs === b.mtimeMs;
}

function parseRecord(raw: string): LockRecord | undefined {
  try {
    const r = JSON.parse(raw) as Partial<LockRecord> | null;
    // pid 0 or negative would make process.kill() signal a process group.
    if (!r || !Number.isSafeInteger(r.pid) || r.pid! <= 0 || typeof r.hostname !== 'string' || typeof r.startedAt !== 'string' || typeof r.token !== 'string') return undefined;
    if (r.pidNamespace !== undefined && typeof r.pidNamespace !== 'string') return undefined;
    if (r.procStartTime !== undefined && !(Number.isSafeInteger(r.procStartTime) && r.procStartTime >= 0)) return undefined;
    return r as LockRecord;
  } catch {
    return undefined;
  }
}

async function pidNamespace(): Promise<string | undefined> {
  try {
    return await readlink('/proc/self/ns/pid');
  } catch {
    return undefined; // not Linux: the hostname alone identifies the host
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function everyUnref(tick: () => Promise<void>, everyMs: number): () => void {
  const timer = setInterval(() => void tick(), everyMs);
  timer.unref();
  return () => clearInterval(timer);
}

function seconds(ms: number): string {
  return `${Math.max(0, Math.round(ms / 1000))}s`;
}
