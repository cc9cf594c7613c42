/**
 * Real `hubcache serve` replicas of one cluster (issue #15): each its own process on a free loopback
 * port, all on one bucket of a Ceph RGW (rgw.ts) and one redis-server (redis.ts), each with its own
 * peer (follow) endpoint on a free port advertised to the others, S3 credentials from the AWS_* env.
 * Used by test/e2e/replicas.test.ts and bench/replicas.ts.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './distribution.js';
import { startHubcacheProcess, type HubcacheProcess } from './hubcache-process.js';
import type { Rgw } from './rgw.js';

export interface ReplicaOptions {
  /** The default upstream and its token realm (upstream-harness.ts). */
  readonly upstream: { readonly url: string; readonly realmOrigin: string };
  readonly rgw: Rgw;
  readonly bucket: string;
  readonly redisUrl: string;
  /** storage.prefix: the replicas of one cluster share it. */
  readonly prefix: string;
  /** A directory for each replica's local files (spool, hot cache, config). */
  readonly scratch: string;
  /** storage.partSize (default 5MiB: small blobs go multipart too). */
  readonly partSize?: string;
  /** cluster.fillLeaseTtl (default 2s: a dead replica's lease expires soon). */
  readonly fillLeaseTtl?: string;
  /** The CLI entry (a compiled build for benches), node flags and extra CLI flags. */
  readonly bin?: string;
  readonly nodeArgs?: string[];
  readonly args?: string[];
}

/**
 * Starts replica `i`. `hotCache`: storage.hotCache.maxSize for this replica (a local directory in
 * front of the bucket; set through a config file, it is a nested key with no flag).
 */
export async function startReplica(o: ReplicaOptions, i: number, extra: { hotCache?: string } = {}): Promise<HubcacheProcess> {
  const peerPort = await freePort();
  const local = mkdtempSync(join(o.scratch, `replica-${i}-`));
  let config: string | undefined;
  if (extra.hotCache) {
    config = join(local, 'hubcache.yaml');
    writeFileSync(config, `storage:\n  hotCache:\n    path: ${JSON.stringify(join(local, 'hot'))}\n    maxSize: ${extra.hotCache}\n`);
  }
  return startHubcacheProcess({
    upstream: o.upstream,
    ...(o.bin ? { bin: o.bin } : {}),
    ...(o.nodeArgs ? { nodeArgs: o.nodeArgs } : {}),
    ...(config ? { config } : {}),
    storageArgs: [
      '--storage-driver', 's3', '--storage-bucket', o.bucket, '--storage-endpoint', o.rgw.endpoint, '--storage-force-path-style', 'true',
      '--storage-prefix', o.prefix, '--storage-part-size', o.partSize ?? '5MiB', '--storage-path', local,
    ],
    args: [
      '--cluster-redis-url', o.redisUrl, '--cluster-peer-listen', `127.0.0.1:${peerPort}`, '--cluster-advertise-url', `http://127.0.0.1:${peerPort}`,
      '--cluster-fill-lease-ttl', o.fillLeaseTtl ?? '2s',
      ...(o.args ?? []),
    ],
    env: { AWS_ACCESS_KEY_ID: o.rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: o.rgw.secretAccessKey },
  });
}

/** `n` replicas started at once (replica i gets `extra(i)`). */
export function startReplicas(o: ReplicaOptions, n: number, extra: (i: number) => { hotCache?: string } = () => ({})): Promise<HubcacheProcess[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => startReplica(o, i, extra(i))));
}
