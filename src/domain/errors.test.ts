import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ERROR_CODES } from './errors.js';

test('docs/errors.md documents every code with its status, and no unknown code', () => {
  const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  const documented = new Map([...doc.matchAll(/<a id="([A-Z_]+)"><\/a>`\1` \| (\d{3}) \|/g)].map((m) => [m[1]!, Number(m[2])]));
  for (const [code, { status }] of Object.entries(ERROR_CODES)) {
    assert.equal(documented.get(code), status, `docs/errors.md: ${code} should be documented with status ${status}`);
  }
  for (const code of documented.keys()) assert.ok(code in ERROR_CODES, `docs/errors.md documents unknown code ${code}`);
});
