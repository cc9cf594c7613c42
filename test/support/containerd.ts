/**
 * A real containerd daemon for tests (docs/protocol.md#containerd-under-a-temp-dir): runs as root
 * with root, state, sockets and `/opt` under a temp dir, the CRI plugin off and the `native`
 * snapshotter (no overlay mounts), so nothing outside the temp dir is touched. `ctr` talks to it
 * with `--address`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CONTAINERD_BIN = '/usr/bin/containerd';
export const CTR_BIN = '/usr/bin/ctr';

export interface CtrResult {
  readonly stdout: string;
  readonly stderr: string;
}

export class CtrError extends Error {
  constructor(
    readonly args: readonly string[],
    readonly code: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`ctr ${args.join(' ')} exited with ${code}: ${stderr.trim() || stdout.trim()}`);
    this.name = 'CtrError';
  }
}

export interface Containerd {
  /** The gRPC socket (`ctr --address`). */
  readonly address: string;
  readonly dir: string;
  /** Runs `ctr --address SOCK --namespace NS ARGS…` (snapshotter `native`); rejects with CtrError on a non-zero exit. */
  ctr(args: string[], opts?: { timeoutMs?: number }): Promise<CtrResult>;
  /** Daemon log so far (stderr), for failure messages. */
  log(): string;
  /** SIGTERM, wait for the exit, remove the temp dir. Safe to call twice. */
  close(): Promise<void>;
}

export interface StartContainerdOptions {
  /** ctr namespace; default `hubcache-test`. */
  namespace?: string;
  readyTimeoutMs?: number;
}

/** Starts containerd and resolves once it logs that it booted. */
export async function startContainerd(opts: StartContainerdOptions = {}): Promise<Containerd> {
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-containerd-'));
  const address = join(dir, 'containerd.sock');
  for (const d of ['root', 'state', 'opt']) mkdirSync(join(dir, d));
  const configPath = join(dir, 'config.toml');
  writeFileSync(
    configPath,
    [
      'version = 2',
      `root = "${join(dir, 'root')}"`,
      `state = "${join(dir, 'state')}"`,
      // Only what pulling and unpacking need: no CRI (it would set up CNI), no snapshotters that mount.
      'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.overlayfs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]',
      '[grpc]',
      `  address = "${address}"`,
      '[ttrpc]',
      `  address = "${address}.ttrpc"`,
      '[debug]',
      `  address = "${join(dir, 'debug.sock')}"`,
      '  level = "info"',
      '[metrics]',
      '  address = ""',
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = "${join(dir, 'opt')}"`,
      '',
    ].join('\n'),
  );
  const namespace = opts.namespace ?? 'hubcache-test';
  const child: ChildProcess = spawn(CONTAINERD_BIN, ['--config', configPath], { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: process.env.PATH ?? '' } });
  let log = '';
  const exited = once(child, 'exit');
  const booted = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`containerd did not boot within ${opts.readyTimeoutMs ?? 30_000} ms:\n${log}`)), opts.readyTimeoutMs ?? 30_000);
    child.stderr!.on('data', (d: Buffer) => {
      log += d.toString();
      if (log.includes('containerd successfully booted')) {
        clearTimeout(timer);
        resolve();
      }
    });
    exited.then(([code]) => {
      clearTimeout(timer);
      reject(new Error(`containerd exited with ${code} before booting:\n${log}`));
    });
  });
  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    })());
  try {
    await booted;
  } catch (err) {
    await close();
    throw err;
  }

  const ctr = (args: string[], o: { timeoutMs?: number } = {}) =>
    new Promise<CtrResult>((resolve, reject) => {
      const full = ['--address', address, '--namespace', namespace, ...args];
      const p = spawn(CTR_BIN, full, { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '', HOME: dir, CONTAINERD_SNAPSHOTTER: 'native' } });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => p.kill('SIGKILL'), o.timeoutMs ?? 120_000);
      p.on('error', reject);
      p.on('close', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve({ stdout, stderr });
        else reject(new CtrError(args, code, stdout, stderr));
      });
    });

  return { address, dir, ctr, log: () => log, close };
}
