// deploy/grafana/hubcache.json: a valid dashboard on a templated Prometheus datasource whose every
// query parses and selects metrics (and labels) hubcache really exports.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { expressionProblems, ROOT } from './support/metrics-catalog.js';

interface Target {
  expr: string;
  refId: string;
  datasource?: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  description?: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  title: string;
  uid: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query: unknown; datasource?: { uid: string } }> };
}

const TEXT = readFileSync(`${ROOT}deploy/grafana/hubcache.json`, 'utf8');
const dashboard = JSON.parse(TEXT) as Dashboard;
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const queries = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
const DS = '${DS_PROMETHEUS}';

/** Grafana's variables replaced by what they become in a query, so promtool can parse it. */
function substituteVariables(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '5m')
    .replaceAll('$__interval', '1m')
    .replaceAll('$__range', '6h')
    .replace(/\$\{?(job|instance)\}?/g, '.*');
}

describe('deploy/grafana/hubcache.json', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'hubcache-dashboard-'));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('is a dashboard with a stable uid, unique panel ids and panels inside the 24-column grid', () => {
    assert.equal(dashboard.title, 'hubcache');
    assert.match(dashboard.uid, /^[a-zA-Z0-9_-]{1,40}$/);
    assert.equal(typeof dashboard.schemaVersion, 'number');
    const ids = panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'duplicate panel ids');
    const cells = new Set<string>();
    for (const p of panels) {
      assert.ok(p.gridPos.x >= 0 && p.gridPos.w > 0 && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: outside the grid`);
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          assert.ok(!cells.has(`${x},${y}`), `${p.title} overlaps another panel at ${x},${y}`);
          cells.add(`${x},${y}`);
        }
      }
      if (p.type !== 'row') assert.ok(p.description, `${p.title}: no description`);
    }
  });

  it('takes its Prometheus datasource from the DS_PROMETHEUS variable, never a fixed uid', () => {
    const ds = dashboard.templating.list.find((v) => v.name === 'DS_PROMETHEUS');
    assert.ok(ds, 'no DS_PROMETHEUS variable');
    assert.equal(ds.type, 'datasource');
    assert.equal(ds.query, 'prometheus');
    for (const p of panels.filter((x) => x.type !== 'row')) {
      assert.equal(p.datasource?.uid, DS, `${p.title}: datasource`);
      for (const t of p.targets ?? []) assert.equal(t.datasource?.uid, DS, `${p.title} ${t.refId}: datasource`);
    }
    for (const v of dashboard.templating.list.filter((x) => x.type === 'query')) assert.equal(v.datasource?.uid, DS, `variable ${v.name}`);
  });

  it('queries only metrics, labels and label values hubcache exports', () => {
    assert.ok(queries.length >= 20, `only ${queries.length} queries`);
    const problems = queries.flatMap((q) => expressionProblems(q.expr).map((p) => `${q.panel}: ${p}`));
    for (const v of dashboard.templating.list.filter((x) => x.type === 'query')) {
      const inner = /label_values\((.*),\s*\w+\)$/.exec((v.query as { query: string }).query)?.[1];
      assert.ok(inner, `variable ${v.name}: expected label_values(...)`);
      problems.push(...expressionProblems(inner).map((p) => `variable ${v.name}: ${p}`));
    }
    assert.deepEqual(problems, []);
  });

  it('has queries that promtool parses', () => {
    // promtool has no "check expression"; a rule file of recording rules is the next best thing.
    const file = join(tmp, 'dashboard-queries.yaml');
    const rules = queries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: substituteVariables(q.expr) }));
    writeFileSync(file, stringify({ groups: [{ name: 'dashboard', rules }] }));
    const out = execFileSync('promtool', ['check', 'rules', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    assert.match(out, new RegExp(`SUCCESS: ${rules.length} rules found`));
  });

  it('shows what operators ask for', () => {
    const has = (what: string, re: RegExp) => assert.ok(queries.some((q) => re.test(q.expr)), `no query for ${what}`);
    has('hit ratio by kind', /sum by \(kind\) \(rate\(hubcache_cache_requests_total\{[^}]*outcome!="miss"[^}]*\}.*\/\s*sum by \(kind\)/);
    has('bytes served from cache vs upstream', /sum by \(source\) \(rate\(hubcache_client_bytes_total/);
    has('Docker Hub pulls avoided', /hubcache_cache_requests_total\{[^}]*kind=~"manifest_tag\|manifest_digest"[^}]*outcome!="miss"/);
    has('rate-limit headroom', /hubcache_upstream_ratelimit_remaining\{[^}]*\}\s*\/\s*\(hubcache_upstream_ratelimit_limit/);
    has('upstream latency', /histogram_quantile\(0\.99, sum by \(le, kind\) \(rate\(hubcache_upstream_request_duration_seconds_bucket/);
    has('upstream errors', /hubcache_upstream_requests_total\{[^}]*status=~"5xx\|error"/);
    has('stale serves', /hubcache_cache_requests_total\{[^}]*outcome="stale"/);
    has('store size', /hubcache_store_bytes/);
    has('fills in flight', /hubcache_fills_in_flight/);
    has('fills queued for a download slot', /hubcache_fills_queued/);
    has('fill queue wait', /histogram_quantile\(0\.9, sum by \(le\) \(rate\(hubcache_fills_queue_wait_seconds_bucket/);
    has('the tail a fill adds', /histogram_quantile\(0\.99, sum by \(le\) \(rate\(hubcache_fill_tail_seconds_bucket/);
    has('abandoned fills by decision', /sum by \(decision\) \(rate\(hubcache_fills_abandoned_total/);
    has('request rate by route and status', /sum by \(route, status\) \(rate\(hubcache_http_requests_total/);
  });

  it('is shipped unchanged in the Helm chart (helm/hubcache/monitoring/hubcache.json)', () => {
    const chartCopy = readFileSync(`${ROOT}helm/hubcache/monitoring/hubcache.json`, 'utf8');
    assert.ok(chartCopy === TEXT, 'the chart copy differs: cp deploy/grafana/hubcache.json helm/hubcache/monitoring/hubcache.json');
  });
});
