/**
 * Start-to-ready A/B (issue #13): two builds of the CLI started in turn on one synthetic store
 * (src/storage/fs/testing/synthetic-store.ts, the real layout, warm page cache), side A then side B
 * then A… (the first side alternates per pair), BENCH_PAIRS pairs (default 7). For each start:
 * spawn → first `/readyz` 200 (wall, polled every 5 ms), and the CPU time (user + system, from
 * /proc/<pid>/stat, 10 ms ticks) the process had used at that moment; then spawn → exit of
 * `--version` for each side, the same way. Reports the medians of each side and the median of the
 * per-pair ratios B ÷ A, with the load average before and after.
 *
 *   tsx bench/start-ab.ts A_CLI B_CLI            e.g. /tmp/main-build/dist/cli.js dist/cli.js
 *   BENCH_STORE_BLOBS=100000 BENCH_PAIRS=9 …      store size (default 100000), pairs
 *   BENCH_STORE_ROOT=/tmp/store-100k …            reuse (or create once) a store there
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { writeSyntheticStore } from '../src/storage/fs/testing/synthetic-store.js';
import { fmt, median } from './stats.js';
import { freePort } from '../test/support/distribution.js';

const TICK_MS = 1000 / Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim() || 100);

/** User + system CPU (ms) a live process has used so far. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
}

/**
 * Polls `status` (the server's `/readyz` answer; undefined while the port refuses connections) every
 * 5 ms until it is 200; returns the wall time since `t0`. Fails when the process exits first or after
 * 60 s, with its stderr.
 */
export async function untilReady(child: ChildProcess, status: () => Promise<number | undefined>, t0: number, stderr: () => string): Promise<number> {
  for (;;) {
    if (child.exitCode !== null) throw new Error(`hubcache exited with ${child.exitCode}: ${stderr()}`);
    if ((await status()) === 200) return performance.now() - t0;
    await new Promise((r) => setTimeout(r, 5));
    if (performance.now() - t0 > 60_000) throw new Error(`not ready after 60 s: ${stderr()}`);
  }
}

/** A `hubcache serve` the store benches started; `stop` sends SIGTERM (unless it exited) and waits for the exit. */
export interface ServeProcess {
  readonly child: ChildProcess;
  readonly stderr: () => string;
  readonly stop: () => Promise<void>;
}

/**
 * Spawns `node <command…> serve` as the store benches run it: on `root`, loopback `port` (and
 * `metricsPort` when given), tag TTL 1 h, warn-level logs, a bare environment plus `env`.
 * `command` is the node flags and script (a build's bin/hubcache.js, or tsx and src/cli.ts).
 */
export function spawnServe(command: readonly string[], root: string, o: { port: number; metricsPort?: number; env?: Record<string, string>; stdout?: 'pipe' | 'ignore'; cwd?: string }): ServeProcess {
  const listeners = ['--listen', `127.0.0.1:${o.port}`, ...(o.metricsPort ? ['--metrics-listen', `127.0.0.1:${o.metricsPort}`] : [])];
  const child = spawn(process.execPath, [...command, 'serve', ...listeners, '--storage-path', root, '--tag-ttl', '1h', '--log-level', 'warn'], {
    stdio: ['ignore', o.stdout ?? 'ignore', 'pipe'],
    ...(o.cwd ? { cwd: o.cwd } : {}),
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', ...o.env },
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = once(child, 'exit');
  return {
    child,
    stderr: () => stderr,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** The status of GET `url`, or undefined while the port refuses connections. */
export async function readyzStatus(url: string): Promise<number | undefined> {
  const res = await request(url).catch(() => undefined);
  if (res) await res.body.dump();
  return res?.statusCode;
}

/** Spawn → /readyz 200: wall and CPU (ms). The server is stopped (SIGTERM) afterwards. */
export async function startToReady(bin: string, root: string): Promise<{ wallMs: number; cpuMs: number }> {
  const port = await freePort();
  const t0 = performance.now();
  const server = spawnServe([bin], root, { port });
  try {
    const wallMs = await untilReady(server.child, () => readyzStatus(`http://127.0.0.1:${port}/readyz`), t0, server.stderr);
    return { wallMs, cpuMs: cpuMs(server.child.pid!) };
  } finally {
    await server.stop();
  }
}

/** Spawn → exit of one CLI run (`hubcache ls`, `du`, `--version`): wall and CPU (ms, user + sys from /usr/bin/time). */
export function timeCli(bin: string, args: readonly string[]): { wallMs: number; cpuMs: number } {
  const t0 = performance.now();
  const r = spawnSync('/usr/bin/time', ['-f', 'cpu %U %S', process.execPath, bin, ...args], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  const wallMs = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${bin} ${args.join(' ')}: exit ${r.status}: ${r.stderr.slice(0, 2000)}`);
  const m = /^cpu (\S+) (\S+)$/m.exec(r.stderr);
  if (!m) throw new Error(`no CPU time from /usr/bin/time: ${r.stderr.slice(0, 500)}`);
  return { wallMs, cpuMs: (Number(m[1]) + Number(m[2])) * 1000 };
}

async function main(): Promise<void> {
  const [a, b] = process.argv.slice(2);
  if (!a || !b) throw new Error('usage: tsx bench/start-ab.ts A_CLI B_CLI');
  const blobs = Number(process.env.BENCH_STORE_BLOBS ?? 100_000);
  const pairs = Number(process.env.BENCH_PAIRS ?? 7);
  const scratch = process.env.BENCH_STORE_ROOT ? undefined : mkdtempSync(join(tmpdir(), 'hubcache-start-ab-'));
  const root = process.env.BENCH_STORE_ROOT ?? join(scratch!, 'store');
  try {
    if (!existsSync(join(root, 'blobs'))) {
      const t0 = performance.now();
      writeSyntheticStore({ root, blobs, validatedAt: Date.now() });
      console.log(`generated ${blobs} blobs in ${fmt((performance.now() - t0) / 1000, 1)} s`);
    }
    const before = loadavg();
    const sides = { a: { ready: [] as number[], cpu: [] as number[], vWall: [] as number[], vCpu: [] as number[] }, b: { ready: [] as number[], cpu: [] as number[], vWall: [] as number[], vCpu: [] as number[] } };
    const ratio = { ready: [] as number[], cpu: [] as number[], vWall: [] as number[], vCpu: [] as number[] };
    // One start of each before measuring: the page cache holds both builds and the store.
    await startToReady(a, root);
    await startToReady(b, root);
    for (let i = 0; i < pairs; i++) {
      const order: Array<'a' | 'b'> = i % 2 === 0 ? ['a', 'b'] : ['b', 'a'];
      const got: Record<string, { ready: number; cpu: number; vWall: number; vCpu: number }> = {};
      for (const side of order) {
        const bin = side === 'a' ? a : b;
        const s = await startToReady(bin, root);
        const v = timeCli(bin, ['--version']);
        got[side] = { ready: s.wallMs, cpu: s.cpuMs, vWall: v.wallMs, vCpu: v.cpuMs };
        sides[side].ready.push(s.wallMs);
        sides[side].cpu.push(s.cpuMs);
        sides[side].vWall.push(v.wallMs);
        sides[side].vCpu.push(v.cpuMs);
      }
      for (const k of ['ready', 'cpu', 'vWall', 'vCpu'] as const) ratio[k].push(got.b![k] / got.a![k]);
      console.log(`pair ${i + 1}: ready A ${fmt(got.a!.ready, 0)} B ${fmt(got.b!.ready, 0)} ms (CPU ${fmt(got.a!.cpu, 0)} / ${fmt(got.b!.cpu, 0)}); --version A ${fmt(got.a!.vWall, 0)} B ${fmt(got.b!.vWall, 0)} ms (CPU ${fmt(got.a!.vCpu, 0)} / ${fmt(got.b!.vCpu, 0)})`);
    }
    const after = loadavg();
    const row = (name: string, k: 'ready' | 'cpu' | 'vWall' | 'vCpu') =>
      `| ${name} | ${fmt(median(sides.a[k]), 0)} ms | ${fmt(median(sides.b[k]), 0)} ms | ${fmt(median(ratio[k]), 2)}× | ${ratio[k].map((x) => fmt(x, 2)).join(' ')} |`;
    console.log(`\n${blobs} blobs, ${pairs} pairs; A = ${a}, B = ${b}; load average before ${before.map((x) => fmt(x, 2)).join(' ')}, after ${after.map((x) => fmt(x, 2)).join(' ')}`);
    console.log('| metric (median) | A | B | B ÷ A (median of per-pair ratios) | per pair |');
    console.log('|---|---|---|---|---|');
    console.log(row('start-to-ready (spawn → /readyz 200), wall', 'ready'));
    console.log(row('… CPU (user + sys) used by then', 'cpu'));
    console.log(row('`--version` (spawn → exit), wall', 'vWall'));
    console.log(row('… CPU (user + sys)', 'vCpu'));
  } finally {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
