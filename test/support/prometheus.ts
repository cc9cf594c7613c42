/**
 * A real Prometheus (Debian's `prometheus` binary) for tests: scrapes the given targets on loopback
 * every `scrapeInterval`, keeps its TSDB in a temp dir, and is queried through its HTTP API.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';

export interface PromSample {
  metric: Record<string, string>;
  /** [unix seconds, value as Prometheus formats it] */
  value: [number, string];
}

export interface Prometheus {
  readonly url: string;
  /** Instant query; `time` in unix seconds (default: now). */
  query(expr: string, time?: number): Promise<PromSample[]>;
  /** Resolves once `pred` holds for the result of `expr` (re-queried until `timeoutMs`). */
  waitFor(expr: string, pred: (r: PromSample[]) => boolean, timeoutMs?: number): Promise<PromSample[]>;
  /** Active targets as /api/v1/targets reports them. */
  targets(): Promise<Array<{ scrapeUrl: string; health: string; lastError: string; lastScrape: string }>>;
  close(): Promise<void>;
}

export interface StartPrometheusOptions {
  /** host:port of each target (metrics at /metrics). */
  targets: string[];
  /** Default '250ms'. */
  scrapeInterval?: string;
  job?: string;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

export async function startPrometheus(opts: StartPrometheusOptions): Promise<Prometheus> {
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-prometheus-'));
  const interval = opts.scrapeInterval ?? '250ms';
  const config = {
    global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: '1s' },
    scrape_configs: [{ job_name: opts.job ?? 'hubcache', metrics_path: '/metrics', static_configs: [{ targets: opts.targets }] }],
  };
  writeFileSync(join(dir, 'prometheus.yml'), stringify(config));
  const port = await freePort();
  const args = [
    `--config.file=${join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
  ];
  const child: ChildProcess = spawn('prometheus', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = once(child, 'exit');
  const url = `http://127.0.0.1:${port}`;
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const api = async (path: string): Promise<unknown> => {
    const res = await fetch(`${url}${path}`);
    const body = (await res.json()) as { status: string; data: unknown; error?: string };
    if (body.status !== 'success') throw new Error(`prometheus ${path}: ${body.error}`);
    return body.data;
  };
  const query = async (expr: string, time?: number) => {
    const q = new URLSearchParams({ query: expr, ...(time !== undefined ? { time: String(time) } : {}) });
    const data = (await api(`/api/v1/query?${q}`)) as { resultType: string; result: PromSample[] | [number, string] };
    if (data.resultType === 'scalar') return [{ metric: {}, value: data.result as [number, string] }];
    return data.result as PromSample[];
  };
  const until = async <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`prometheus exited: ${stderr}`);
      try {
        const v = await probe();
        if (v !== undefined) return v;
      } catch (err) {
        last = err;
      }
      if (Date.now() > deadline) throw new Error(`prometheus: ${what} not reached within ${timeoutMs} ms (${String(last ?? '')}); stderr: ${stderr}`);
      // Prometheus has no push notification for "scraped": re-ask at a fraction of the scrape interval.
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  try {
    await until('ready', async () => ((await fetch(`${url}/-/ready`)).ok ? true : undefined), 30_000);
  } catch (err) {
    await close();
    throw err;
  }
  return {
    url,
    query,
    waitFor: (expr, pred, timeoutMs = 30_000) =>
      until(`condition on ${expr}`, async () => {
        const r = await query(expr);
        return pred(r) ? r : undefined;
      }, timeoutMs),
    targets: async () => ((await api('/api/v1/targets')) as { activeTargets: Array<{ scrapeUrl: string; health: string; lastError: string; lastScrape: string }> }).activeTargets,
    close,
  };
}
