/**
 * `hubcache ls` at scale (issue #13): builds a store in the real layout with N tags over a few
 * images (src/storage/fs/testing/many-tags.ts), then runs the CLI on it as a user would, under
 * /usr/bin/time, and prints wall time and peak RSS (the kernel's maxrss) for the table and --json.
 *
 *   tsx bench/ls.ts [tags...]            default: 100000 1000000
 *   BIN=/path/to/bin/hubcache.js tsx bench/ls.ts 100000   another checkout's CLI (before/after)
 *   STORE=/tmp/x tsx bench/ls.ts 100000                   reuse (or keep) the store at /tmp/x-<tags>
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeManyTags } from '../src/storage/fs/testing/many-tags.js';

const BIN = process.env.BIN ?? fileURLToPath(new URL('../bin/hubcache.js', import.meta.url));
const counts = process.argv.slice(2).map(Number);

for (const tags of counts.length > 0 ? counts : [100_000, 1_000_000]) {
  const keep = process.env.STORE !== undefined;
  const root = keep ? `${process.env.STORE}-${tags}` : mkdtempSync(join(tmpdir(), 'hubcache-bench-ls-'));
  if (!keep || !existsSync(join(root, 'repositories'))) {
    const t0 = Date.now();
    await writeManyTags({ root, tags });
    process.stdout.write(`${tags} tags written in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  }
  for (const args of [[], ['--json']]) {
    const r = spawnSync('/usr/bin/time', ['-f', '%e %M', process.execPath, BIN, 'ls', ...args, '--storage-path', root], {
      stdio: ['ignore', 'ignore', 'pipe'],
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    const [seconds, maxKb] = r.stderr.trim().split('\n').at(-1)!.split(' ');
    const failed = r.status !== 0 ? `  FAILED (exit ${r.status}): ${r.stderr.split('\n').find((l) => /Error/.test(l)) ?? ''}` : '';
    process.stdout.write(`ls ${args.join(' ') || '(table)'} ${tags} tags: ${seconds} s, peak RSS ${(Number(maxKb) / 1024).toFixed(0)} MB${failed}\n`);
  }
  if (!keep) rmSync(root, { recursive: true, force: true });
}
