// The catalog the dashboard and alert tests check their PromQL against is what a hubcache process
// exports, read from the metrics registry (issue #12), not from the source text of metrics.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Metrics } from '../../src/observability/metrics.js';
import { exportedSeries, expressionProblems } from './support/metrics-catalog.js';

describe('metrics catalog', () => {
  it('lists every series of the registry, with the label names the series carry', async () => {
    const metrics = new Metrics();
    // Put a value in every labelled family, so that the JSON shows their label names.
    metrics.upstreamConfigured('docker.io');
    metrics.upstreamRequest('docker.io', 'manifest', 'GET', 200, 0.1);
    metrics.upstreamRetry('docker.io', 'blob');
    metrics.tokenFetched('docker.io', true);
    metrics.rateLimit('docker.io', 100, 99);
    metrics.httpRequest('manifest', 'GET', 200, 0.01);
    metrics.fillStarted(1);
    metrics.authConfigured();
    metrics.tlsConfigured(new Date(0));
    // The store gauges have no sample until the store is counted (issue #12): give them a store.
    metrics.observeStoreUsage(() => ({ bytes: 1, objects: 1 }));
    // The bounded store's gauges (issue #13) are absent without a cap, a free-space reading or a pass.
    metrics.storeMaxBytes(1);
    metrics.freeSpace(1, 1);
    metrics.oldestAccess(Date.now());
    metrics.evictionSucceeded(Date.now());
    // …and the hosted gauges (issue #14) a hosted registry.
    metrics.observeHosted({ usage: () => ({ bytes: 1, objects: 1 }), uploads: () => 0 });
    const catalog = exportedSeries();
    const seen = new Set<string>();
    for (const family of await metrics.registry.getMetricsAsJSON()) {
      for (const v of family.values) {
        const series = (v as { metricName?: string }).metricName ?? family.name;
        seen.add(series);
        const labels = catalog.get(series);
        assert.ok(labels, `${series} (${family.type}) is exported but not in the catalog`);
        for (const label of Object.keys(v.labels)) assert.ok(labels.has(label), `${series}{${label}} is exported but not in the catalog`);
      }
    }
    assert.ok(seen.has('hubcache_http_request_duration_seconds_bucket') && catalog.has('hubcache_http_request_duration_seconds_count'), 'histograms as _bucket/_sum/_count');
    assert.ok([...catalog.keys()].some((n) => n.startsWith('hubcache_process_')), "prom-client's default metrics are exported too");
    const ours = [...catalog.keys()].filter((n) => !n.startsWith('hubcache_process_'));
    assert.deepEqual(ours.filter((n) => !seen.has(n)), [], 'in the catalog, never exported');
  });

  it('checks label values against the closed sets of their owners', () => {
    assert.deepEqual(expressionProblems('sum(rate(hubcache_cache_requests_total{kind="blob",outcome=~"hit|stale"}[5m]))'), []);
    assert.deepEqual(expressionProblems('hubcache_upstream_requests_total{kind="tags",status="5xx"}'), []);
    assert.deepEqual(expressionProblems('hubcache_cache_requests_total{outcome="fresh"}'), ['hubcache_cache_requests_total{outcome}: "fresh" is not one of hit, miss, revalidated, stale']);
    assert.deepEqual(expressionProblems('hubcache_upstream_requests_total{kind="catalog"}'), ['hubcache_upstream_requests_total{kind}: "catalog" is not one of manifest, blob, tags, token, ping']);
    assert.deepEqual(expressionProblems('hubcache_no_such_total'), ['unknown metric hubcache_no_such_total']);
  });
});
