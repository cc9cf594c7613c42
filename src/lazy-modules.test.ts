import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

/**
 * Start-to-ready (issue #13): a start loads only the modules its config uses. The server's module
 * graph, imported in a fresh process, must not pull in ioredis (only with `cluster`) nor the AWS
 * SDK (only with `storage.driver: s3`): together they are a large part of the modules a start loads.
 */
describe('modules loaded by a start', () => {
  it('importing the server loads neither ioredis nor the AWS SDK', () => {
    const server = fileURLToPath(new URL('./server.ts', import.meta.url));
    const script = [
      `await import(${JSON.stringify(server)});`,
      `const { createRequire } = await import('node:module');`,
      `const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => /node_modules\\/(ioredis|@aws-sdk)\\//.test(k));`,
      `process.stdout.write(JSON.stringify(loaded));`,
    ].join('\n');
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', cwd: fileURLToPath(new URL('..', import.meta.url)) });
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout), []);
  });
});
