/**
 * skopeo as a real client, isolated from the host: its own TMPDIR/HOME, an auth file with no
 * entries, an empty registries.conf, no signature policy, plain http allowed, and a timeout.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface SkopeoResult {
  stdout: Buffer;
  stderr: string;
}

export interface SkopeoRunOptions {
  /** Kill skopeo after this many ms. Default 60000. */
  timeoutMs?: number;
}

export interface SkopeoCopyOptions extends SkopeoRunOptions {
  /** --all: copy every image of an index. */
  all?: boolean;
  /** USER:PASSWORD for the source registry. */
  srcCreds?: string;
  /** USER:PASSWORD for the destination registry. */
  destCreds?: string;
  /** Verify the source's TLS certificate against the CA certificates (`*.crt`) in this directory (else TLS isn't verified). */
  srcCertDir?: string;
  /** Verify the destination's TLS certificate against the CA certificates in this directory (else TLS isn't verified). */
  destCertDir?: string;
  /** More flags for `skopeo copy`. */
  extraArgs?: string[];
}

export interface SkopeoInspectOptions extends SkopeoRunOptions {
  /** USER:PASSWORD. */
  creds?: string;
  /** Verify the registry's TLS certificate against the CA certificates (`*.crt`) in this directory (else TLS isn't verified). */
  certDir?: string;
  /** More flags for `skopeo inspect`. */
  extraArgs?: string[];
}

/** Thrown on a non-zero exit or timeout; carries skopeo's stderr. */
export class SkopeoError extends Error {
  constructor(
    message: string,
    readonly args: string[],
    readonly code: number | null,
    readonly stderr: string,
  ) {
    super(message);
  }
}

/**
 * Runs `skopeo ARGS` with an isolated environment. An empty auth file must still be JSON:
 * skopeo 1.9 fails with "unexpected end of JSON input" on a zero-byte --authfile.
 */
export async function runSkopeo(args: string[], opts: SkopeoRunOptions = {}): Promise<SkopeoResult> {
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-skopeo-'));
  try {
    const authfile = join(dir, 'auth.json');
    writeFileSync(authfile, '{"auths":{}}');
    const registriesConf = join(dir, 'registries.conf');
    writeFileSync(registriesConf, '');
    const [sub, ...rest] = args;
    const full = ['--tmpdir', dir, '--insecure-policy', sub!, '--authfile', authfile, ...rest];
    return await new Promise<SkopeoResult>((resolve, reject) => {
      const child = spawn('skopeo', full, {
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: dir,
          TMPDIR: dir,
          XDG_RUNTIME_DIR: dir,
          XDG_CONFIG_HOME: dir,
          // Host mirrors or short-name aliases must not redirect our references.
          CONTAINERS_REGISTRIES_CONF: registriesConf,
          REGISTRIES_CONFIG_PATH: registriesConf,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      let err = '';
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const timeoutMs = opts.timeoutMs ?? 60_000;
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        if (timedOut) reject(new SkopeoError(`skopeo ${args.join(' ')} timed out after ${timeoutMs} ms: ${err}`, args, code, err));
        else if (code !== 0) reject(new SkopeoError(`skopeo ${args.join(' ')} exited ${code}: ${err}`, args, code, err));
        else resolve({ stdout: Buffer.concat(out), stderr: err });
      });
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `skopeo copy SRC DST` over plain http (TLS verification off both ways). */
export function skopeoCopy(src: string, dst: string, opts: SkopeoCopyOptions = {}): Promise<SkopeoResult> {
  const args = ['copy', ...(opts.srcCertDir ? ['--src-cert-dir', opts.srcCertDir] : ['--src-tls-verify=false']), ...(opts.destCertDir ? ['--dest-cert-dir', opts.destCertDir] : ['--dest-tls-verify=false'])];
  if (opts.all) args.push('--all');
  if (opts.srcCreds) args.push('--src-creds', opts.srcCreds);
  if (opts.destCreds) args.push('--dest-creds', opts.destCreds);
  args.push(...(opts.extraArgs ?? []), src, dst);
  return runSkopeo(args, opts);
}

/** `skopeo inspect --raw REF`: the manifest bytes exactly as served (stdout, untouched). */
export async function skopeoInspectRaw(ref: string, opts: SkopeoInspectOptions = {}): Promise<Buffer> {
  const args = ['inspect', '--raw', ...(opts.certDir ? ['--cert-dir', opts.certDir] : ['--tls-verify=false'])];
  if (opts.creds) args.push('--creds', opts.creds);
  args.push(...(opts.extraArgs ?? []), ref);
  return (await runSkopeo(args, opts)).stdout;
}

/** `skopeo inspect REF` parsed (Digest, Architecture, Layers, …). */
export async function skopeoInspect(ref: string, opts: SkopeoInspectOptions = {}): Promise<Record<string, unknown>> {
  const args = ['inspect', ...(opts.certDir ? ['--cert-dir', opts.certDir] : ['--tls-verify=false'])];
  if (opts.creds) args.push('--creds', opts.creds);
  args.push(...(opts.extraArgs ?? []), ref);
  return JSON.parse((await runSkopeo(args, opts)).stdout.toString()) as Record<string, unknown>;
}
