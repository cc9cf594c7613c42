#!/usr/bin/env node
// `npm run build`: bundles src/cli.ts with esbuild into dist/ (what bin/hubcache.js runs and the
// Dockerfile copies). One bundle instead of ~300 files compiled by tsc: Node's module loaders were
// the largest part of a start (issue #13, start-to-ready; figures in bench/RESULTS.md).
//
// - Code splitting: every `await import(...)` in src/ stays a separate chunk loaded only when that
//   code runs (the server for `serve`, the commands for theirs, the S3 store, the cluster
//   coordinator), so `--version` and `ls` load no server code and `serve` no command code.
// - Dependencies are bundled (fewer files to resolve and read), except the ones in EXTERNAL, which
//   are resolved from node_modules at run time as before (the image keeps `npm ci --omit=dev`):
//   ioredis and the AWS SDK are only loaded with `cluster` / `storage.driver: s3`
//   (src/lazy-modules.test.ts) and stay as they are published; bcryptjs is loaded by path in a
//   worker (src/auth/bcrypt-pool.ts); yaml through createRequire (src/config/load.ts).
// - CommonJS dependencies inside an ES module bundle need `require`, `__filename` and `__dirname`:
//   the banner defines them per chunk (ioredis-style code passes __dirname to trim stack traces).
// - Source maps (dist/*.js.map, without the sources' text), not enabled by default: with them Node
//   parses the maps of every chunk it loads (~15 % more CPU for a start, ~15 MiB more RSS, measured
//   in bench/RESULTS.md). The bundle is minified (whitespace and syntax) but keeps every identifier,
//   so a stack trace names the functions anyway (its columns are far along one long line);
//   NODE_OPTIONS=--enable-source-maps maps it to src/ files and lines.
//
//   node scripts/build.mjs [OUTDIR]     default dist/ (emptied first)
import { rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));

/** Packages left to node_modules (see above). */
export const EXTERNAL = ['ioredis', '@aws-sdk/*', '@smithy/*', 'bcryptjs', 'yaml'];

const BANNER = [
  "import { createRequire as __hubcacheCreateRequire } from 'node:module';",
  "import { fileURLToPath as __hubcacheFileURLToPath } from 'node:url';",
  "import { dirname as __hubcacheDirname } from 'node:path';",
  'const require = __hubcacheCreateRequire(import.meta.url);',
  'const __filename = __hubcacheFileURLToPath(import.meta.url);',
  'const __dirname = __hubcacheDirname(__filename);',
].join(' ');

/**
 * Bundles src/cli.ts into `outdir` (emptied first; dist/cli.js must sit one level below the
 * directory holding package.json, which the CLI reads for its version). Returns esbuild's metafile:
 * which inputs went into which output file, and each output's static and dynamic imports.
 */
export async function buildBundle(outdir = join(ROOT, 'dist')) {
  rmSync(outdir, { recursive: true, force: true });
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: { cli: 'src/cli.ts' },
    outdir,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    external: EXTERNAL,
    banner: { js: BANNER },
    // Whitespace and syntax only: identifiers keep their names, so a stack trace still names the
    // functions. The chunks' source text stays in V8's heap for as long as the process runs:
    // minified, the live heap after a full GC is ~10 MB smaller (issue #13, RSS after the load).
    minifyWhitespace: true,
    minifySyntax: true,
    sourcemap: true,
    sourcesContent: false,
    metafile: true,
    logLevel: 'warning',
  });
  return result.metafile;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await buildBundle(process.argv[2] ? resolve(process.argv[2]) : undefined);
}
