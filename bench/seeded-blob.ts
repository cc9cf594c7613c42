/**
 * A big deterministic blob that never sits in memory or in a temp file: AES-256-CTR keystream
 * (GB/s) produced in 1 MiB chunks, hashed in one streaming pass, then streamed again to the
 * registry by test/support/push.ts (which streams any blob without `data`).
 */
import { createCipheriv, createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { TestBlob } from '../test/support/images.js';

const CHUNK = 1024 * 1024;

function seededStream(seed: string, length: number): Readable {
  const key = createHash('sha256').update(`bench-key:${seed}`).digest();
  const iv = createHash('sha256').update(`bench-iv:${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-256-ctr', key, iv);
  const zero = Buffer.alloc(CHUNK);
  let left = length;
  return new Readable({
    highWaterMark: 4 * CHUNK,
    read() {
      if (left === 0) return void this.push(null);
      const n = Math.min(left, CHUNK);
      left -= n;
      this.push(cipher.update(zero.subarray(0, n)));
    },
  });
}

/** A `TestBlob` of `size` seeded bytes (stream only: `bytes()` refuses, it would buffer). */
export async function seededBlob(seed: string, size: number): Promise<TestBlob> {
  const hash = createHash('sha256');
  for await (const chunk of seededStream(seed, size)) hash.update(chunk as Buffer);
  return {
    digest: `sha256:${hash.digest('hex')}`,
    size,
    mediaType: 'application/octet-stream',
    stream: (range) => {
      if (range) throw new Error('seededBlob: ranges not supported');
      return seededStream(seed, size);
    },
    bytes: () => {
      throw new Error('seededBlob: bytes() would buffer the whole blob');
    },
  };
}
