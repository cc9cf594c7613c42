import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { LogLines } from './log-lines.js';

const BIN = fileURLToPath(new URL('../../bin/hubcache.js', import.meta.url));

export interface HubcacheProcess {
  readonly url: string;
  /** host:port, for image references (`127.0.0.1:PORT/library/x:1`). */
  readonly host: string;
  readonly storagePath: string;
  readonly child: ChildProcess;
  /** Every JSON log line so far. */
  readonly logs: Array<Record<string, unknown>>;
  /** Resolves with the first log line (past or future) matching `pred`. */
  waitForLog(pred: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Prometheus text of /metrics. */
  metrics(): Promise<string>;
  /** Sends SIGTERM and waits for the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Stops and removes the storage dir unless it was given. */
  close(): Promise<void>;
}

export interface StartHubcacheOptions {
  upstreamUrl?: string;
  /** The default upstream and the token realm it names (upstream-harness.ts): sets both flags. */
  upstream?: { readonly url: string; readonly realmOrigin: string };
  storagePath?: string;
  /**
   * Flags choosing the store instead of `--storage-path <temp dir>` (e.g. `--storage-driver s3
   * --storage-bucket …`): nothing local is created or removed then.
   */
  storageArgs?: readonly string[];
  /** Extra CLI flags, e.g. ['--tag-ttl', '1s']. */
  args?: string[];
  env?: Record<string, string>;
  config?: string;
  /** The CLI entry to run instead of bin/hubcache.js (the bench runs a compiled build, as production does). */
  bin?: string;
}

/** Starts a real hubcache process (the CLI, as users run it) on a free loopback port. */
export async function startHubcacheProcess(opts: StartHubcacheOptions = {}): Promise<HubcacheProcess> {
  const ownsStorage = opts.storagePath === undefined && opts.storageArgs === undefined;
  const storagePath = opts.storagePath ?? (opts.storageArgs ? '' : mkdtempSync(join(tmpdir(), 'hubcache-store-')));
  const args = [opts.bin ?? BIN, 'serve', '--listen', '127.0.0.1:0', ...(opts.storageArgs ?? ['--storage-path', storagePath]), '--log-level', 'debug', '--log-format', 'json'];
  if (opts.upstreamUrl) args.push('--upstream-url', opts.upstreamUrl);
  if (opts.upstream) args.push('--upstream-url', opts.upstream.url, '--upstream-allowed-realm-hosts', opts.upstream.realmOrigin);
  if (opts.config) args.push('--config', opts.config);
  args.push(...(opts.args ?? []));
  const child = spawn(process.execPath, args, {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = new LogLines();
  const logs = log.lines;
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  createInterface({ input: child.stdout! }).on('line', (text) => log.add(text));
  const exited = once(child, 'exit');
  const waitForLog = (pred: (l: Record<string, unknown>) => boolean, timeoutMs = 20_000) => log.waitFor(pred, timeoutMs, () => `; stderr: ${stderr}`);
  const started = await Promise.race([
    waitForLog((l) => l.message === 'hubcache started'),
    exited.then(([code]) => {
      throw new Error(`hubcache exited with ${code} before starting: ${stderr}`);
    }),
  ]);
  const url = String(started.listen);
  let exitCode: number | null | undefined;
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (exitCode !== undefined) return exitCode;
    if (child.exitCode === null) child.kill(signal);
    const [code] = await exited;
    exitCode = code as number | null;
    return exitCode;
  };
  return {
    url,
    host: new URL(url).host,
    storagePath,
    child,
    logs,
    waitForLog,
    metrics: async () => (await fetch(`${url}/metrics`)).text(),
    stop,
    close: async () => {
      await stop();
      if (ownsStorage) rmSync(storagePath, { recursive: true, force: true });
    },
  };
}

/** The value of one Prometheus sample, e.g. metricValue(text, 'hubcache_cache_requests_total', {kind:'blob', outcome:'hit'}). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) {
      total += Number(m[4]);
      found = true;
    }
  }
  return found ? total : 0;
}
