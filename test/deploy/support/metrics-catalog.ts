import { fileURLToPath } from 'node:url';
import { CACHE_KINDS, CACHE_OUTCOMES, FILL_FAILURES, PASS_THROUGH_KINDS, PIN_REFRESH_RESULTS, PIN_STATES, STORE_READ_KINDS } from '../../../src/cache/cache-metrics.js';
import { ABANDONED_DECISIONS, AUTH_RESULTS, AUTH_SCHEMES, BYTE_SOURCES, CLIENT_TIMEOUTS, CONNECTION_REJECTIONS, Metrics } from '../../../src/observability/metrics.js';
import { UPSTREAM_KINDS } from '../../../src/upstream/upstream.js';

/** Root of the repository (tests run from anywhere). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** What prom-client keeps of each metric it was given (its constructor options). */
interface RegisteredMetric {
  readonly name: string;
  readonly type: 'counter' | 'gauge' | 'histogram' | 'summary';
  readonly labelNames?: readonly string[];
}

/**
 * Every series hubcache exports with its label names, read from the metrics registry itself (a
 * fresh `Metrics`, prom-client's default process metrics included): names, types and the label
 * names each metric was declared with, whether or not a series exists yet. Histograms export
 * `<name>_bucket` (with `le`), `_sum` and `_count`, not `<name>`; summaries `<name>` (with
 * `quantile`), `_sum` and `_count`.
 */
export function exportedSeries(): ReadonlyMap<string, ReadonlySet<string>> {
  return (catalog ??= readRegistry());
}

let catalog: Map<string, Set<string>> | undefined;

function readRegistry(): Map<string, Set<string>> {
  const series = new Map<string, Set<string>>();
  for (const metric of new Metrics().registry.getMetricsAsArray() as unknown as RegisteredMetric[]) {
    const { name, type } = metric;
    const labelNames = [...(metric.labelNames ?? [])];
    if (type === 'histogram') {
      series.set(`${name}_bucket`, new Set([...labelNames, 'le']));
      series.set(`${name}_sum`, new Set(labelNames));
      series.set(`${name}_count`, new Set(labelNames));
    } else if (type === 'summary') {
      for (const suffix of ['_sum', '_count']) series.set(name + suffix, new Set(labelNames));
      series.set(name, new Set([...labelNames, 'quantile']));
    } else series.set(name, new Set(labelNames));
  }
  return series;
}

/** Labels Prometheus attaches to every scraped series (static configs, Kubernetes service discovery). */
export const TARGET_LABELS = new Set(['job', 'instance', 'namespace', 'pod', 'service', 'container', 'endpoint']);

export interface Matcher {
  label: string;
  op: '=' | '!=' | '=~' | '!~';
  value: string;
}

/** `metric{a="x", b=~"y"}` selectors in an expression: the metric name and its label matchers. */
export function promqlSelectors(expr: string): Array<{ metric: string; matchers: Matcher[] }> {
  const out: Array<{ metric: string; matchers: Matcher[] }> = [];
  for (const m of expr.matchAll(/([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}/g)) {
    const matchers = [...m[2]!.matchAll(/([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)].map(
      (l): Matcher => ({ label: l[1]!, op: l[2] as Matcher['op'], value: l[3]! }),
    );
    out.push({ metric: m[1]!, matchers });
  }
  return out;
}

const KEYWORDS = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'inf', 'nan', 'atan2']);

/**
 * The metric names a PromQL expression selects. Good enough for our own expressions: strings, label
 * matchers, ranges, grouping clauses and Grafana variables are removed, then every identifier that
 * is not a function call or a keyword is a metric name.
 */
export function promqlMetricNames(expr: string): Set<string> {
  const stripped = expr
    .replace(/\$\{?[A-Za-z_][A-Za-z0-9_]*\}?/g, ' ')
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of stripped.matchAll(/(?<![A-Za-z0-9_:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?/g)) {
    if (m[2] || KEYWORDS.has(m[1]!.toLowerCase())) continue;
    names.add(m[1]!);
  }
  return names;
}

// The closed value set each label of each metric takes, from the modules that own them (the cache's
// vocabulary, the upstream client's request kinds, the metrics facade's own sets); status is
// `statusClass()` in metrics.ts.
const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx', 'error'];
const LABEL_VALUES: Record<string, Record<string, readonly string[]>> = {
  hubcache_cache_requests_total: { kind: CACHE_KINDS, outcome: CACHE_OUTCOMES },
  hubcache_coalesced_requests_total: { kind: CACHE_KINDS },
  hubcache_client_bytes_total: { source: BYTE_SOURCES },
  hubcache_upstream_requests_total: { kind: UPSTREAM_KINDS, status: STATUS_CLASSES },
  hubcache_upstream_request_duration_seconds_bucket: { kind: UPSTREAM_KINDS },
  hubcache_upstream_retries_total: { kind: UPSTREAM_KINDS },
  hubcache_fills_failed_total: { reason: FILL_FAILURES },
  hubcache_auth_requests_total: { scheme: AUTH_SCHEMES, result: AUTH_RESULTS },
  hubcache_fills_abandoned_total: { decision: ABANDONED_DECISIONS },
  hubcache_passthrough_requests_total: { kind: PASS_THROUGH_KINDS },
  hubcache_passthrough_bytes_total: { kind: PASS_THROUGH_KINDS },
  hubcache_store_read_errors_total: { kind: STORE_READ_KINDS },
  hubcache_pins: { state: PIN_STATES },
  hubcache_pin_refresh_total: { result: PIN_REFRESH_RESULTS },
  hubcache_http_requests_total: { status: STATUS_CLASSES },
  hubcache_http_connections_rejected_total: { reason: CONNECTION_REJECTIONS },
  hubcache_http_timeouts_total: { kind: CLIENT_TIMEOUTS },
  hubcache_upstream_token_fetches_total: { result: ['ok', 'error'] },
};

/**
 * What is wrong with a PromQL expression against what hubcache exports: unknown metrics (unless in
 * `foreign`), label names a metric doesn't have, and label values outside a closed set. Empty = fine.
 */
export function expressionProblems(expr: string, foreign: ReadonlySet<string> = new Set()): string[] {
  const series = exportedSeries();
  const problems: string[] = [];
  for (const name of promqlMetricNames(expr)) {
    if (!series.has(name) && !foreign.has(name)) problems.push(`unknown metric ${name}`);
  }
  for (const { metric, matchers } of promqlSelectors(expr)) {
    const labels = series.get(metric);
    if (!labels) continue;
    for (const m of matchers) {
      if (!labels.has(m.label) && !TARGET_LABELS.has(m.label)) {
        problems.push(`${metric} has no label ${m.label}`);
        continue;
      }
      const allowed = LABEL_VALUES[metric]?.[m.label];
      if (!allowed) continue;
      const values = m.op.endsWith('~') ? (/^[\w|]+$/.test(m.value) ? m.value.split('|') : []) : [m.value];
      for (const v of values) if (!allowed.includes(v)) problems.push(`${metric}{${m.label}}: ${JSON.stringify(v)} is not one of ${allowed.join(', ')}`);
    }
  }
  return problems;
}
