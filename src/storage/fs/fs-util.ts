import { closeSync, openSync, readFile, readFileSync, readSync } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/** The blocking small-file reads' buffer (one process-wide: the reads are synchronous). Most manifests fit. */
const SMALL_READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** ENOENT, or ENOTDIR (a path component is a file): both mean "not there" to a reader. */
export function isNotFound(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * Makes a directory's entries (a rename or a new file) durable. Without it a crash right after
 * rename(2) can lose the new name on ext4/xfs even though the file's data was fsynced. Platforms
 * that can't fsync a directory (EISDIR/EINVAL/EPERM, e.g. Windows) are skipped: best effort there.
 */
export async function fsyncDir(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EINVAL' && code !== 'EPERM' && code !== 'EBADF') throw err;
  } finally {
    await fh?.close();
  }
}

/** `mkdir -p dir`, fsyncing the parent of the first directory it had to create. */
export async function ensureDir(dir: string): Promise<void> {
  const created = await mkdir(dir, { recursive: true });
  if (created !== undefined) await fsyncDir(dirname(created));
}

/** Moves a complete, fsynced file into place and makes the new name durable. */
export async function renameDurable(from: string, to: string): Promise<void> {
  await ensureDir(dirname(to));
  await rename(from, to);
  await fsyncDir(dirname(to));
}

/**
 * Writes `data` to `dest` so that readers see either the old file or the complete new one, never
 * a partial file: write `tempPath` (in tmp/ on the same filesystem), fsync, rename, fsync the dir.
 * The temp file is removed on failure.
 */
export async function writeFileAtomic(tempPath: string, dest: string, data: Uint8Array | string): Promise<void> {
  try {
    const fh = await openCreating(tempPath, 'wx');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await renameDurable(tempPath, dest);
  } catch (err) {
    await unlink(tempPath).catch(() => {});
    throw err;
  }
}

/** Opens a new file, creating its directory when missing (the store was not `init()`ed, or tmp/ was removed). */
export async function openCreating(path: string, flags: string) {
  try {
    return await open(path, flags, 0o644);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await mkdir(dirname(path), { recursive: true });
    return await open(path, flags, 0o644);
  }
}

/** Removes every entry of `dir` (created when missing) and returns how many there were. */
export async function emptyDir(dir: string): Promise<number> {
  await mkdir(dir, { recursive: true });
  const entries = await readdir(dir);
  await Promise.all(entries.map((e) => rm(join(dir, e), { recursive: true, force: true })));
  return entries.length;
}

/** The file's bytes, or `undefined` when it does not exist. */
export function readIfExists(path: string): Promise<Buffer | undefined> {
  // The callback readFile, not fs/promises': for the small files read here (tags, manifests,
  // sidecars) it costs half the CPU (issue #13: 100k tag files read by `ls`/`du`).
  return new Promise((resolve, reject) =>
    readFile(path, (err, data) => {
      if (!err) resolve(data);
      else if (isNotFound(err)) resolve(undefined);
      else reject(err);
    }),
  );
}

/**
 * `readIfExists` with the blocking syscalls: a third of its CPU per file (no trip through the
 * thread pool). Only for a one-shot reader process (`ls`, `du`): it stalls the event loop meanwhile.
 */
export function readIfExistsBlocking(path: string): Promise<Buffer | undefined> {
  try {
    return Promise.resolve(readSmallFileBlocking(path));
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * A file's bytes (`undefined` when it doesn't exist) by open, one read into the reused buffer and
 * close, copied out: readFileSync's fstat and EOF read saved for the small files of the store's
 * metadata (manifests, sidecars, tags). A file that fills the buffer is read whole.
 */
function readSmallFileBlocking(path: string): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
  try {
    const n = readSync(fd, SMALL_READ_BUFFER, 0, SMALL_READ_BUFFER.length, 0);
    return n < SMALL_READ_BUFFER.length ? Buffer.from(SMALL_READ_BUFFER.subarray(0, n)) : readFileSync(path);
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads many small files with blocking syscalls into one reused buffer: open, read, close (3
 * syscalls, where readFileSync adds an fstat and a read to find EOF, and allocates per file).
 * `parse` gets each file's text, or `undefined` when it doesn't exist; a file larger than the
 * buffer is read whole. Only for a one-shot reader process (`ls`, `du`): it stalls the event loop.
 */
export function readSmallFilesBlocking<T>(paths: readonly string[], parse: (text: string | undefined) => T): T[] {
  const out: T[] = [];
  for (const path of paths) {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      if (!isNotFound(err)) throw err;
      out.push(parse(undefined));
      continue;
    }
    try {
      const n = readSync(fd, SMALL_READ_BUFFER, 0, SMALL_READ_BUFFER.length, 0);
      out.push(parse(n < SMALL_READ_BUFFER.length ? SMALL_READ_BUFFER.toString('utf8', 0, n) : readFileSync(path, 'utf8')));
    } finally {
      closeSync(fd);
    }
  }
  return out;
}

/** Entry names sorted by code unit; `[]` when the directory does not exist. */
export async function readdirSorted(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}

export async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}
