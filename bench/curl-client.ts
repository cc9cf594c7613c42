/**
 * The benchmark's HTTP client: curl, writing to /dev/null. A C client in its own process reads a
 * loopback stream faster than a Node client would and competes less for the two CPUs here with the
 * servers under test; curl's own timers (`-w`) measure each transfer from its own start.
 */
import { spawn } from 'node:child_process';

export interface Transfer {
  status: number;
  bytes: number;
  /** Time to the first body byte (ms). */
  ttfbMs: number;
  /** Time to the last byte (ms), from curl's start of this transfer. */
  totalMs: number;
}

const WRITE_OUT = '%{http_code} %{size_download} %{time_starttransfer} %{time_total}';

/** GET `url` once, discarding the body; rejects on a non-2xx answer or a curl failure. */
export function curlGet(url: string, opts: { headers?: Record<string, string>; timeoutMs?: number; caCert?: string } = {}): Promise<Transfer> {
  const args = ['-sS', '-o', '/dev/null', '-w', WRITE_OUT, '--max-time', String(Math.ceil((opts.timeoutMs ?? 120_000) / 1000))];
  if (opts.caCert) args.push('--cacert', opts.caCert);
  for (const [k, v] of Object.entries(opts.headers ?? {})) args.push('-H', `${k}: ${v}`);
  args.push(url);
  return new Promise((resolve, reject) => {
    const child = spawn('curl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const [status, bytes, ttfb, total] = out.trim().split(' ').map(Number);
      if (code !== 0) return reject(new Error(`curl ${url} exited ${code}: ${err.trim()} (${out})`));
      if (!(status! >= 200 && status! < 300)) return reject(new Error(`curl ${url} → HTTP ${status}`));
      resolve({ status: status!, bytes: bytes!, ttfbMs: ttfb! * 1000, totalMs: total! * 1000 });
    });
  });
}

/** `n` curls of `url` started together; resolves with every transfer and the wall time of all. */
export async function curlMany(url: string, n: number, opts: { headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<{ transfers: Transfer[]; wallMs: number }> {
  const t0 = performance.now();
  const transfers = await Promise.all(Array.from({ length: n }, () => curlGet(url, opts)));
  return { transfers, wallMs: performance.now() - t0 };
}

/** A transfer whose body was hashed on the way (curl piped into sha256sum): its digest, `sha256:<hex>`. */
export interface HashedTransfer extends Transfer {
  readonly digest: string;
}

/**
 * GET `url` once with curl, its body piped into `sha256sum` (both their own processes, as fast as
 * curl alone on these sizes); curl's timers go to stderr (`%{stderr}`). Rejects like `curlGet`.
 */
export function curlHash(url: string, opts: { headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<HashedTransfer> {
  const headers = Object.entries(opts.headers ?? {}).flatMap(([k, v]) => ['-H', `${k}: ${v}`]);
  const curl = ['curl', '-sS', '-w', `%{stderr}\\n@@ ${WRITE_OUT}\\n`, '--max-time', String(Math.ceil((opts.timeoutMs ?? 120_000) / 1000)), ...headers, url];
  return new Promise((resolve, reject) => {
    // bash -o pipefail: a failing curl fails the pipeline; "$@" keeps every argument intact.
    const child = spawn('bash', ['-o', 'pipefail', '-c', '"$@" | sha256sum', 'curl-hash', ...curl], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const line = /^@@ (.*)$/m.exec(err)?.[1] ?? '';
      const [status, bytes, ttfb, total] = line.trim().split(' ').map(Number);
      if (code !== 0 || !line) return reject(new Error(`curl ${url} exited ${code}: ${err.trim()}`));
      if (!(status! >= 200 && status! < 300)) return reject(new Error(`curl ${url} → HTTP ${status}`));
      resolve({ status: status!, bytes: bytes!, ttfbMs: ttfb! * 1000, totalMs: total! * 1000, digest: `sha256:${out.split(' ')[0]}` });
    });
  });
}
