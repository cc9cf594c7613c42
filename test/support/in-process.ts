/**
 * The in-process tier: a whole hubcache (config → stores → upstreams → cache → HTTP) started with
 * `startHubcache` inside the test process, on a loopback port, with a temp store. Seconds, no root,
 * no child process; the config goes through the same loader as the CLI's (file, then flags), so a
 * test exercises the settings as an operator writes them. Logs are captured as parsed JSON lines.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { stringify as toYaml } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/lib/logger.js';
import { startHubcache, type Hubcache } from '../../src/server.js';
import { LogLines } from './log-lines.js';

export interface InProcessOptions {
  /** A config document (what a YAML file would hold); `listen` and `storage.path` are set here. */
  config?: Record<string, unknown>;
  /** CLI flags by name (`tag-ttl`, `upstream-url`, …), applied over the document. */
  flags?: Record<string, string>;
  /** Keep using this store instead of a fresh temp one (not removed by close). */
  storagePath?: string;
  /** Now, for garbage collection's grace period (`StartOptions.clock`). */
  clock?: () => number;
}

export interface InProcessHubcache {
  readonly url: string;
  readonly hub: Hubcache;
  readonly storagePath: string;
  /** Every log line so far, parsed. */
  readonly logs: Array<Record<string, unknown>>;
  /** Resolves with the first log line (past or future) matching `pred`. */
  waitForLog(pred: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  close(deadlineMs?: number): Promise<void>;
}

export async function startInProcess(opts: InProcessOptions = {}): Promise<InProcessHubcache> {
  const ownsStorage = opts.storagePath === undefined;
  const storagePath = opts.storagePath ?? mkdtempSync(join(tmpdir(), 'hubcache-inproc-'));
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-inproc-cfg-'));
  const file = join(dir, 'config.yaml');
  writeFileSync(file, toYaml(opts.config ?? {}));
  let config;
  try {
    config = loadConfig({ file, env: {}, flags: { listen: '127.0.0.1:0', 'storage-path': storagePath, ...opts.flags } });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const log = new LogLines();
  const logs = log.lines;
  let pending = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      pending += chunk.toString('utf8');
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        log.add(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
      cb();
    },
  });
  const logger = createLogger({ level: 'debug', format: 'json', stream: sink });
  const hub = await startHubcache(config, { logger, version: 'test', ...(opts.clock ? { clock: opts.clock } : {}) });
  const waitForLog = (pred: (l: Record<string, unknown>) => boolean, timeoutMs = 20_000) => log.waitFor(pred, timeoutMs);
  let closed: Promise<void> | undefined;
  return {
    url: hub.url,
    hub,
    storagePath,
    logs,
    waitForLog,
    close: (deadlineMs = 2_000) =>
      (closed ??= hub.close(deadlineMs).finally(() => {
        if (ownsStorage) rmSync(storagePath, { recursive: true, force: true });
      })),
  };
}
