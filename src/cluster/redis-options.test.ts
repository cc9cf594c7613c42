import assert from 'node:assert/strict';
import { it } from 'node:test';
import { configSchema } from '../config/schema.js';
import { redisConnection } from './redis-options.js';

const cluster = (redis: Record<string, unknown>) => configSchema.parse({ cluster: { redis, advertiseUrl: 'http://10.0.0.1:5001' } }).cluster!;

it('a redis:// URL is one node: the URL as given, the key prefix, no offline queue, a command timeout and endless reconnects', () => {
  const c = redisConnection(cluster({ url: 'rediss://user:pw@redis.example:6380/2', keyPrefix: 'mirror-a:' }).redis);
  assert.equal(c.kind, 'single');
  assert.ok(c.kind === 'single');
  assert.equal(c.url, 'rediss://user:pw@redis.example:6380/2');
  assert.equal(c.options.keyPrefix, 'mirror-a:');
  assert.equal(c.options.enableOfflineQueue, false);
  assert.equal(c.options.maxRetriesPerRequest, 0);
  assert.equal(c.options.commandTimeout, 1_000);
  assert.equal(c.options.retryStrategy?.(1_000), 2_000, 'never gives up reconnecting');
});

it('sentinels and a master name become ioredis sentinel options, the password for both master and sentinels', () => {
  const c = redisConnection(cluster({ sentinels: ['s1.redis:26379', '[fd00::7]:26380'], sentinelName: 'mymaster', password: 'pw', username: 'hub' }).redis);
  assert.equal(c.kind, 'sentinel');
  assert.deepEqual(c.options.sentinels, [
    { host: 's1.redis', port: 26379 },
    { host: 'fd00::7', port: 26380 },
  ]);
  assert.equal(c.options.name, 'mymaster');
  assert.equal(c.options.password, 'pw');
  assert.equal(c.options.username, 'hub');
  assert.equal(c.options.sentinelPassword, 'pw');
  assert.equal(c.options.keyPrefix, 'hubcache:', 'the default prefix');
});

it('Redis Cluster nodes (also as one comma-separated string from the environment) become a Cluster with the prefix on the cluster and the credentials per node', () => {
  const c = redisConnection(cluster({ nodes: 'n1:7000, n2:7001', password: 'pw' }).redis);
  assert.ok(c.kind === 'cluster');
  assert.deepEqual(c.nodes, [
    { host: 'n1', port: 7000 },
    { host: 'n2', port: 7001 },
  ]);
  assert.equal(c.options.keyPrefix, 'hubcache:');
  assert.equal(c.options.enableOfflineQueue, false);
  assert.equal(c.options.redisOptions?.password, 'pw');
});

it('the config refuses a cluster without exactly one Redis address, sentinels without a name, and a cluster without advertiseUrl', () => {
  const bad = (c: Record<string, unknown>) => configSchema.safeParse({ cluster: c }).success;
  assert.equal(bad({ redis: {}, advertiseUrl: 'http://a:5001' }), false);
  assert.equal(bad({ redis: { url: 'redis://r:6379', nodes: ['n:1'] }, advertiseUrl: 'http://a:5001' }), false);
  assert.equal(bad({ redis: { sentinels: ['s:26379'] }, advertiseUrl: 'http://a:5001' }), false);
  assert.equal(bad({ redis: { url: 'http://r:6379' }, advertiseUrl: 'http://a:5001' }), false);
  assert.equal(bad({ redis: { url: 'redis://r:6379' } }), false);
  const ok = configSchema.parse({ cluster: { redis: { url: 'redis://r:6379' }, advertiseUrl: 'http://a:5001/' } }).cluster!;
  assert.deepEqual({ peerListen: ok.peerListen, advertiseUrl: ok.advertiseUrl, fillLeaseTtl: ok.fillLeaseTtl }, { peerListen: '0.0.0.0:5001', advertiseUrl: 'http://a:5001', fillLeaseTtl: 10_000 });
  assert.equal(configSchema.parse({}).cluster, undefined, 'a single node: no cluster');
});
