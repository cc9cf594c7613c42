import type { ClusterOptions, RedisOptions, SentinelAddress } from 'ioredis';
import type { ClusterConfig } from '../config/schema.js';

/**
 * How to reach the shared Redis, from `cluster.redis` (one of: a URL, Sentinel, Redis Cluster),
 * as ioredis takes it. Pure: tested without a Redis (src/cluster/redis-options.test.ts).
 *
 * Every connection: keys prefixed by `keyPrefix` (two installations share one Redis), commands
 * fail at once while disconnected instead of queueing (`enableOfflineQueue: false`: a request never
 * waits for Redis to come back, it goes on alone — docs/architecture.md#several-replicas), a
 * command that gets no answer fails after `commandTimeoutMs`, and the client reconnects for ever
 * (every 100 ms … 2 s), so Redis coming back is picked up without a restart.
 */
export type RedisConnection =
  | { readonly kind: 'single'; readonly url: string; readonly options: RedisOptions }
  | { readonly kind: 'sentinel'; readonly options: RedisOptions }
  | { readonly kind: 'cluster'; readonly nodes: ReadonlyArray<{ host: string; port: number }>; readonly options: ClusterOptions };

export interface ConnectionTuning {
  /** A command without an answer this long fails (Redis hung or unreachable). */
  readonly commandTimeoutMs?: number;
  /** Name shown by CLIENT LIST. */
  readonly connectionName?: string;
}

export function redisConnection(redis: ClusterConfig['redis'], tuning: ConnectionTuning = {}): RedisConnection {
  const common: RedisOptions = {
    keyPrefix: redis.keyPrefix,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: tuning.commandTimeoutMs ?? 1_000,
    connectTimeout: 2_000,
    retryStrategy: (times: number) => Math.min(times * 100, 2_000),
    lazyConnect: false,
    ...(tuning.connectionName ? { connectionName: tuning.connectionName } : {}),
    ...(redis.username ? { username: redis.username } : {}),
    ...(redis.password ? { password: redis.password } : {}),
  };
  if (redis.url !== undefined) return { kind: 'single', url: redis.url, options: common };
  if (redis.sentinels !== undefined) {
    const sentinels: SentinelAddress[] = redis.sentinels.map(hostPort);
    // The sentinels take the same credentials as the master unless told otherwise (a common setup).
    return {
      kind: 'sentinel',
      options: { ...common, sentinels, name: redis.sentinelName!, ...(redis.password ? { sentinelPassword: redis.password } : {}), sentinelRetryStrategy: (times: number) => Math.min(times * 100, 2_000) },
    };
  }
  const { keyPrefix, enableOfflineQueue, ...redisOptions } = common;
  return {
    kind: 'cluster',
    nodes: (redis.nodes ?? []).map(hostPort),
    options: { keyPrefix, enableOfflineQueue, redisOptions, clusterRetryStrategy: (times: number) => Math.min(times * 100, 2_000) },
  };
}

function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  const host = s.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(s.slice(i + 1)) };
}
