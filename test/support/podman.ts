/**
 * podman (Debian's, 4.3) for tests (docs/protocol.md#podman-with-isolated-storage): its own root
 * and runroot in a temp dir, vfs storage (no overlay mounts), file events and cgroupfs (no
 * systemd), and a registries.conf of the test's choosing through CONTAINERS_REGISTRIES_CONF, so
 * the host's configuration is never read or changed.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const PODMAN_BIN = '/usr/bin/podman';

export class PodmanError extends Error {
  constructor(
    readonly args: readonly string[],
    readonly code: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`podman ${args.join(' ')} exited with ${code}: ${stderr.trim() || stdout.trim()}`);
    this.name = 'PodmanError';
  }
}

export interface Podman {
  readonly dir: string;
  /** Runs podman with the isolated storage flags; rejects with PodmanError on a non-zero exit. */
  run(args: string[], opts?: { timeoutMs?: number }): Promise<{ stdout: string; stderr: string }>;
  /** Removes the storage and config (vfs keeps plain directories, nothing to unmount). */
  close(): Promise<void>;
}

/** An isolated podman with `registriesConf` as its registries.conf. */
export function createPodman(registriesConf: string): Podman {
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-podman-'));
  for (const d of ['root', 'runroot', 'tmp', 'home']) mkdirSync(join(dir, d));
  const conf = join(dir, 'registries.conf');
  writeFileSync(conf, registriesConf);
  // An empty containers.conf keeps the host's (and the user's) settings out.
  const containersConf = join(dir, 'containers.conf');
  writeFileSync(containersConf, '[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n');
  const base = ['--root', join(dir, 'root'), '--runroot', join(dir, 'runroot'), '--storage-driver', 'vfs', '--events-backend', 'file', '--cgroup-manager', 'cgroupfs', '--tmpdir', join(dir, 'tmp')];
  const env = {
    PATH: process.env.PATH ?? '',
    HOME: join(dir, 'home'),
    TMPDIR: join(dir, 'tmp'),
    XDG_RUNTIME_DIR: join(dir, 'runroot'),
    CONTAINERS_REGISTRIES_CONF: conf,
    CONTAINERS_CONF: containersConf,
    // Storage settings come from the flags only.
    CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf'),
  };
  writeFileSync(env.CONTAINERS_STORAGE_CONF, `[storage]\ndriver = "vfs"\nrunroot = "${join(dir, 'runroot')}"\ngraphroot = "${join(dir, 'root')}"\n`);
  const run = (args: string[], o: { timeoutMs?: number } = {}) =>
    new Promise<{ stdout: string; stderr: string }>((resolve, reject) => {
      const p = spawn(PODMAN_BIN, [...base, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => p.kill('SIGKILL'), o.timeoutMs ?? 120_000);
      p.on('error', reject);
      p.on('close', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve({ stdout, stderr });
        else reject(new PodmanError(args, code, stdout, stderr));
      });
    });
  let closed = false;
  return {
    dir,
    run,
    close: async () => {
      if (closed) return;
      closed = true;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
