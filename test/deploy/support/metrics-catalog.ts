import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Root of the repository (tests run from anywhere). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/**
 * Every series hubcache exports with its label names, read from the `name: '...'` / `labelNames`
 * declarations in src/observability/metrics.ts. Histograms export `<name>_bucket` (with `le`),
 * `_sum` and `_count`, not `<name>`. (prom-client's default process metrics, prefixed
 * `hubcache_process_`, are not listed: the dashboard and alerts don't use them.)
 */
export function exportedSeries(): Map<string, Set<string>> {
  const source = readFileSync(`${ROOT}src/observability/metrics.ts`, 'utf8');
  const series = new Map<string, Set<string>>();
  const decl = /new client\.(Counter|Gauge|Histogram|Summary)\(\{\s*name:\s*'([a-z_:][a-z0-9_:]*)'(.*?)registers:/g;
  for (const [, type, name, rest] of source.matchAll(decl)) {
    const labels = /labelNames:\s*\[([^\]]*)\]/.exec(rest!)?.[1] ?? '';
    const labelNames = [...labels.matchAll(/'([a-zA-Z_][a-zA-Z0-9_]*)'/g)].map((m) => m[1]!);
    if (type === 'Histogram') {
      series.set(`${name}_bucket`, new Set([...labelNames, 'le']));
      series.set(`${name}_sum`, new Set(labelNames));
      series.set(`${name}_count`, new Set(labelNames));
    } else if (type === 'Summary') {
      for (const suffix of ['_sum', '_count']) series.set(name + suffix, new Set(labelNames));
      series.set(name!, new Set([...labelNames, 'quantile']));
    } else series.set(name!, new Set(labelNames));
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

/**
 * The closed label value sets declared as string-literal unions in metrics.ts
 * (`export type CacheOutcome = 'hit' | 'miss' | …`), by type name.
 */
export function labelValueTypes(): Map<string, Set<string>> {
  const source = readFileSync(`${ROOT}src/observability/metrics.ts`, 'utf8');
  const types = new Map<string, Set<string>>();
  for (const [, name, body] of source.matchAll(/export type (\w+) = ((?:\s*\|?\s*'[^']*')+);/g)) {
    types.set(name!, new Set([...body!.matchAll(/'([^']*)'/g)].map((v) => v[1]!)));
  }
  return types;
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

// Which closed value set each label of each metric takes (status is `statusClass()` in metrics.ts).
const STATUS_CLASSES = new Set(['1xx', '2xx', '3xx', '4xx', '5xx', 'error']);
const LABEL_TYPES: Record<string, Record<string, string>> = {
  hubcache_cache_requests_total: { kind: 'CacheKind', outcome: 'CacheOutcome' },
  hubcache_coalesced_requests_total: { kind: 'CacheKind' },
  hubcache_client_bytes_total: { source: 'ByteSource' },
  hubcache_upstream_requests_total: { kind: 'UpstreamKind', status: '@status' },
  hubcache_upstream_request_duration_seconds_bucket: { kind: 'UpstreamKind' },
  hubcache_fills_failed_total: { reason: 'FillFailure' },
  hubcache_fills_abandoned_total: { decision: 'AbandonedDecision' },
  hubcache_http_requests_total: { status: '@status' },
  hubcache_upstream_token_fetches_total: { result: '@result' },
};

/**
 * What is wrong with a PromQL expression against what hubcache exports: unknown metrics (unless in
 * `foreign`), label names a metric doesn't have, and label values outside a closed set. Empty = fine.
 */
export function expressionProblems(expr: string, foreign: ReadonlySet<string> = new Set()): string[] {
  const series = exportedSeries();
  const types = labelValueTypes();
  types.set('@status', STATUS_CLASSES);
  types.set('@result', new Set(['ok', 'error']));
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
      const type = LABEL_TYPES[metric]?.[m.label];
      if (!type) continue;
      const allowed = types.get(type)!;
      const values = m.op.endsWith('~') ? (/^[\w|]+$/.test(m.value) ? m.value.split('|') : []) : [m.value];
      for (const v of values) if (!allowed.has(v)) problems.push(`${metric}{${m.label}}: ${JSON.stringify(v)} is not one of ${[...allowed].join(', ')}`);
    }
  }
  return problems;
}
