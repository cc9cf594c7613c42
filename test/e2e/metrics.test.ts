/**
 * What operators see in /metrics, asserted exactly after scripted pull sequences against a real
 * hubcache process and the fake Docker Hub; then a real Prometheus scrapes hubcache and the PromQL
 * documented in the README (hit ratio, bytes saved, pulls avoided, rate-limit headroom) returns
 * the values the sequence implies.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { after, afterEach, before, describe, it } from 'node:test';
import { promqlMetricNames, ROOT } from '../deploy/support/metrics-catalog.js';
import { metricValue, startHubcacheProcess, type HubcacheProcess } from '../support/hubcache-process.js';
import { digestOf, makeImage, MediaTypes, type TestImage } from '../support/images.js';
import { startPrometheus, type Prometheus } from '../support/prometheus.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { rawRequest, type RawResponse } from '../support/raw-http.js';
import { startUpstream, type Upstream } from '../support/upstream-harness.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const ACCEPT = [MediaTypes.dockerManifest, MediaTypes.dockerManifestList, MediaTypes.ociManifest, MediaTypes.ociIndex].join(', ');
const HUB = { upstream: 'docker.io' };

let up: Upstream;
const images: TestImage[] = [];

/** Pushes a one-layer image as `repo:v1`. */
async function seeded(repo: string, seed: string, layerSize = 256 * KiB): Promise<TestImage> {
  const img = await makeImage('docker', { seed, layerSize, layers: 1, filesPerLayer: 1 });
  images.push(img);
  await up.push(img, repo, 'v1');
  return img;
}

/** Reads /metrics before and after `fn` and returns a function giving the change of one sample. */
async function measured(hc: HubcacheProcess, fn: () => Promise<void>): Promise<{ delta: (name: string, labels?: Record<string, string>) => number; now: (name: string, labels?: Record<string, string>) => number }> {
  const before = await hc.metrics();
  await fn();
  const afterText = await hc.metrics();
  return {
    delta: (name, labels = {}) => metricValue(afterText, name, labels) - metricValue(before, name, labels),
    now: (name, labels = {}) => metricValue(afterText, name, labels),
  };
}

function get(url: string, headers: Record<string, string> = {}): Promise<RawResponse> {
  return rawRequest(url, { headers, timeoutMs: 60_000 });
}

before(async () => {
  up = await startUpstream({ rateLimit: { limit: 100 } });
});
after(async () => {
  await up?.close();
  for (const i of images) i.dispose();
});

describe('metrics after scripted pulls (exact counters)', () => {
  let hc: HubcacheProcess;
  const blobUrl = (repo: string, digest: string) => `${hc.url}/v2/${repo}/blobs/${digest}`;

  before(async () => {
    hc = await startHubcacheProcess({ upstream: up, args: ['--tag-ttl', '10m'] });
    // The store gauges appear once the store is counted, in the background after start (issue #12).
    await hc.waitForLog((l) => l.message === 'store scanned');
  });
  afterEach(() => up.front.clearFaults());
  after(async () => {
    await hc?.close();
  });

  it('one miss then one hit of the same blob: 1 miss, 1 hit, bytes equal to the blob size, one commit, store gauges grow by the blob', async () => {
    const img = await seeded('library/counted', 'metrics-miss-hit');
    const layer = img.layers[0]!;
    up.front.reset();
    const m = await measured(hc, async () => {
      const first = await get(blobUrl('library/counted', layer.digest));
      assert.equal(first.headers['x-hubcache-cache'], 'miss');
      assert.equal(digestOf(first.body), layer.digest);
      const second = await get(blobUrl('library/counted', layer.digest));
      assert.equal(second.headers['x-hubcache-cache'], 'hit');
      assert.equal(digestOf(second.body), layer.digest);
    });
    assert.equal(m.delta('hubcache_cache_requests_total', { kind: 'blob', outcome: 'miss' }), 1);
    assert.equal(m.delta('hubcache_cache_requests_total', { kind: 'blob', outcome: 'hit' }), 1);
    assert.equal(m.delta('hubcache_cache_requests_total', { kind: 'manifest_tag' }), 0);
    assert.equal(m.delta('hubcache_client_bytes_total', { source: 'upstream' }), layer.size);
    assert.equal(m.delta('hubcache_client_bytes_total', { source: 'cache' }), layer.size);
    assert.equal(m.delta('hubcache_upstream_bytes_total', HUB), layer.size);
    assert.equal(m.delta('hubcache_fills_committed_total'), 1);
    assert.equal(m.delta('hubcache_fills_failed_total'), 0);
    assert.equal(m.now('hubcache_fills_in_flight'), 0);
    assert.equal(m.now('hubcache_fills_queued'), 0);
    assert.equal(m.delta('hubcache_fills_queue_wait_seconds_count'), 1, 'the one download observed its (zero) wait for a slot');
    assert.equal(m.delta('hubcache_fills_abandoned_total'), 0);
    assert.equal(m.delta('hubcache_store_bytes'), layer.size);
    assert.equal(m.delta('hubcache_store_objects'), 1);
    assert.equal(m.delta('hubcache_http_requests_total', { route: 'blob', method: 'GET', status: '2xx' }), 2);
    assert.equal(m.delta('hubcache_http_request_duration_seconds_count', { route: 'blob', method: 'GET' }), 2);
    const upstreamGets = up.front.count({ kind: 'blob', method: 'GET', status: 200 });
    assert.equal(upstreamGets, 1, up.front.dump());
    assert.equal(m.delta('hubcache_upstream_requests_total', { ...HUB, kind: 'blob', method: 'GET', status: '2xx' }), upstreamGets);
    assert.equal(m.delta('hubcache_upstream_requests_total', { ...HUB, kind: 'blob' }), up.front.count({ kind: 'blob' }), 'every upstream exchange counted (401 challenge included)');
    assert.equal(m.delta('hubcache_upstream_token_fetches_total', { ...HUB, result: 'ok' }), 1, 'one token for the new repository');
  });

  it('20 concurrent GETs of an uncached blob: 20 misses, 19 coalesced, 1 fill in flight while it runs, 20× the bytes to clients and 1× from upstream', async () => {
    const img = await seeded('library/joiners', 'metrics-joiners', 2 * MiB);
    const layer = img.layers[0]!;
    const stall = up.front.inject({ type: 'stall', afterBytes: 256 * KiB, when: { kind: 'blob', digest: layer.digest } });
    const firstBytes: Array<Promise<void>> = [];
    const clients: Array<Promise<RawResponse>> = [];
    const m = await measured(hc, async () => {
      for (let i = 0; i < 20; i++) {
        let gotByte!: () => void;
        firstBytes.push(new Promise<void>((r) => (gotByte = r)));
        clients.push(rawRequest(blobUrl('library/joiners', layer.digest), { onData: () => gotByte(), timeoutMs: 60_000 }));
      }
      await Promise.all(firstBytes);
      await stall.hit();
      const during = await hc.metrics();
      assert.equal(metricValue(during, 'hubcache_fills_in_flight'), 1, 'one fill in flight while the upstream stalls');
      assert.equal(metricValue(during, 'hubcache_fills_queued'), 0, 'joiners of a download in flight never queue');
      stall.clear();
      for (const r of await Promise.all(clients)) {
        assert.equal(r.outcome, 'complete');
        assert.equal(digestOf(r.body), layer.digest);
      }
    });
    assert.equal(m.delta('hubcache_cache_requests_total', { kind: 'blob', outcome: 'miss' }), 20);
    assert.equal(m.delta('hubcache_coalesced_requests_total', { kind: 'blob' }), 19);
    assert.equal(m.delta('hubcache_fills_committed_total'), 1);
    assert.equal(m.delta('hubcache_fills_queue_wait_seconds_count'), 1, 'one download, whatever the number of clients');
    assert.equal(m.now('hubcache_fills_in_flight'), 0);
    assert.equal(m.delta('hubcache_client_bytes_total', { source: 'upstream' }), 20 * layer.size);
    assert.equal(m.delta('hubcache_upstream_bytes_total', HUB), layer.size);
    assert.equal(m.delta('hubcache_upstream_requests_total', { ...HUB, kind: 'blob', method: 'GET', status: '2xx' }), 1);
  });

  it('manifests by tag and digest: miss, hit, hit; manifest bytes counted; rate-limit gauges equal the last headers', async () => {
    const img = await seeded('library/manifests', 'metrics-manifests');
    const m = await measured(hc, async () => {
      const byTag = await get(`${hc.url}/v2/library/manifests/manifests/v1`, { accept: ACCEPT });
      assert.equal(byTag.headers['x-hubcache-cache'], 'miss');
      assert.equal((await get(`${hc.url}/v2/library/manifests/manifests/v1`, { accept: ACCEPT })).headers['x-hubcache-cache'], 'hit');
      const byDigest = await get(`${hc.url}/v2/library/manifests/manifests/${img.digest}`, { accept: ACCEPT });
      assert.equal(byDigest.headers['x-hubcache-cache'], 'hit');
      assert.ok(byDigest.body.equals(img.manifest));
    });
    assert.equal(m.delta('hubcache_cache_requests_total', { kind: 'manifest_tag', outcome: 'miss' }), 1);
    assert.equal(m.delta('hubcache_cache_requests_total', { kind: 'manifest_tag', outcome: 'hit' }), 1);
    assert.equal(m.delta('hubcache_cache_requests_total', { kind: 'manifest_digest', outcome: 'hit' }), 1);
    assert.equal(m.delta('hubcache_cache_requests_total', { kind: 'manifest_digest', outcome: 'miss' }), 0);
    assert.equal(m.delta('hubcache_upstream_bytes_total', HUB), img.manifest.length);
    assert.equal(m.delta('hubcache_client_bytes_total', { source: 'upstream' }), img.manifest.length);
    assert.equal(m.delta('hubcache_client_bytes_total', { source: 'cache' }), 2 * img.manifest.length);
    assert.equal(m.delta('hubcache_upstream_requests_total', { ...HUB, kind: 'manifest', method: 'GET', status: '2xx' }), 1);
    assert.equal(m.delta('hubcache_upstream_token_fetches_total', { ...HUB, result: 'ok' }), 1, 'one token for the new repository');
    assert.equal(m.now('hubcache_upstream_ratelimit_limit', HUB), 100);
    assert.equal(m.now('hubcache_upstream_ratelimit_remaining', HUB), up.front.rateLimitRemaining);
    const seen = await hc.waitForLog((l) => l.message === 'rate limit seen' && l.level === 'info');
    assert.equal(seen.source, '127.0.0.1', 'the source (an address or account: unbounded) goes to the log, never to a label');
    assert.doesNotMatch(await hc.metrics(), /127\.0\.0\.1|library\/|sha256:/, 'no address, repository or digest in any label');
  });

  it('429s from upstream are counted, with the client answered 429', async () => {
    await seeded('library/limited', 'metrics-limited');
    up.front.reset();
    up.front.inject({ type: 'rateLimit', retryAfter: 3600, when: { kind: 'manifest', repo: 'library/limited' } });
    const m = await measured(hc, async () => {
      const r = await get(`${hc.url}/v2/library/limited/manifests/v1`, { accept: ACCEPT });
      assert.equal(r.status, 429);
    });
    const received = up.front.count({ kind: 'manifest', status: 429 });
    assert.ok(received >= 1, up.front.dump());
    assert.equal(m.delta('hubcache_upstream_rate_limited_total', HUB), received);
    assert.equal(m.delta('hubcache_upstream_requests_total', { ...HUB, kind: 'manifest', status: '4xx' }), up.front.count({ kind: 'manifest', status: [401, 429] }));
    assert.equal(m.now('hubcache_upstream_ratelimit_remaining', HUB), 0, 'the 429 carried ratelimit-remaining: 0');
    assert.equal(m.delta('hubcache_http_requests_total', { route: 'manifest', method: 'GET', status: '4xx' }), 1);
  });
});

describe('store gauges after a restart (issue #12: no listing before serving)', () => {
  it('a restarted hubcache counts its store in the background: "store scanned" names it, then the gauges report it', async () => {
    const first = await startHubcacheProcess({ upstream: up });
    const storagePath = first.storagePath;
    let second: HubcacheProcess | undefined;
    try {
      const img = await seeded('library/restarted', 'metrics-restart', 300 * KiB);
      const layer = img.layers[0]!;
      assert.equal((await get(`${first.url}/v2/library/restarted/blobs/${layer.digest}`)).status, 200);
      await first.stop();
      second = await startHubcacheProcess({ upstream: up, storagePath });
      const scanned = await second.waitForLog((l) => l.message === 'store scanned');
      assert.deepEqual({ blobs: scanned.blobs, bytes: scanned.bytes }, { blobs: 1, bytes: layer.size });
      const text = await second.metrics();
      assert.equal(metricValue(text, 'hubcache_store_bytes'), layer.size);
      assert.equal(metricValue(text, 'hubcache_store_objects'), 1);
      const messages = second.logs.map((l) => l.message);
      assert.ok(messages.indexOf('storage opened') < messages.indexOf('hubcache started'), messages.join(', '));
    } finally {
      await second?.stop();
      await first.close();
    }
  });
});

describe('tag revalidation and stale serving are counted', () => {
  let hc: HubcacheProcess;
  before(async () => {
    // A TTL of 0: every tag request revalidates with a HEAD.
    hc = await startHubcacheProcess({ upstream: up, args: ['--tag-ttl', '0s'] });
  });
  after(async () => {
    await up.front.up().catch(() => {});
    await hc?.close();
  });

  it('miss, then revalidated, then stale once the upstream is down', async () => {
    const img = await seeded('library/stale', 'metrics-stale');
    const url = `${hc.url}/v2/library/stale/manifests/v1`;
    const m = await measured(hc, async () => {
      assert.equal((await get(url, { accept: ACCEPT })).headers['x-hubcache-cache'], 'miss');
      assert.equal((await get(url, { accept: ACCEPT })).headers['x-hubcache-cache'], 'revalidated');
      await up.front.down();
      try {
        const stale = await get(url, { accept: ACCEPT });
        assert.equal(stale.status, 200);
        assert.equal(stale.headers['x-hubcache-cache'], 'stale');
        assert.ok(stale.body.equals(img.manifest));
      } finally {
        await up.front.up();
      }
    });
    assert.equal(m.delta('hubcache_cache_requests_total', { kind: 'manifest_tag', outcome: 'miss' }), 1);
    assert.equal(m.delta('hubcache_cache_requests_total', { kind: 'manifest_tag', outcome: 'revalidated' }), 1);
    assert.equal(m.delta('hubcache_cache_requests_total', { kind: 'manifest_tag', outcome: 'stale' }), 1);
    assert.ok(m.delta('hubcache_upstream_requests_total', { ...HUB, kind: 'manifest', status: 'error' }) >= 1, 'the refused connection is counted as an upstream error');
    const line = await hc.waitForLog((l) => l.message === 'stale served');
    assert.equal(line.tag, 'v1');
    assert.equal(line.reason, 'unavailable');
  });
});

describe('a real Prometheus scraping hubcache', () => {
  let hc: HubcacheProcess;
  let prom: Prometheus;
  let metricsHost: string;

  let dir: string;
  let redis: RedisServer;

  before(async () => {
    // Every feature the dashboard and the alerts watch is on, so that each of their series exists:
    // a cap and a free-space floor with a short eviction interval, client auth (Basic with
    // anonymous pull: the tests below pull anonymously), and a cluster's Redis (a cluster of one).
    dir = mkdtempSync(join(tmpdir(), 'hubcache-e2e-metrics-'));
    redis = await startRedis();
    writeFileSync(join(dir, 'htpasswd'), `ops:${bcrypt.hashSync('0ps-pass', 5)}\n`);
    writeFileSync(
      join(dir, 'config.yaml'),
      `storage:\n  maxSize: 100GiB\n  minFreeSpace: 1%\n  eviction:\n    interval: 1s\nauth:\n  htpasswd: ${join(dir, 'htpasswd')}\n  challenge: basic\n` +
        `cluster:\n  redis:\n    url: ${redis.url}\n  peerListen: 127.0.0.1:0\n  advertiseUrl: http://127.0.0.1:1\n`,
    );
    hc = await startHubcacheProcess({ upstream: up, config: join(dir, 'config.yaml'), args: ['--tag-ttl', '10m', '--metrics-listen', '127.0.0.1:0'] });
    const started = await hc.waitForLog((l) => l.message === 'hubcache started');
    metricsHost = new URL(String(started.metrics)).host;
    prom = await startPrometheus({ targets: [metricsHost] });
  });
  after(async () => {
    await prom?.close();
    await hc?.close();
    await redis?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('serves /metrics on the separate port only', async () => {
    assert.equal((await fetch(`${hc.url}/metrics`)).status, 404);
    const res = await fetch(`http://${metricsHost}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  });

  it('the README hit-ratio, bytes-saved, pulls-avoided and headroom queries return what a scripted pull sequence implies', async () => {
    // Every series exists at zero from the start, so Prometheus sees the first increments.
    await prom.waitFor('hubcache_cache_requests_total{kind="blob",outcome="hit"}', (r) => r.length === 1 && r[0]!.value[1] === '0');
    const [target] = await prom.targets();
    assert.equal(target?.health, 'up', target?.lastError);

    const img = await seeded('library/scraped', 'metrics-scraped', 512 * KiB);
    const layer = img.layers[0]!;
    const blob = `${hc.url}/v2/library/scraped/blobs/${layer.digest}`;
    const manifest = `${hc.url}/v2/library/scraped/manifests/v1`;
    // blob: 1 miss + 3 hits; manifest by tag: 1 miss + 1 hit.
    for (let i = 0; i < 4; i++) assert.equal(digestOf((await get(blob)).body), layer.digest);
    for (let i = 0; i < 2; i++) assert.ok((await get(manifest, { accept: ACCEPT })).body.equals(img.manifest));

    await prom.waitFor('sum(hubcache_cache_requests_total{kind=~"blob|manifest_tag"})', (r) => r[0]?.value[1] === '6');
    // Evaluate at the last scrape's timestamp: no extrapolation past the samples, so increase() is exact.
    const [ts] = await prom.query('timestamp(hubcache_fills_committed_total)');
    const at = Number(ts!.value[1]);
    const readme = readFileSync(`${ROOT}README.md`, 'utf8');
    const promql = (title: string) => {
      const m = new RegExp(`\\*\\*${title}\\*\\*[\\s\\S]*?\`\`\`promql\\n([^\`]+)\`\`\``).exec(readme);
      assert.ok(m, `README has no promql block after "${title}"`);
      return m[1]!.trim().replaceAll('[$__range]', '[5m]').replaceAll('[$__rate_interval]', '[5m]');
    };

    const ratio = await prom.query(promql('Hit ratio by kind'), at);
    const byKind = Object.fromEntries(ratio.map((s) => [s.metric.kind, Number(s.value[1])]));
    assert.equal(byKind.blob, 0.75);
    assert.equal(byKind.manifest_tag, 0.5);

    const saved = await prom.query(promql('Bytes saved'), at);
    assert.equal(Number(saved[0]!.value[1]), 3 * layer.size + img.manifest.length, 'served 4 blobs + 2 manifests, fetched 1 + 1');

    const avoided = await prom.query(promql('Docker Hub pulls avoided'), at);
    assert.equal(Number(avoided[0]!.value[1]), 1);

    const headroom = await prom.query(promql('Rate-limit headroom'), at);
    assert.equal(Number(headroom[0]!.value[1]), up.front.rateLimitRemaining! / 100);
  });

  it('every metric the dashboard and the alerts query is in hubcache output and scraped by Prometheus; promtool lints the output', async () => {
    const dashboard = JSON.parse(readFileSync(`${ROOT}deploy/grafana/hubcache.json`, 'utf8')) as { panels: Array<{ targets?: Array<{ expr: string }>; panels?: unknown[] }> };
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    const alerts = readFileSync(`${ROOT}deploy/prometheus/alerts.yaml`, 'utf8');
    exprs.push(...[...alerts.matchAll(/expr: (?:\|\n)?((?:.+\n?)+?)(?=\s+(?:for|labels|annotations):)/g)].map((m) => m[1]!));
    const foreign = new Set(['up', 'kubelet_volume_stats_available_bytes', 'kubelet_volume_stats_capacity_bytes']);
    const names = new Set([...exprs.flatMap((e) => [...promqlMetricNames(e)])].filter((n) => !foreign.has(n)));
    assert.ok(names.size >= 15, `only ${names.size} metric names found`);
    const text = await (await fetch(`http://${metricsHost}/metrics`)).text();
    const families = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
    const family = (n: string) => n.replace(/_(bucket|sum|count)$/, '');
    for (const n of names) assert.ok(families.has(n) || families.has(family(n)), `${n} is not in hubcache's /metrics`);
    await prom.waitFor('count(hubcache_upstream_ratelimit_limit)', (r) => r.length === 1);
    // Set by the evictor's next tick (every second here) once something was pulled: the tests above pulled.
    await prom.waitFor('count(hubcache_store_oldest_access_seconds)', (r) => r.length === 1);
    const missing: string[] = [];
    for (const n of names) {
      if ((await prom.query(`count({__name__="${n}"})`)).length === 0) missing.push(n);
    }
    assert.deepEqual(missing, [], 'series Prometheus never scraped');
    // promtool lints names and help; it reads the exposition from stdin.
    const lint = (() => {
      try {
        return execFileSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
      } catch (err) {
        return String((err as { stdout?: string; stderr?: string }).stdout ?? '') + String((err as { stderr?: string }).stderr ?? '');
      }
    })();
    const own = lint.split('\n').filter((l) => /^hubcache_(?!process_)/.test(l));
    assert.deepEqual(own, [], lint);
  });
});
