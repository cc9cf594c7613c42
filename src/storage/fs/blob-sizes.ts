/**
 * The sizes of the filesystem store's blobs, one file per partition: `blob-sizes/<ab>`, lines
 * `<hex> <size>` for the blobs of `blobs/sha256/<ab>/` (issue #13: `hubcache du`/`ls` and the start's
 * usage count learn 100k blobs' sizes from 256 small files instead of 100k `stat`s).
 *
 * A hint derived from the blobs, never the truth about which blobs exist: readers take the names
 * from `readdir` of the partition and only the sizes from here (a blob's size never changes: its
 * name is its content's hash), and `stat` a blob without a line. So nothing has to be exact: a
 * commit appends its line after the rename (no fsync; a crash in between costs one `stat` later), a
 * delete writes nothing (the name is gone from `readdir`; the stale line is dropped at the next
 * rewrite), and a torn line is skipped. The owner's usage count at start rewrites a partition's file
 * (in `tmp/`, renamed over it) when it had to `stat` anything or dropped stale lines.
 */
import { closeSync, openSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isNotFound } from './fs-util.js';

const HEX64_RE = /^[a-f0-9]{64}$/;
const SIZE_RE = /^\d{1,15}$/;

/**
 * Hex → size; malformed lines are skipped, and so is a last line without its newline (a torn
 * append). `lines` counts every line, for the rewrite decision. Sliced by offsets, not split and
 * matched: 100k lines per walk (issue #13).
 */
export function parseBlobSizes(text: string): { sizes: Map<string, number>; lines: number } {
  const sizes = new Map<string, number>();
  let lines = 0;
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    const torn = end === -1;
    if (torn) end = text.length;
    if (end > start) {
      lines++;
      if (!torn && end - start > 65 && text.charCodeAt(start + 64) === 32) {
        const hex = text.slice(start, start + 64);
        const size = text.slice(start + 65, end);
        if (HEX64_RE.test(hex) && SIZE_RE.test(size)) sizes.set(hex, Number(size));
      }
    }
    start = end + 1;
  }
  return { sizes, lines };
}

export function formatBlobSizes(sizes: Iterable<readonly [string, number]>): string {
  let text = '';
  for (const [hex, size] of sizes) text += `${hex} ${size}\n`;
  return text;
}

/** The partition's sizes file, parsed; empty when missing or unreadable (it is a hint). */
export async function readBlobSizes(path: string, blocking: boolean): Promise<{ sizes: Map<string, number>; lines: number }> {
  try {
    if (blocking) {
      const fd = openSync(path, 'r');
      try {
        return parseBlobSizes(readFileSync(fd, 'utf8'));
      } finally {
        closeSync(fd);
      }
    }
    return parseBlobSizes(await readFile(path, 'utf8'));
  } catch (err) {
    if (!isNotFound(err)) return { sizes: new Map(), lines: 1 };
    return { sizes: new Map(), lines: 0 };
  }
}
