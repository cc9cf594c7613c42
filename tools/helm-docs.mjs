#!/usr/bin/env node
// A small stand-in for helm-docs (https://github.com/norwoodj/helm-docs), which is a Go binary this
// project cannot download: renders helm/<chart>/README.md from README.md.gotmpl, Chart.yaml and the
// `# --` comments of values.yaml, in helm-docs' table format. The template may use
// {{ template "chart.name" . }}, chart.description, chart.version, chart.appVersion,
// chart.kubeVersion and chart.valuesTable — the same names as helm-docs, so either tool works.
//
//   node tools/helm-docs.mjs [helm/hubcache]          writes README.md
//   node tools/helm-docs.mjs --check [helm/hubcache]  exits 1 when README.md is stale or a key is undocumented
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMap, isSeq, parse, parseDocument } from 'yaml';

/** The `# -- text` description in a comment block (following comment lines continue it). */
function description(comment) {
  if (!comment) return undefined;
  const lines = comment.split('\n').map((l) => l.replace(/^ ?/, ''));
  const start = lines.findLastIndex((l) => l.startsWith('-- '));
  if (start < 0) return undefined;
  const text = [];
  for (const line of [lines[start].slice(3), ...lines.slice(start + 1)]) {
    if (line.trim() === '') break;
    text.push(line.trim());
  }
  return text.join(' ');
}

function typeOf(value) {
  if (value === null || value === undefined) return 'string';
  if (Array.isArray(value)) return 'list';
  if (typeof value === 'object') return 'object';
  if (typeof value === 'number') return Number.isInteger(value) ? 'int' : 'float';
  if (typeof value === 'boolean') return 'bool';
  return 'string';
}

function keyPath(path, key) {
  const k = /^[A-Za-z0-9_]+$/.test(key) ? key : `"${key}"`;
  return path ? `${path}.${k}` : k;
}

/**
 * Every key of values.yaml: its dotted path, value, `# --` description and whether an ancestor is
 * documented (then an undocumented key is covered by the ancestor's row).
 */
export function valueKeys(valuesText) {
  const doc = parseDocument(valuesText);
  const out = [];
  const walk = (map, path, covered) => {
    map.items.forEach((pair, i) => {
      const comment = i === 0 ? (pair.key.commentBefore ?? map.commentBefore) : pair.key.commentBefore;
      const key = keyPath(path, String(pair.key.value));
      const desc = description(comment);
      const value = pair.value?.toJSON?.() ?? pair.value?.value ?? null;
      out.push({ key, value, description: desc, covered });
      if (isMap(pair.value)) walk(pair.value, key, covered || desc !== undefined);
    });
  };
  walk(doc.contents, '', false);
  return out;
}

/** Keys that nobody documents: leaves (and empty maps) without a `# --` comment of their own or of an ancestor. */
export function undocumentedKeys(valuesText) {
  return valueKeys(valuesText)
    .filter((k) => !k.description && !k.covered)
    .filter((k) => !(k.value && typeof k.value === 'object' && !Array.isArray(k.value) && Object.keys(k.value).length > 0))
    .map((k) => k.key);
}

function valuesTable(valuesText) {
  const cell = (s) => s.replace(/\|/g, '\\|');
  const rows = valueKeys(valuesText)
    .filter((k) => k.description)
    .map((k) => `| ${cell(k.key)} | ${typeOf(k.value)} | ${cell('`' + (k.value === null ? 'nil' : JSON.stringify(k.value)) + '`')} | ${cell(k.description)} |`);
  return ['| Key | Type | Default | Description |', '|-----|------|---------|-------------|', ...rows].join('\n');
}

export function renderReadme(chartDir) {
  const chart = parse(readFileSync(join(chartDir, 'Chart.yaml'), 'utf8'));
  const values = readFileSync(join(chartDir, 'values.yaml'), 'utf8');
  const template = readFileSync(join(chartDir, 'README.md.gotmpl'), 'utf8');
  const fields = {
    'chart.name': chart.name,
    'chart.description': chart.description,
    'chart.version': chart.version,
    'chart.appVersion': chart.appVersion,
    'chart.kubeVersion': chart.kubeVersion ?? '',
    'chart.valuesTable': valuesTable(values),
  };
  return template.replace(/\{\{\s*template\s+"([\w.]+)"\s+\.\s*\}\}/g, (m, name) => {
    if (!(name in fields)) throw new Error(`README.md.gotmpl: unsupported template ${name}`);
    return fields[name];
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const check = args.includes('--check');
  const chartDir = args.find((a) => !a.startsWith('--')) ?? join(fileURLToPath(new URL('..', import.meta.url)), 'helm', 'hubcache');
  const missing = undocumentedKeys(readFileSync(join(chartDir, 'values.yaml'), 'utf8'));
  if (missing.length > 0) {
    console.error(`values.yaml keys without a "# --" comment: ${missing.join(', ')}`);
    process.exit(1);
  }
  const readme = renderReadme(chartDir);
  if (check) {
    if (readFileSync(join(chartDir, 'README.md'), 'utf8') !== readme) {
      console.error(`${join(chartDir, 'README.md')} is stale: run node tools/helm-docs.mjs`);
      process.exit(1);
    }
  } else {
    writeFileSync(join(chartDir, 'README.md'), readme);
    console.log(`wrote ${join(chartDir, 'README.md')}`);
  }
}
