/**
 * A real S3-compatible store for tests and benches: Debian's Ceph RGW (16.2) as a one-node cluster
 * on loopback — one ceph-mon, one ceph-osd with the memstore backend (all data in RAM), one
 * radosgw (beast frontend) — in a temp dir, on free ports, with a user of known keys.
 * Never a fake S3: wrong credentials are refused (SignatureDoesNotMatch / InvalidAccessKeyId).
 *
 * What makes it start in a few seconds (defaults take ~17 s): `paxos propose interval = 0.05`;
 * `osd crush update on start = false` plus an explicit `osd crush add` (avoids a boot race);
 * cephx off (`auth … required = none`) with the messenger in `crc` mode (the default `secure`
 * mode for mon clients needs cephx: radosgw then fails with "get_initial_auth_request returned -13").
 * `rgw gc obj min wait = 5` so deleted data doesn't stay in RAM for 2 h; `tcp_nodelay=1` on beast
 * (small GETs 48 ms → 3 ms).
 *
 * Usage: `const rgw = await startRgw()` in `before`, `await rgw.stop()` in `after`; a fresh bucket
 * per test with `await rgw.createBucket(name)`.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, ListBucketsCommand, S3Client } from '@aws-sdk/client-s3';
import { freePort } from './distribution.js';

const run = promisify(execFile);

export interface Rgw {
  /** http://127.0.0.1:PORT */
  readonly endpoint: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly region: string;
  /** The temp dir: ceph.conf, log/ (mon, osd, rgw logs). */
  readonly dir: string;
  /** How long the start took, ms (for the report and bench notes). */
  readonly startMs: number;
  /** An S3 client with the user's keys, path-style. The caller must not destroy it. */
  readonly client: S3Client;
  /** Creates a bucket (a fresh one per test); returns its name. */
  createBucket(name?: string): Promise<string>;
  /** Stops radosgw only (S3 unreachable; the cluster stays). Idempotent. */
  stopGateway(): Promise<void>;
  /** Stops every process and removes the temp dir. Idempotent. */
  stop(): Promise<void>;
  /** The tail of radosgw's log (for failure messages). */
  logs(): string;
}

const children = new Set<ChildProcess>();
// A test runner that exits without running `after` (a crash) must not leave Ceph daemons behind.
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

function conf(dir: string, fsid: string, monPort: number, rgwPort: number): string {
  return `[global]
fsid = ${fsid}
mon host = v2:127.0.0.1:${monPort}
mon initial members = a
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms client mode = crc
ms service mode = crc
ms cluster mode = crc
ms mon service mode = crc
ms mon cluster mode = crc
keyring = /dev/null
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
log file = ${dir}/log/$name.log
pid file = ${dir}/run/$name.pid
mon data = ${dir}/mon
osd data = ${dir}/osd
rgw data = ${dir}/rgw
paxos propose interval = 0.05
mon allow pool delete = true
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
osd crush update on start = false
osd objectstore = memstore
memstore device bytes = 12884901888
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort} tcp_nodelay=1
rgw gc obj min wait = 5
rgw dns name = localhost
`;
}

export interface RgwOptions {
  /** Start timeout, ms. Default 60 000 (a loaded CI machine). */
  readonly startTimeoutMs?: number;
}

export async function startRgw(opts: RgwOptions = {}): Promise<Rgw> {
  const t0 = performance.now();
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-rgw-'));
  for (const d of ['run', 'log', 'mon', 'osd', 'rgw']) mkdirSync(join(dir, d));
  const [monPort, rgwPort] = [await freePort(), await freePort()];
  const fsid = randomUUID();
  const cfg = join(dir, 'ceph.conf');
  writeFileSync(cfg, conf(dir, fsid, monPort, rgwPort));
  const accessKeyId = `HC${randomBytes(9).toString('hex').toUpperCase()}`;
  const secretAccessKey = randomBytes(24).toString('base64url');
  const region = 'us-east-1';
  const endpoint = `http://127.0.0.1:${rgwPort}`;
  const mine: ChildProcess[] = [];
  const daemon = (cmd: string, args: string[]) => {
    const c = spawn(cmd, ['-c', cfg, ...args, '-f'], { stdio: 'ignore' });
    children.add(c);
    mine.push(c);
    c.once('exit', () => children.delete(c));
    return c;
  };
  let gateway: ChildProcess | undefined;
  const client = new S3Client({ endpoint, region, forcePathStyle: true, credentials: { accessKeyId, secretAccessKey }, maxAttempts: 1 });
  let stopped = false;
  const stopGateway = async () => {
    if (gateway && gateway.exitCode === null && gateway.signalCode === null) {
      const exited = once(gateway, 'exit');
      gateway.kill('SIGKILL');
      await exited;
    }
  };
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    client.destroy();
    await Promise.all(
      mine.map(async (c) => {
        if (c.exitCode !== null || c.signalCode !== null) return;
        const exited = once(c, 'exit');
        c.kill('SIGKILL'); // memstore: nothing to flush
        await exited;
      }),
    );
    rmSync(dir, { recursive: true, force: true });
  };
  const logs = () => {
    try {
      return readFileSync(join(dir, 'log', 'client.rgw.log'), 'utf8').slice(-4000);
    } catch {
      return '';
    }
  };
  try {
    await run('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, join(dir, 'monmap')]);
    await run('ceph-mon', ['-c', cfg, '--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap')]);
    daemon('ceph-mon', ['-i', 'a']);
    const osdUuid = randomUUID();
    const ceph = (...args: string[]) => run('ceph', ['-c', cfg, '--connect-timeout', '30', ...args]);
    await ceph('osd', 'new', osdUuid);
    await Promise.all([run('ceph-osd', ['-c', cfg, '-i', '0', '--mkfs', '--osd-uuid', osdUuid]), ceph('osd', 'crush', 'add', 'osd.0', '1', 'root=default')]);
    daemon('ceph-osd', ['-i', '0']);
    gateway = daemon('radosgw', ['-n', 'client.rgw']);
    await run('radosgw-admin', ['-c', cfg, 'user', 'create', '--uid', 'hubcache', '--display-name', 'hubcache tests', '--access-key', accessKeyId, '--secret-key', secretAccessKey]);
    const deadline = Date.now() + (opts.startTimeoutMs ?? 60_000);
    for (;;) {
      for (const c of mine) if (c.exitCode !== null || c.signalCode !== null) throw new Error(`${c.spawnfile} exited (${c.exitCode ?? c.signalCode}) while starting`);
      try {
        await client.send(new ListBucketsCommand({}));
        break;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`RGW not ready after ${opts.startTimeoutMs ?? 60_000} ms: ${String(err)}\n${logs()}`);
        // Polled: the gateway reports readiness nowhere else. 50 ms between tries.
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
  const startMs = performance.now() - t0;
  let n = 0;
  return {
    endpoint,
    accessKeyId,
    secretAccessKey,
    region,
    dir,
    startMs,
    client,
    async createBucket(name = `t-${process.pid}-${++n}-${randomBytes(3).toString('hex')}`) {
      await client.send(new CreateBucketCommand({ Bucket: name }));
      return name;
    },
    stopGateway,
    stop,
    logs,
  };
}
