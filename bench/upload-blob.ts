/**
 * What the push benches (push.ts, upload-forward.ts) upload: a blob file of pseudo-random bytes
 * (not compressible, not all zeros: an AES-256-CTR keystream, GB/s, as bench/seeded-blob.ts) with
 * its digest computed once, and the curl they upload it with (status and headers only).
 */
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { MiB } from './stats.js';

export function writeBlobFile(dir: string, sizeMiB: number, seed: string): { file: string; digest: string } {
  const file = join(dir, 'blob');
  const hash = createHash('sha256');
  const fd = openSync(file, 'w');
  const cipher = createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16));
  const zeros = Buffer.alloc(MiB);
  for (let i = 0; i < sizeMiB; i++) {
    const block = cipher.update(zeros);
    writeSync(fd, block);
    hash.update(block);
  }
  closeSync(fd);
  return { file, digest: `sha256:${hash.digest('hex')}` };
}

/** curl with `args`, the body discarded: the status and the response headers. */
export function curl(args: string[]): Promise<{ code: number; headers: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('curl', ['-sS', '-H', 'Expect:', '-D', '-', '-o', '/dev/null', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => (code === 0 ? resolve({ code: Number(/^HTTP\/\S+ (\d+)/m.exec(out)?.[1]), headers: out }) : reject(new Error(`curl ${args.join(' ')}: ${err}`))));
  });
}
