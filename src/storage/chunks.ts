import type { FileHandle } from 'node:fs/promises';

/**
 * Writes `chunks` in order at `position` of the file: one pwritev for the whole batch and, after a
 * short write (rare: signals, a full disk), one for the rest. Throws when the file takes no bytes.
 */
export async function writevAll(fh: FileHandle, chunks: readonly Uint8Array[], position: number): Promise<void> {
  const total = chunks.reduce((n, c) => n + c.length, 0);
  let rest: readonly Uint8Array[] = chunks;
  for (let done = 0; done < total; ) {
    const { bytesWritten } = await fh.writev(rest as Uint8Array[], position + done);
    if (bytesWritten === 0) throw new Error('the file took no bytes');
    done += bytesWritten;
    rest = dropBytes(rest, bytesWritten);
  }
}

/** `chunks` without their first `n` bytes (views, no copies): what a short vectored write left to write. */
export function dropBytes(chunks: readonly Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const chunk of chunks) {
    if (n >= chunk.length) n -= chunk.length;
    else {
      out.push(n > 0 ? chunk.subarray(n) : chunk);
      n = 0;
    }
  }
  return out;
}
