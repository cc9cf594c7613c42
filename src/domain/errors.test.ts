import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES, isRegistryError, RegistryError, refusal, RESERVED_ERROR_CODES, type ErrorCode } from './errors.js';

const SRC = fileURLToPath(new URL('..', import.meta.url));
const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');

/** Codes documented in `section` of docs/errors.md (the text from `## <heading>` to the next `## `), with their status. */
function documentedIn(heading: string): Map<string, number> {
  const start = doc.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `docs/errors.md has a "## ${heading}" section`);
  const end = doc.indexOf('\n## ', start + 1);
  const section = doc.slice(start, end === -1 ? undefined : end);
  return new Map([...section.matchAll(/<a id="([A-Z_]+)"><\/a>`\1` \| (\d{3}) \|/g)].map((m) => [m[1]!, Number(m[2])]));
}

/** The source files that serve clients: tests and the test doubles under `testing/` left out. */
function sources(dir: string, out: string[] = []): string[] {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'testing') sources(p, out);
    } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

test('docs/errors.md documents every code with its status, and no unknown code', () => {
  const documented = new Map([...documentedIn('Codes hubcache returns'), ...documentedIn('Reserved codes')]);
  for (const [code, { status }] of Object.entries(ERROR_CODES)) {
    assert.equal(documented.get(code), status, `docs/errors.md: ${code} should be documented with status ${status}`);
  }
  for (const code of documented.keys()) assert.ok(code in ERROR_CODES, `docs/errors.md documents unknown code ${code}`);
});

test('docs/errors.md lists exactly the reserved codes as reserved, and they are reserved in fact: nothing else names them', () => {
  assert.deepEqual([...documentedIn('Reserved codes').keys()].sort(), [...RESERVED_ERROR_CODES].sort());
  // A code can only be produced by naming it: `new RegistryError('CODE'…)`, or a literal handed on to that.
  const named = new Set<string>();
  for (const file of sources(SRC)) {
    if (file.endsWith(join('domain', 'errors.ts'))) continue;
    for (const m of readFileSync(file, 'utf8').matchAll(/'([A-Z][A-Z_]+)'/g)) named.add(m[1]!);
  }
  for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
    if (RESERVED_ERROR_CODES.has(code)) assert.ok(!named.has(code), `${code} is reserved but src/ names it: document it under "Codes hubcache returns" and remove it from RESERVED_ERROR_CODES`);
    else assert.ok(named.has(code), `${code} is documented as returned but nothing in src/ names it: reserve it or drop it`);
  }
});

test('refusal: a RegistryError like any other (code, detail, headers, message), without frames, and leaves Error.stackTraceLimit as it was', () => {
    const before = Error.stackTraceLimit;
    const err = refusal('UNAUTHORIZED', { repository: 'a/b', action: 'pull' }, { headers: { 'WWW-Authenticate': 'Bearer realm="x"' }, message: 'authentication required' });
    assert.ok(isRegistryError(err));
    assert.equal(err.code, 'UNAUTHORIZED');
    assert.deepEqual(err.detail, { repository: 'a/b', action: 'pull' });
    assert.deepEqual(err.headers, { 'WWW-Authenticate': 'Bearer realm="x"' });
    assert.equal(err.message, 'authentication required');
    assert.equal(err.stack, 'RegistryError: authentication required');
    assert.equal(Error.stackTraceLimit, before);
    assert.match(new RegistryError('UNKNOWN').stack ?? '', /\n\s+at /, 'other RegistryErrors keep their stack');
});
