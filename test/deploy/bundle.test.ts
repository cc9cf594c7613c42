/**
 * The shipped artifact (issue #13, start time): `npm run build` bundles src/cli.ts with esbuild
 * (scripts/build.mjs) and bin/hubcache.js runs that bundle when dist/ exists. The e2e suite runs a
 * checkout's sources through tsx (dist/ is absent there), so this file builds the bundle into a
 * temp dir laid out as the image is (package.json, node_modules, dist/, bin/) and runs it for real:
 * `--version`, `serve` answering /readyz and pulling a blob through from a fake upstream, the
 * modules a plain `serve` loads (neither ioredis nor the AWS SDK: they are only for `cluster` and
 * `storage.driver: s3`), and the source maps that stack traces can be mapped through.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { Metafile } from 'esbuild';
import { buildBundle } from '../../scripts/build.mjs';
import { FakeRegistry, LoopbackServer } from '../../src/upstream/testing/fake-registry.js';
import { startHubcacheProcess } from '../support/hubcache-process.js';
import { putImage } from '../support/oci-fixtures.js';

const ROOT = join(import.meta.dirname, '..', '..');
const LAZY = /\/node_modules\/(ioredis|@aws-sdk|@smithy)\//;

/** Output files reachable from `from` through static imports (what loading it loads). */
function staticClosure(meta: Metafile, from: string): Set<string> {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const imp of meta.outputs[file]?.imports ?? []) if (imp.kind === 'import-statement' && !imp.external) visit(imp.path);
  };
  visit(from);
  return seen;
}

describe('the bundled CLI (npm run build)', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'hubcache-bundle-'));
  const app = join(tmp, 'app');
  const dist = join(app, 'dist');
  const bin = join(app, 'bin', 'hubcache.js');
  const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  let meta: Metafile;
  /** Output file (relative to ROOT, as in the metafile) → its absolute path. */
  const abs = (out: string) => join(ROOT, out);

  before(async () => {
    meta = await buildBundle(dist);
    copyFileSync(join(ROOT, 'package.json'), join(app, 'package.json'));
    symlinkSync(join(ROOT, 'node_modules'), join(app, 'node_modules'), 'dir');
    mkdirSync(join(app, 'bin'));
    copyFileSync(join(ROOT, 'bin', 'hubcache.js'), bin);
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  const entry = () => Object.keys(meta.outputs).find((o) => meta.outputs[o]!.entryPoint === 'src/cli.ts')!;
  const outputOf = (input: string) => Object.keys(meta.outputs).find((o) => o.endsWith('.js') && Object.keys(meta.outputs[o]!.inputs).includes(input))!;

  it('prints its version from the bundle, not the sources', () => {
    assert.equal(abs(entry()), join(dist, 'cli.js'));
    const run = spawnSync(process.execPath, [bin, '--version'], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout.trim(), version);
  });

  it('keeps the server, the S3 store and the cluster coordinator in chunks of their own, loaded on demand', () => {
    const atStart = staticClosure(meta, entry());
    const server = outputOf('src/server.ts');
    const s3 = outputOf('src/storage/s3/s3-storage.ts');
    const redis = outputOf('src/cluster/redis-coordinator.ts');
    assert.ok(!atStart.has(server), '--version and the commands must not load the server');
    const serving = staticClosure(meta, server);
    for (const lazy of [s3, redis]) assert.ok(!serving.has(lazy) && !atStart.has(lazy), `${lazy} is loaded by every serve`);
    const externals = [...atStart, ...serving].flatMap((o) => meta.outputs[o]!.imports.filter((i) => i.external && i.kind === 'import-statement').map((i) => i.path));
    assert.deepEqual(externals.filter((p) => /^(ioredis|@aws-sdk\/|@smithy\/)/.test(p)), []);
    assert.ok(meta.outputs[s3]!.imports.some((i) => i.external && i.path === '@aws-sdk/client-s3'), 'the S3 chunk imports the SDK from node_modules');
    assert.ok(meta.outputs[redis]!.imports.some((i) => i.external && i.path === 'ioredis'), 'the cluster chunk imports ioredis from node_modules');
  });

  it('serves: /readyz, a blob pulled through and then cached; a plain serve loads neither ioredis nor the AWS SDK', async () => {
    const registry = new FakeRegistry();
    const upstream = await LoopbackServer.start(registry.handle);
    // Every module URL the process resolves, written by a resolve hook (module.register, off-thread).
    const seenFile = join(tmp, 'resolved.txt');
    const hook = join(tmp, 'record-hook.mjs');
    writeFileSync(hook, `import { appendFileSync } from 'node:fs';\nexport async function resolve(specifier, context, next) {\n  const r = await next(specifier, context);\n  appendFileSync(${JSON.stringify(seenFile)}, r.url + '\\n');\n  return r;\n}\n`);
    const register = join(tmp, 'register-hook.mjs');
    writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hook).href)});\n`);
    writeFileSync(seenFile, '');
    const hc = await startHubcacheProcess({ bin, upstreamUrl: upstream.url, nodeArgs: ['--import', register] });
    try {
      const ready = await fetch(`${hc.url}/readyz`);
      assert.equal(ready.status, 200, await ready.clone().text());
      const image = putImage(registry, 'library/bundled', '1', { seed: 'bundle', layerSizes: [50_000] });
      const layer = image.layers[0]!;
      for (const round of ['pulled through', 'cached']) {
        const res = await fetch(`${hc.url}/v2/library/bundled/blobs/${layer.digest}`);
        assert.equal(res.status, 200, round);
        assert.ok(Buffer.from(await res.arrayBuffer()).equals(layer.bytes), `${round}: the upstream's bytes`);
      }
      assert.equal(upstream.requests.filter((r) => r.method === 'GET' && r.url.includes('/blobs/')).length, 1, 'the second GET is a hit');
      const resolved = readFileSync(seenFile, 'utf8').split('\n').filter(Boolean);
      assert.ok(resolved.includes(pathToFileURL(abs(outputOf('src/server.ts'))).href), `the hook saw the server chunk load: ${resolved.join(' ')}`);
      assert.deepEqual(resolved.filter((u) => LAZY.test(u)), []);
      assert.ok(!resolved.some((u) => u.includes('/src/') && u.endsWith('.ts')), 'no TypeScript source was loaded');
    } finally {
      await hc.close();
      await upstream.close();
    }
  });

  it('ships source maps that lead back to src/ (stack traces name src/ files with NODE_OPTIONS=--enable-source-maps)', () => {
    const server = abs(outputOf('src/server.ts'));
    const code = readFileSync(server, 'utf8').split('\n');
    // The bundle is minified (whitespace and syntax): the definition may sit anywhere along a line.
    const line = code.findIndex((l) => l.includes('async function startHubcache('));
    assert.ok(line >= 0, 'startHubcache is defined in the server chunk (by that name: identifiers are kept)');
    const column = code[line]!.indexOf('async function startHubcache(');
    const script = [
      `await import(${JSON.stringify(pathToFileURL(server).href)});`,
      `const { findSourceMap } = await import('node:module');`,
      `const entry = findSourceMap(${JSON.stringify(server)}).findEntry(${line}, ${column});`,
      `process.stdout.write(JSON.stringify(entry));`,
    ].join('\n');
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', cwd: app, env: { PATH: process.env.PATH ?? '', NODE_OPTIONS: '--enable-source-maps' } });
    assert.equal(run.status, 0, run.stderr);
    const entryFound = JSON.parse(run.stdout) as { originalSource: string; originalLine: number };
    assert.match(entryFound.originalSource, /\/src\/server\.ts$/);
    const source = readFileSync(join(ROOT, 'src', 'server.ts'), 'utf8').split('\n');
    assert.match(source[entryFound.originalLine]!, /function startHubcache\(/, 'the mapped line is where startHubcache is written');
  });
});
