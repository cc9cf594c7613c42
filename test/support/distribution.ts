/**
 * Runs Debian's /usr/bin/docker-registry (CNCF distribution 2.8) as the "Docker Hub" registry,
 * with token auth against our token server, filesystem storage in a temp dir, on a free port.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

export const DISTRIBUTION_BIN = '/usr/bin/docker-registry';

export interface DistributionOptions {
  /** Token auth settings; omit to run without auth (not like Docker Hub, but handy). */
  auth?: { realm: string; service: string; issuer: string; rootCertBundle: string };
  /** Extra YAML appended verbatim to config.yml (top-level keys not otherwise set). */
  extraConfig?: string;
  /** Start timeout in ms. Default 15000. */
  startTimeoutMs?: number;
}

export interface Distribution {
  /** http://127.0.0.1:PORT (direct, bypassing any front). */
  readonly url: string;
  /** 127.0.0.1:PORT */
  readonly host: string;
  readonly port: number;
  /** Temp dir holding config.yml, registry.log and the storage root. */
  readonly dir: string;
  /** Storage `rootdirectory`; blobs live at docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data. */
  readonly storageDir: string;
  readonly logPath: string;
  readonly child: ChildProcess;
  /** The registry's log so far (for failure messages). */
  logs(): string;
  /** Path of a blob's bytes in the storage dir. */
  blobPath(digest: string): string;
  /** Kills the registry and removes the temp dir. */
  close(): Promise<void>;
}

/** A free loopback TCP port (the registry binary needs a number, it can't report a port-0 choice). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

function configYaml(storageDir: string, port: number, opts: DistributionOptions): string {
  const lines = [
    'version: 0.1',
    'log:',
    '  level: info',
    '  formatter: text',
    '  accesslog:',
    '    disabled: false',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${JSON.stringify(storageDir)}`,
    '  delete:',
    '    enabled: true',
    // Upload purging runs a background walker on start; the tests don't need it.
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    `  secret: ${randomBytes(16).toString('hex')}`,
    '  headers:',
    '    X-Content-Type-Options: [nosniff]',
  ];
  if (opts.auth) {
    lines.push(
      'auth:',
      '  token:',
      `    realm: ${JSON.stringify(opts.auth.realm)}`,
      `    service: ${JSON.stringify(opts.auth.service)}`,
      `    issuer: ${JSON.stringify(opts.auth.issuer)}`,
      `    rootcertbundle: ${JSON.stringify(opts.auth.rootCertBundle)}`,
    );
  }
  if (opts.extraConfig) lines.push(opts.extraConfig);
  return lines.join('\n') + '\n';
}

/** Starts distribution and resolves once `GET /v2/` answers (401 with auth, 200 without). */
export async function startDistribution(opts: DistributionOptions = {}): Promise<Distribution> {
  if (!existsSync(DISTRIBUTION_BIN)) throw new Error(`${DISTRIBUTION_BIN} not found: apt-get install docker-registry`);
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-dist-'));
  const storageDir = join(dir, 'storage');
  mkdirSync(storageDir);
  const logPath = join(dir, 'registry.log');
  const configPath = join(dir, 'config.yml');
  const logs = () => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');
  const deadline = Date.now() + (opts.startTimeoutMs ?? 15_000);

  // The port is picked then released before the registry binds it; another process could grab it
  // in between, so retry a few times when the registry dies at start.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    writeFileSync(configPath, configYaml(storageDir, port, opts));
    const logFd = openSync(logPath, 'a');
    // A clean environment: distribution reads REGISTRY_* variables as config overrides.
    const child = spawn(DISTRIBUTION_BIN, ['serve', configPath], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
      stdio: ['ignore', logFd, logFd],
    });
    closeSync(logFd);
    let exited = false;
    const exitP = once(child, 'exit').then(() => void (exited = true));
    const url = `http://127.0.0.1:${port}`;
    const expected = opts.auth ? 401 : 200;
    let ready = false;
    while (!exited && Date.now() < deadline) {
      try {
        const r = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
        await r.arrayBuffer();
        if (r.status === expected) {
          ready = true;
          break;
        }
      } catch {
        /* not listening yet */
      }
      // Poll: wait for the next attempt or the process exiting, whichever first.
      await Promise.race([exitP, new Promise((r) => setTimeout(r, 25))]);
    }
    if (ready) {
      return {
        url,
        host: `127.0.0.1:${port}`,
        port,
        dir,
        storageDir,
        logPath,
        child,
        logs,
        blobPath: (digest) => {
          const [alg, hex] = digest.split(':');
          return join(storageDir, 'docker/registry/v2/blobs', alg!, hex!.slice(0, 2), hex!, 'data');
        },
        close: async () => {
          if (!exited) {
            child.kill('SIGTERM');
            const t = setTimeout(() => child.kill('SIGKILL'), 3000);
            await exitP;
            clearTimeout(t);
          }
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    if (!exited) {
      child.kill('SIGKILL');
      await exitP;
    }
    const log = logs();
    if (attempt < 3 && /address already in use/i.test(log) && Date.now() < deadline) continue;
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`docker-registry did not become ready on ${url}:\n${log}`);
  }
}
