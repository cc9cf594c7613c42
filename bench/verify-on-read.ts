/**
 * What it would cost to verify stored blobs as they are served (issue #13, bit rot: hash a whole-blob
 * GET while it streams and compare at the end, holding back the last bytes). Serves a 512 MiB blob
 * from a warm file with `FileRangeStream.writeTo` (the warm path of GET /blobs) into a sink that
 * discards, alternately without and with sha256 over every byte, and prints the medians and the
 * ratio of the per-pair throughputs. The sink stands for a socket: the ratio is an upper bound of
 * what hashing adds per byte served, on the one core a Node process uses.
 *
 *   tsx bench/verify-on-read.ts [runs]      default 7
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { FileRangeStream } from '../src/storage/fs/file-range-stream.js';
import { fmt, median, MiB, mbps, ratios } from './stats.js';

const SIZE = 512 * MiB;
const runs = Number(process.argv[2] ?? 7);
const dir = mkdtempSync(join(tmpdir(), 'hubcache-bench-verify-'));
const path = join(dir, 'blob');
const block = Buffer.alloc(MiB);
for (let i = 0; i < block.length; i += 4) block.writeUInt32LE((i * 2654435761) >>> 0, i);
const fd = await open(path, 'w');
for (let i = 0; i < SIZE / MiB; i++) await fd.write(block);
await fd.close();

async function serve(hash: boolean): Promise<number> {
  const h = hash ? createHash('sha256') : undefined;
  const sink = new Writable({
    highWaterMark: 4 * MiB,
    write(chunk: Buffer, _enc, cb) {
      h?.update(chunk); // before the callback: writeTo reuses the buffer afterwards
      cb();
    },
  });
  const handle = await open(path, 'r');
  const body = new FileRangeStream({ handle, start: 0, end: SIZE - 1 });
  const t0 = performance.now();
  await body.writeTo(sink);
  h?.digest('hex');
  return performance.now() - t0;
}

await serve(false); // warm the page cache
const plain: number[] = [];
const hashed: number[] = [];
for (let i = 0; i < runs; i++) {
  plain.push(mbps(SIZE, await serve(false)));
  hashed.push(mbps(SIZE, await serve(true)));
}
const sha = (() => {
  const h = createHash('sha256');
  const t0 = performance.now();
  for (let i = 0; i < SIZE / MiB; i++) h.update(block);
  h.digest();
  return mbps(SIZE, performance.now() - t0);
})();
process.stdout.write(
  `warm 512 MiB blob, writeTo a discarding sink, ${runs} runs alternating:\n` +
    `  plain  median ${fmt(median(plain), 0)} MiB/s\n` +
    `  sha256 median ${fmt(median(hashed), 0)} MiB/s\n` +
    `  hashed ÷ plain (median of per-pair ratios): ${fmt(median(ratios(hashed, plain)))}×\n` +
    `  sha256 alone: ${fmt(sha, 0)} MiB/s\n`,
);
rmSync(dir, { recursive: true, force: true });
