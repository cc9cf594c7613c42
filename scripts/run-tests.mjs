#!/usr/bin/env node
// node --test on Node 20 does not discover .ts files (a bare run reports 0 tests and exits 0),
// so list the test files ourselves and fail loudly when there are none.
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const roots = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const extra = process.argv.slice(2).filter((a) => a.startsWith('-'));
const searchRoots = roots.length > 0 ? roots : ['src', 'test'];

function walk(dir, out) {
  for (const entry of readdirSync(dir)) {
    if (entry === 'node_modules') continue;
    const p = join(dir, entry);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (p.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const files = searchRoots.flatMap((r) => (statSync(r).isDirectory() ? walk(r, []) : [r])).sort();
if (files.length === 0) {
  console.error(`no test files found under ${searchRoots.join(', ')}`);
  process.exit(1);
}
console.log(`running ${files.length} test files`);
const res = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', ...extra, ...files.map((f) => relative('.', f))],
  { stdio: 'inherit' },
);
process.exit(res.status ?? 1);
