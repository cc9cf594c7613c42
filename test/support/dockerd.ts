/**
 * A real Docker engine (Debian's docker.io, engine 20.10) for pull tests, isolated from the host:
 *
 * - its own network namespace (`unshare -n`: only loopback), so its fallback to Docker Hub fails at
 *   once and nothing leaves the machine: a pull that succeeds was served by the mirror;
 * - vfs storage, no iptables, no bridge; data-root, exec-root, pidfile, trust key and API socket
 *   in a temp dir (docs/protocol.md#dockerd-in-its-own-network-namespace; `ip netns exec` would
 *   remount /sys and break dockerd's cgroups);
 * - `registry-mirrors: ["http://127.0.0.1:PORT"]` inside the namespace, where socat forwards
 *   `127.0.0.1:PORT` to a unix socket in the temp dir; on the host side of that socket a small
 *   bridge (here, in the test process) connects to hubcache and records the head of every HTTP
 *   request the engine sends — the "socat-level capture" that shows headers hubcache's logs
 *   don't (Authorization).
 *
 * `startDockerEngine()` rejects with the reason (and the daemon's last log lines) if the engine
 * can't start: tests that need it fail, they are never skipped silently. `close()` stops dockerd
 * (which stops its containerd), kills what is left, unmounts anything under the temp dir and
 * removes it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

/** One HTTP request as the engine sent it to the mirror (read off the bridge). */
export interface EngineRequest {
  /** Increasing, in arrival order. */
  seq: number;
  /** Which bridged TCP connection carried it (keep-alive connections carry several). */
  connection: number;
  method: string;
  /** Path with query, as on the request line. */
  url: string;
  /** Header names lower-cased; repeated headers joined with ', '. */
  headers: Record<string, string>;
}

export interface DockerRunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface DockerRunOptions {
  /** DOCKER_CONFIG directory for this call (default: the engine's own, with an empty config.json). */
  configDir?: string;
  /** Kill the CLI after this many ms (default 120000). */
  timeoutMs?: number;
}

export interface DockerEngine {
  /** Temp dir holding everything of this engine. */
  readonly dir: string;
  readonly dataRoot: string;
  /** The engine's API socket (`docker -H unix://…`). */
  readonly socket: string;
  /** The mirror URL the engine is configured with (its namespace's loopback). */
  readonly mirrorUrl: string;
  /** The daemon.json it was started with. */
  readonly daemonConfig: Readonly<Record<string, unknown>>;
  /** pid of dockerd (also its process group id). */
  readonly pid: number;
  /** Requests the engine sent to the mirror, in order. */
  readonly requests: EngineRequest[];
  /** Where the mirror bridge forwards new connections (host:port); initially `mirrorTarget`. */
  mirrorTarget: string;
  /** dockerd's (and its containerd's) log so far. */
  log(): string;
  /**
   * Resolves with the first daemon log line matching `re`, already logged (at or after character
   * offset `from` of log(), default 0) or still to come.
   */
  waitForLog(re: RegExp, opts?: { from?: number; timeoutMs?: number }): Promise<string>;
  /** Runs the docker CLI against this engine; never throws for a non-zero exit. */
  run(args: string[], opts?: DockerRunOptions): Promise<DockerRunResult>;
  /** Like run(), but throws with stderr on a non-zero exit; returns stdout. */
  docker(args: string[], opts?: DockerRunOptions): Promise<string>;
  /** Stops everything and removes the temp dir. Safe to call twice. */
  close(): Promise<void>;
}

export interface StartDockerEngineOptions {
  /** host:port of the registry the mirror bridge forwards to (hubcache). */
  mirrorTarget: string;
  /** Port of the mirror inside the engine's namespace. Default 5000 (the namespace is private). */
  mirrorPort?: number;
  /**
   * Address of the mirror inside the engine's namespace. Default 127.0.0.1. dockerd always treats
   * 127.0.0.0/8 as an insecure registry (TLS not verified): a test of certificate verification
   * needs another address, which is added to the namespace's loopback interface.
   */
  mirrorAddress?: string;
  /** Extra daemon.json keys (override the defaults). */
  daemonConfig?: Record<string, unknown>;
  /** How long the engine may take to answer its API. Default 60000. */
  startTimeoutMs?: number;
}

const DOCKERD = '/usr/sbin/dockerd';
// The CLI Debian's docker.io ships (same version as the engine, as CI installs it); else PATH's.
const DOCKER_CLI = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

/** Live engines, killed synchronously if the test process exits without closing them. */
const live = new Set<{ kill(): void }>();
process.once('exit', () => {
  for (const e of live) e.kill();
});

function requireTools(): void {
  const missing = [DOCKERD, '/usr/bin/unshare', '/usr/bin/socat', '/usr/bin/nsenter'].filter((p) => !existsSync(p));
  if (missing.length > 0) {
    throw new Error(`cannot start a Docker engine: missing ${missing.join(', ')} (apt-get install docker.io socat util-linux)`);
  }
  if (process.getuid?.() !== 0) throw new Error('cannot start a Docker engine: dockerd needs root (the tests run as uid 0 in CI)');
}

/** Mount points at or below `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  const r = spawnSync('findmnt', ['-rn', '-o', 'TARGET'], { encoding: 'utf8' });
  return (r.stdout ?? '')
    .split('\n')
    .map((l) => l.trim().replace(/\\x20/g, ' '))
    .filter((t) => t === dir || t.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Forwards connections on a unix socket to `target` (host:port) and records the head of every
 * HTTP request passing towards it. The engine sends GET/HEAD without bodies; a request with a
 * body is skipped by its Content-Length, and a chunked one stops recording on that connection.
 */
function startBridge(socketPath: string, target: () => string, requests: EngineRequest[]): Promise<Server> {
  let connections = 0;
  let seq = 0;
  const server = createServer((client: Socket) => {
    const connection = ++connections;
    const to = target();
    const upstream = connect({ host: to.slice(0, to.lastIndexOf(':')), port: Number(to.slice(to.lastIndexOf(':') + 1)) });
    let buf = Buffer.alloc(0);
    let skip = 0;
    let recording = true;
    client.on('data', (chunk: Buffer) => {
      if (!recording) return;
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (skip > 0) {
          const n = Math.min(skip, buf.length);
          skip -= n;
          buf = buf.subarray(n);
          if (skip > 0) return;
        }
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
        buf = buf.subarray(end + 4);
        const [method = '', url = ''] = lines[0]!.split(' ');
        const headers: Record<string, string> = {};
        for (const line of lines.slice(1)) {
          const i = line.indexOf(':');
          if (i <= 0) continue;
          const name = line.slice(0, i).trim().toLowerCase();
          const value = line.slice(i + 1).trim();
          headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
        }
        requests.push({ seq: ++seq, connection, method, url, headers });
        if (/chunked/i.test(headers['transfer-encoding'] ?? '')) recording = false;
        skip = Number(headers['content-length'] ?? 0) || 0;
      }
    });
    client.pipe(upstream);
    upstream.pipe(client);
    const destroy = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', destroy);
    upstream.on('error', destroy);
    client.on('close', destroy);
    upstream.on('close', destroy);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve(server));
  });
}

/** Starts an engine in its own network namespace, mirroring Docker Hub to `mirrorTarget`. */
export async function startDockerEngine(opts: StartDockerEngineOptions): Promise<DockerEngine> {
  requireTools();
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-dockerd-'));
  const mirrorPort = opts.mirrorPort ?? 5000;
  const mirrorAddress = opts.mirrorAddress ?? '127.0.0.1';
  const mirrorHost = `${mirrorAddress}:${mirrorPort}`;
  const bridgeSocket = join(dir, 'mirror.sock');
  const socket = join(dir, 'docker.sock');
  const dataRoot = join(dir, 'data');
  const clientConfig = join(dir, 'client');
  mkdirSync(clientConfig);
  writeFileSync(join(clientConfig, 'config.json'), '{}\n');
  const daemonConfig: Record<string, unknown> = {
    'storage-driver': 'vfs',
    iptables: false,
    ip6tables: false,
    bridge: 'none',
    'data-root': dataRoot,
    'exec-root': join(dir, 'exec'),
    pidfile: join(dir, 'docker.pid'),
    // Otherwise 20.10 writes its trust key to /etc/docker/key.json on the host.
    'deprecated-key-path': join(dir, 'key.json'),
    hosts: [`unix://${socket}`],
    'registry-mirrors': [`http://${mirrorHost}`],
    'insecure-registries': [mirrorHost],
    ...opts.daemonConfig,
  };
  const configPath = join(dir, 'daemon.json');
  writeFileSync(configPath, JSON.stringify(daemonConfig, null, 2));

  const requests: EngineRequest[] = [];
  let mirrorTarget = opts.mirrorTarget;
  let bridge: Server | undefined;
  let child: ChildProcess | undefined;
  let logText = '';
  const logWaiters: Array<{ re: RegExp; resolve: (line: string) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }> = [];
  const onLog = (d: Buffer) => {
    const before = logText.length;
    logText += d.toString();
    if (logWaiters.length === 0) return;
    // Match whole lines only: a chunk may end mid-line.
    const start = logText.lastIndexOf('\n', before) + 1;
    const end = logText.lastIndexOf('\n') + 1;
    for (const line of logText.slice(start, end).split('\n')) {
      for (const w of [...logWaiters]) {
        if (w.re.test(line)) {
          logWaiters.splice(logWaiters.indexOf(w), 1);
          clearTimeout(w.timer);
          w.resolve(line);
        }
      }
    }
  };
  const waitForLog = (re: RegExp, { from = 0, timeoutMs = 30_000 }: { from?: number; timeoutMs?: number } = {}): Promise<string> => {
    const found = logText.slice(logText.lastIndexOf('\n', from) + 1).split('\n').find((l) => re.test(l));
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = {
        re,
        resolve,
        reject,
        timer: setTimeout(() => {
          logWaiters.splice(logWaiters.indexOf(w), 1);
          reject(new Error(`dockerd logged nothing matching ${re} within ${timeoutMs} ms; log tail:\n${logText.slice(-3000)}`));
        }, timeoutMs),
      };
      logWaiters.push(w);
    });
  };

  const run = (args: string[], o: DockerRunOptions = {}): Promise<DockerRunResult> =>
    new Promise((resolve, reject) => {
      const p = spawn(DOCKER_CLI, ['-H', `unix://${socket}`, ...args], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, DOCKER_CONFIG: o.configDir ?? clientConfig },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      p.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => {
        stderr += `\n[killed after ${o.timeoutMs ?? 120_000} ms]`;
        p.kill('SIGKILL');
      }, o.timeoutMs ?? 120_000);
      p.on('error', (e) => (clearTimeout(timer), reject(e)));
      p.on('close', (code) => (clearTimeout(timer), resolve({ code, stdout, stderr })));
    });
  const docker = async (args: string[], o?: DockerRunOptions) => {
    const r = await run(args, o);
    if (r.code !== 0) throw new Error(`docker ${args.join(' ')} exited with ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  };

  let exited: Promise<unknown[]> | undefined;
  const containerdPid = (): number | undefined => {
    const m = /libcontainerd: started new containerd process" pid=(\d+)/.exec(logText);
    return m ? Number(m[1]) : undefined;
  };
  const killer = {
    kill: () => {
      for (const pid of [child?.pid && -child.pid, containerdPid()]) {
        if (!pid) continue;
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    },
  };

  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      const pid = child?.pid;
      if (pid !== undefined && child!.exitCode === null && child!.signalCode === null) {
        // dockerd stops its containerd on SIGTERM; give it a deadline, then kill the group.
        process.kill(pid, 'SIGTERM');
        const deadline = delay(30_000, 'timeout', { ref: false });
        if ((await Promise.race([exited, deadline])) === 'timeout') killer.kill();
        await exited;
      }
      // socat shares dockerd's process group; containerd has its own.
      try {
        if (pid !== undefined) process.kill(-pid, 'SIGKILL');
      } catch {
        /* group already empty */
      }
      const cpid = containerdPid();
      if (cpid !== undefined && alive(cpid)) {
        process.kill(cpid, 'SIGKILL');
        // Not our child: no exit event. Bounded wait for the kernel to reap it.
        for (let i = 0; i < 200 && alive(cpid); i++) await delay(25);
      }
      live.delete(killer);
      for (const w of logWaiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(new Error(`dockerd stopped before logging anything matching ${w.re}`));
      }
      await new Promise<void>((resolve) => (bridge ? bridge.close(() => resolve()) : resolve()));
      for (const m of mountsUnder(dir)) spawnSync('umount', ['-l', m]);
      const left = mountsUnder(dir);
      rmSync(dir, { recursive: true, force: true });
      if (left.length > 0) throw new Error(`dockerd left mounts that would not unmount: ${left.join(', ')}`);
    })());

  try {
    bridge = await startBridge(bridgeSocket, () => mirrorTarget, requests);
    // bash forks socat (the namespace's mirror port → the bridge socket), then becomes dockerd.
    const script = [
      'set -e',
      'ip link set lo up',
      ...(mirrorAddress.startsWith('127.') ? [] : [`ip addr add ${mirrorAddress}/32 dev lo`]),
      `socat TCP-LISTEN:${mirrorPort},fork,bind=${mirrorAddress},reuseaddr UNIX-CONNECT:${bridgeSocket} &`,
      `exec ${DOCKERD} --config-file ${configPath}`,
    ].join('\n');
    child = spawn('/usr/bin/unshare', ['-n', 'bash', '-c', script], {
      detached: true, // own process group: close() can kill dockerd and socat together
      env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(killer);
    exited = once(child, 'exit');
    child.stdout!.on('data', onLog);
    child.stderr!.on('data', onLog);
    const timeoutMs = opts.startTimeoutMs ?? 60_000;
    const startFailed = exited.then(([code, signal]) => {
      throw new Error(`dockerd exited (${code ?? signal}) before it was ready; log tail:\n${logText.slice(-3000)}`);
    });
    // "API listen on <socket>" is dockerd's own readiness line.
    await Promise.race([waitForLog(/API listen on /, { timeoutMs }), startFailed]);
    const version = await run(['version', '--format', '{{.Server.Version}}'], { timeoutMs: 20_000 });
    if (version.code !== 0) throw new Error(`dockerd logged readiness but its API does not answer: ${version.stderr}`);
    // socat was forked before dockerd; confirm it listens inside the namespace (bounded check).
    for (let i = 0; ; i++) {
      const ss = spawnSync('nsenter', [`--net=/proc/${child.pid}/ns/net`, 'ss', '-Hltn', `sport = :${mirrorPort}`], { encoding: 'utf8' });
      if (ss.stdout?.includes(`:${mirrorPort}`)) break;
      if (i >= 100) throw new Error(`socat is not listening on ${mirrorHost} in the engine's namespace: ${ss.stderr}`);
      await delay(50);
    }
    void startFailed.catch(() => {}); // a later exit is close()'s business
  } catch (e) {
    await close().catch(() => {});
    throw e;
  }

  return {
    dir,
    dataRoot,
    socket,
    mirrorUrl: `http://${mirrorHost}`,
    daemonConfig,
    pid: child.pid!,
    requests,
    get mirrorTarget() {
      return mirrorTarget;
    },
    set mirrorTarget(t: string) {
      mirrorTarget = t;
    },
    log: () => logText,
    waitForLog,
    run,
    docker,
    close,
  };
}

/** A DOCKER_CONFIG directory whose config.json holds Docker Hub credentials (what `docker login` writes). */
export function dockerHubLoginConfig(parent: string, username: string, password: string): string {
  const d = mkdtempSync(join(parent, 'docker-config-'));
  const auth = Buffer.from(`${username}:${password}`).toString('base64');
  writeFileSync(join(d, 'config.json'), JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth } } }, null, 2));
  return d;
}

