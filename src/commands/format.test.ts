import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { formatBytes } from './format.js';

describe('formatBytes', () => {
  it('decimal units, one decimal past bytes', () => {
    assert.deepEqual([0, 999, 1_000, 131_400, 2_100_000, 18_400_000_000, 3e15].map(formatBytes), ['0 B', '999 B', '1.0 KB', '131.4 KB', '2.1 MB', '18.4 GB', '3000.0 TB']);
  });

  it('ls gets it without loading prefetch’s HTTP client and progress bars', () => {
    // undici and cli-progress are CommonJS, so whatever loads them shows up in require.cache.
    const ls = fileURLToPath(new URL('./ls.ts', import.meta.url));
    const script = `
      import { createRequire } from 'node:module';
      await import(${JSON.stringify(ls)});
      console.log(JSON.stringify(Object.keys(createRequire(import.meta.url).cache)));`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const loaded = JSON.parse(r.stdout) as string[];
    assert.ok(loaded.length > 0, 'the check sees CommonJS modules at all');
    assert.deepEqual(loaded.filter((f) => /node_modules\/(undici|cli-progress)\//.test(f)), []);
  });
});
