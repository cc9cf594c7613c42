// deploy/prometheus/alerts.yaml: valid for promtool, unit-tested, wired to metrics hubcache really
// exports, and shipped unchanged in the Helm chart.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { expressionProblems, ROOT } from './support/metrics-catalog.js';

const ALERTS = `${ROOT}deploy/prometheus/alerts.yaml`;

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

function promtool(...args: string[]): string {
  return execFileSync('promtool', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function rules(): Rule[] {
  const doc = parse(readFileSync(ALERTS, 'utf8')) as { groups: Array<{ name: string; rules: Rule[] }> };
  return doc.groups.flatMap((g) => g.rules);
}

describe('deploy/prometheus/alerts.yaml', () => {
  it('passes promtool check rules', () => {
    const out = promtool('check', 'rules', 'deploy/prometheus/alerts.yaml');
    assert.match(out, /SUCCESS: \d+ rules found/);
  });

  it('passes its promtool unit tests (alerts.test.yaml)', () => {
    assert.match(promtool('test', 'rules', 'deploy/prometheus/alerts.test.yaml'), /SUCCESS/);
  });

  it('unit-tests the rate-limit and hit-ratio alerts at least', () => {
    const tests = parse(readFileSync(`${ROOT}deploy/prometheus/alerts.test.yaml`, 'utf8')) as {
      tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts: unknown[] }> }>;
    };
    const firing = new Set(tests.tests.flatMap((t) => (t.alert_rule_test ?? []).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
    for (const name of ['HubcacheRateLimitHeadroomLow', 'HubcacheBlobHitRatioLow', 'HubcacheServingStale', 'HubcacheUpstreamFailing', 'HubcacheStoreDegraded']) {
      assert.ok(firing.has(name), `no unit test expects ${name} to fire`);
    }
    const known = new Set(rules().map((r) => r.alert));
    for (const name of firing) assert.ok(known.has(name), `alerts.test.yaml tests an alert that does not exist: ${name}`);
  });

  it('covers the failure modes operators need to hear about', () => {
    const byName = new Map(rules().map((r) => [r.alert, r]));
    const uses = (alert: string, metric: string) => {
      const rule = byName.get(alert);
      assert.ok(rule, `missing alert ${alert}`);
      assert.ok(rule.expr.includes(metric), `${alert} should use ${metric}`);
    };
    uses('HubcacheRateLimitHeadroomLow', 'hubcache_upstream_ratelimit_remaining');
    uses('HubcacheRateLimitHeadroomLow', 'hubcache_upstream_ratelimit_limit');
    uses('HubcacheBlobHitRatioLow', 'hubcache_cache_requests_total');
    uses('HubcacheUpstreamFailing', 'hubcache_upstream_requests_total');
    uses('HubcacheServingStale', 'outcome="stale"');
    uses('HubcacheVolumeNearlyFull', 'kubelet_volume_stats_available_bytes');
    uses('HubcacheStoreGrowingFast', 'predict_linear(hubcache_store_bytes');
    uses('HubcacheFillsFailing', 'hubcache_fills_failed_total');
    uses('HubcacheFillsQueued', 'hubcache_fills_queued');
    uses('HubcacheStoreDegraded', 'hubcache_store_writable');
    uses('HubcacheCertificateExpiresSoon', 'hubcache_tls_certificate_expiry_timestamp_seconds');
    assert.equal(byName.get('HubcacheServingStale')!.for, '15m');
  });

  it('gives every alert a severity, a summary and a description', () => {
    for (const rule of rules()) {
      assert.ok(rule.alert, `recording rules are not expected here: ${rule.record}`);
      assert.match(rule.alert, /^Hubcache[A-Z]\w+$/);
      assert.ok(['critical', 'warning', 'info'].includes(rule.labels?.severity ?? ''), `${rule.alert}: severity ${rule.labels?.severity}`);
      assert.ok(rule.annotations?.summary, `${rule.alert}: no summary`);
      assert.ok((rule.annotations?.description?.length ?? 0) > 40, `${rule.alert}: no real description`);
    }
  });

  it('uses only metrics, labels and label values hubcache exports (plus up and kubelet volume stats)', () => {
    const foreign = new Set(['up', 'kubelet_volume_stats_available_bytes', 'kubelet_volume_stats_capacity_bytes']);
    const problems = rules().flatMap((r) => expressionProblems(r.expr, foreign).map((p) => `${r.alert}: ${p}`));
    assert.deepEqual(problems, []);
  });

  it('is shipped unchanged in the Helm chart (helm/hubcache/files/alerts.yaml)', () => {
    const chartCopy = readFileSync(`${ROOT}helm/hubcache/files/alerts.yaml`, 'utf8');
    assert.ok(chartCopy === readFileSync(ALERTS, 'utf8'), 'the chart copy differs: cp deploy/prometheus/alerts.yaml helm/hubcache/files/alerts.yaml');
  });
});
