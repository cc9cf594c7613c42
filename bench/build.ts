import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = fileURLToPath(new URL('.', import.meta.url));

/**
 * Builds hubcache as `npm run build` does (scripts/build.mjs: the esbuild bundle) into
 * `scratch`/build, laid out as the image is (package.json, node_modules, dist/, bin/), and returns
 * the launcher bin/hubcache.js, which production runs: the bench measures that, not the tsx loader
 * of a checkout, which alone adds ~60 MiB of RSS and compiles on the fly.
 */
export function buildHubcache(scratch: string, log: (msg: string) => void): string {
  const out = join(scratch, 'build');
  log('building hubcache (scripts/build.mjs: the esbuild bundle, as npm run build)');
  execFileSync(process.execPath, [join(HERE, '..', 'scripts', 'build.mjs'), join(out, 'dist')], { stdio: 'inherit' });
  // cli.js reads ../package.json (its version); the external packages resolve from ../node_modules.
  copyFileSync(join(HERE, '..', 'package.json'), join(out, 'package.json'));
  symlinkSync(join(HERE, '..', 'node_modules'), join(out, 'node_modules'));
  mkdirSync(join(out, 'bin'));
  copyFileSync(join(HERE, '..', 'bin', 'hubcache.js'), join(out, 'bin', 'hubcache.js'));
  return join(out, 'bin', 'hubcache.js');
}
