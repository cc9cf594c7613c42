import { execFileSync } from 'node:child_process';
import { copyFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = fileURLToPath(new URL('.', import.meta.url));

/**
 * Compiles src/ with tsconfig.build.json into `scratch`/build and returns its CLI entry: the
 * bench measures what production runs (the image runs compiled JavaScript), not the tsx loader,
 * which alone adds ~60 MiB of RSS and compiles on the fly.
 */
export function buildHubcache(scratch: string, log: (msg: string) => void): string {
  const out = join(scratch, 'build');
  log('building hubcache (tsc -p tsconfig.build.json)');
  execFileSync(process.execPath, [join(HERE, '..', 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(HERE, '..', 'tsconfig.build.json'), '--outDir', join(out, 'dist'), '--sourceMap', 'false'], { stdio: 'inherit' });
  // cli.js reads ../package.json (its version) and resolves dependencies from ../node_modules.
  copyFileSync(join(HERE, '..', 'package.json'), join(out, 'package.json'));
  symlinkSync(join(HERE, '..', 'node_modules'), join(out, 'node_modules'));
  return join(out, 'dist', 'cli.js');
}
