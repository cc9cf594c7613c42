import { readdirSync, statSync } from 'node:fs';
import { appendFile, mkdir, open, readdir, rename, rm, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import type { ByteRange } from '../../domain/descriptor.js';
import { digestHex, type Digest } from '../../domain/digest.js';
import { RegistryError } from '../../domain/errors.js';
import type { BlobInfo, BlobStore, BlobWriter, CreateOptions, StoreUsage } from '../blob-store.js';
import type { BufferPool } from '../buffer-pool.js';
import { writevAll } from '../chunks.js';
import { NO_CHANGE, UsageTally, type UsageDelta } from '../usage-tally.js';
import { VerifyingBlobWriter, type RawBlobWriter } from '../verifying-writer.js';
import { emptyDir, isNotFound, openCreating, readdirSorted, renameDurable } from './fs-util.js';
import { formatBlobSizes, readBlobSizes } from './blob-sizes.js';
import { FileRangeStream } from './file-range-stream.js';
import { StorageLayout } from './layout.js';

export interface FsBlobStoreOptions {
  /** The storage root (see layout.ts); shared with the manifest and metadata stores. */
  readonly root: string;
  /** `list()` stats with the blocking syscall: only for a one-shot reader process (`FsStorageOptions.blockingReads`). */
  readonly blockingReads?: boolean;
  /**
   * Buffers (of FILE_READ_CHUNK bytes) shared by the blob bodies written out with `writeTo`
   * (responses). Default: each body gets two of its own.
   */
  readonly readBuffers?: BufferPool;
}

const HEX2_RE = /^[a-f0-9]{2}$/;
const HEX64_RE = /^[a-f0-9]{64}$/;
/** The `blobs/sha256/<ab>/` directories, in the order `list()` and the usage count walk them. */
const PREFIXES: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/**
 * Content-addressed blobs on a local filesystem: `<root>/blobs/sha256/<ab>/<hex>`. Writes go to a
 * temp file in `<root>/tmp/` and become visible only through commit (verified by
 * `VerifyingBlobWriter`, then fsync → rename), so a reader never sees a partial or unverified blob.
 */
export class FsBlobStore implements BlobStore {
  readonly layout: StorageLayout;
  readonly #tally = new UsageTally(PREFIXES);
  readonly #readBuffers: BufferPool | undefined;

  readonly #blockingReads: boolean;

  constructor(opts: FsBlobStoreOptions) {
    this.layout = new StorageLayout({ root: opts.root });
    this.#readBuffers = opts.readBuffers;
    this.#blockingReads = opts.blockingReads === true;
  }

  /**
   * Creates the directories and removes everything left in tmp/ by a previous run (uploads that
   * never committed: a crash or a kill). Returns how many leftovers were removed. Call once at start,
   * by the store's owner, before any writer is created: it would delete the temp files of writers
   * in progress. Doesn't walk the blobs (`countUsage` does, in the background).
   */
  async init(): Promise<number> {
    await mkdir(this.layout.blobsDir, { recursive: true });
    await mkdir(dirname(this.layout.blobSizesPath('00')), { recursive: true });
    return emptyDir(this.layout.tmpDir);
  }

  /**
   * Walks `blobs/` once, in the background, to learn the store's usage; `usage()` answers from
   * then on, kept current by every commit and delete (`UsageTally`: exact even while commits and
   * deletes run during the walk). Idempotent. `signal` stops the walk (shutdown).
   */
  countUsage(signal?: AbortSignal): Promise<StoreUsage> {
    return this.#tally.count((prefix) => this.#countPrefix(prefix), signal);
  }

  usage(): StoreUsage | undefined {
    return this.#tally.usage();
  }

  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    try {
      const st = await stat(this.layout.blobPath(digest));
      return st.isFile() ? { digest, size: st.size } : undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /**
   * Streams the committed blob, or the inclusive `range` of it. Throws `BLOB_UNKNOWN` when missing,
   * `RANGE_INVALID` when the range does not fit the blob, and the signal's reason when it is already
   * aborted. Aborting `signal` later destroys the stream with an `AbortError`.
   */
  async open(digest: Digest, opts: { range?: ByteRange; signal?: AbortSignal } = {}): Promise<Readable> {
    opts.signal?.throwIfAborted();
    let fh: FileHandle;
    try {
      fh = await open(this.layout.blobPath(digest), 'r');
    } catch (err) {
      if (isNotFound(err)) throw new RegistryError('BLOB_UNKNOWN', { digest });
      throw err;
    }
    try {
      const { size } = await fh.stat();
      const { range } = opts;
      if (range && !(Number.isSafeInteger(range.start) && range.start >= 0 && range.start <= range.end && range.end < size)) {
        throw new RegistryError('RANGE_INVALID', { digest, range, size });
      }
      // The stream owns the handle from here on and closes it on end, error or destroy.
      return new FileRangeStream({ handle: fh, start: range?.start ?? 0, end: range?.end ?? size - 1, buffers: this.#readBuffers, ...(opts.signal ? { signal: opts.signal } : {}) });
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /**
   * A writer on a fresh temp file in tmp/ (its path is the writer's `localPath`); the caller must
   * end it with `commit` or `abort`.
   */
  async create(opts: CreateOptions = {}): Promise<BlobWriter> {
    const path = this.layout.tempPath('blob');
    const fh = await openCreating(path, 'wx');
    return new VerifyingBlobWriter(new FsRawWriter({ tempPath: path, handle: fh, moveIntoPlace: (digest, size) => this.#moveIntoPlace(path, digest, size) }), opts);
  }

  async delete(digest: Digest): Promise<void> {
    const path = this.layout.blobPath(digest);
    await this.#tally.track(
      prefixOf(digest),
      async () => {
        const had = await this.stat(digest);
        await rm(path, { force: true });
        return had;
      },
      (had) => (had ? { bytes: -had.size, objects: -1 } : NO_CHANGE),
    );
  }

  /** Committed blobs, in digest order. Blobs deleted during the walk may or may not appear. */
  async *list(): AsyncIterable<BlobInfo> {
    for (const prefix of await readdirSorted(this.layout.blobsDir)) {
      if (!HEX2_RE.test(prefix)) continue;
      const dir = join(this.layout.blobsDir, prefix);
      const names = (await readdirSorted(dir)).filter((name) => HEX64_RE.test(name) && name.startsWith(prefix));
      // A window of stats at once, yielded in order: a third of the CPU of one awaited stat at a
      // time (fewer wake-ups of the event loop), and the thread pool's latency hidden (issue #13).
      for (let start = 0; start < names.length; start += LIST_STATS_IN_FLIGHT) {
        const window = names.slice(start, start + LIST_STATS_IN_FLIGHT);
        const stats = this.#blockingReads
          ? window.map((name) => statSync(join(dir, name), { throwIfNoEntry: false }))
          : await Promise.all(window.map((name) => stat(join(dir, name)).catch((err) => (isNotFound(err) ? undefined : Promise.reject(err)))));
        for (let i = 0; i < window.length; i++) if (stats[i]?.isFile()) yield { digest: `sha256:${window[i]!}` as Digest, size: stats[i]!.size, modifiedAt: Math.floor(stats[i]!.mtimeMs) };
      }
    }
  }

  /**
   * Every committed blob with its size, in digest order (a partition at a time), without `modifiedAt`: the listing's read
   * (`ls`, `du`; issue #13). Names from `readdir` of each partition, sizes from its sizes file
   * (blob-sizes.ts), a `stat` only for a blob without a line there.
   */
  async *listSizes(): AsyncIterable<ReadonlyArray<{ readonly digest: Digest; readonly size: number }>> {
    const list = this.#blockingReads ? async (dir: string) => readdirSortedBlocking(dir) : readdirSorted;
    for (const prefix of await list(this.layout.blobsDir)) {
      if (!HEX2_RE.test(prefix)) continue;
      const dir = join(this.layout.blobsDir, prefix);
      const names = (await list(dir)).filter((name) => HEX64_RE.test(name) && name.startsWith(prefix));
      const { sizes } = await readBlobSizes(this.layout.blobSizesPath(prefix), this.#blockingReads);
      const unknown = names.filter((name) => !sizes.has(name));
      for (let start = 0; start < unknown.length; start += LIST_STATS_IN_FLIGHT) {
        const window = unknown.slice(start, start + LIST_STATS_IN_FLIGHT);
        const stats = this.#blockingReads
          ? window.map((name) => statSync(join(dir, name), { throwIfNoEntry: false }))
          : await Promise.all(window.map((name) => stat(join(dir, name)).catch((err) => (isNotFound(err) ? undefined : Promise.reject(err)))));
        window.forEach((name, i) => stats[i]?.isFile() && sizes.set(name, stats[i]!.size));
      }
      const batch: Array<{ digest: Digest; size: number }> = [];
      for (const name of names) {
        const size = sizes.get(name);
        if (size !== undefined) batch.push({ digest: `sha256:${name}` as Digest, size });
      }
      if (batch.length > 0) yield batch;
    }
  }

  /** Appends a committed blob's size to its partition's sizes file; a failure only costs a `stat` later. */
  async #recordSize(prefix: string, hex: string, size: number): Promise<void> {
    await appendFile(this.layout.blobSizesPath(prefix), `${hex} ${size}\n`).catch(() => {});
  }

  /**
   * The commit's last step, for a temp file already fsynced: rename it to its content address.
   * Content addressing: an existing complete blob under this name already has these bytes, so the
   * temp file is dropped; a file of another size there is damage, which the rename replaces.
   */
  #moveIntoPlace(tempPath: string, digest: Digest, size: number): Promise<void> {
    const final = this.layout.blobPath(digest);
    return this.#tally.track(
      prefixOf(digest),
      async (): Promise<UsageDelta> => {
        const existing = await stat(final).catch((err) => (isNotFound(err) ? undefined : Promise.reject(err)));
        if (existing?.isFile() && existing.size === size) {
          await unlink(tempPath).catch(() => {});
          return NO_CHANGE;
        }
        await renameDurable(tempPath, final);
        await this.#recordSize(prefixOf(digest), digestHex(digest), size);
        return existing?.isFile() ? { bytes: size - existing.size, objects: 0 } : { bytes: size, objects: 1 };
      },
      (delta) => delta,
    ).then(() => {});
  }

  /**
   * Bytes and files in one `blobs/sha256/<ab>/` directory (only names a blob can have): sizes from
   * the partition's sizes file, a `stat` for the blobs it lacks; the file is rewritten when it lacked
   * any or held stale lines (blob-sizes.ts). Runs while no mutation of the partition is in flight
   * (`UsageTally`), so no append races the rewrite.
   */
  async #countPrefix(prefix: string): Promise<StoreUsage> {
    const dir = join(this.layout.blobsDir, prefix);
    let entries;
    try {
      entries = await readdir(dir);
    } catch (err) {
      if (isNotFound(err)) return NO_CHANGE;
      throw err;
    }
    const names = entries.filter((name) => HEX64_RE.test(name) && name.startsWith(prefix)).sort();
    const known = await readBlobSizes(this.layout.blobSizesPath(prefix), false);
    const unknown = names.filter((name) => !known.sizes.has(name));
    for (let start = 0; start < unknown.length; start += LIST_STATS_IN_FLIGHT) {
      const window = unknown.slice(start, start + LIST_STATS_IN_FLIGHT);
      const stats = await Promise.all(window.map((name) => stat(join(dir, name)).catch((err) => (isNotFound(err) ? undefined : Promise.reject(err)))));
      window.forEach((name, i) => stats[i]?.isFile() && known.sizes.set(name, stats[i]!.size));
    }
    let bytes = 0;
    const live: Array<[string, number]> = [];
    for (const name of names) {
      const size = known.sizes.get(name);
      if (size === undefined) continue;
      bytes += size;
      live.push([name, size]);
    }
    if (unknown.length > 0 || known.lines !== live.length) await this.#rewriteSizes(prefix, live).catch(() => {});
    return { bytes, objects: live.length };
  }

  /** Replaces a partition's sizes file (derived data: no fsync; a lost rewrite costs `stat`s later). */
  async #rewriteSizes(prefix: string, live: ReadonlyArray<readonly [string, number]>): Promise<void> {
    const temp = this.layout.tempPath('index');
    try {
      await writeFile(temp, formatBlobSizes(live), { flag: 'wx' });
      await rename(temp, this.layout.blobSizesPath(prefix));
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
  }
}

function readdirSortedBlocking(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}

/** Blob files `stat`ed concurrently by `list()` and the usage count. */
const LIST_STATS_IN_FLIGHT = 64;

function prefixOf(digest: Digest): string {
  return digestHex(digest).slice(0, 2);
}

interface FsRawWriterOptions {
  /** The temp file in tmp/, already created and opened for writing as `handle`. */
  readonly tempPath: string;
  /** Owned by the writer from now on: closed by `publish` or `discard`. */
  readonly handle: FileHandle;
  /** Renames the (fsynced, closed) temp file to the blob's address. */
  readonly moveIntoPlace: (digest: Digest, size: number) => Promise<void>;
}

/**
 * One blob being written to a temp file: positional vectored writes; publishing is fsync, close,
 * rename (verification happened before, in `VerifyingBlobWriter`). The temp file is the writer's
 * `localPath`: a cache fill's followers read it through their own handle, which keeps working
 * after the rename (same inode) — the store holds nothing open for them.
 */
class FsRawWriter implements RawBlobWriter {
  readonly localPath: string;
  readonly #fh: FileHandle;
  readonly #moveIntoPlace: (digest: Digest, size: number) => Promise<void>;
  #closed = false;

  constructor(opts: FsRawWriterOptions) {
    this.localPath = opts.tempPath;
    this.#fh = opts.handle;
    this.#moveIntoPlace = opts.moveIntoPlace;
  }

  write(chunks: readonly Uint8Array[], position: number): Promise<void> {
    return writevAll(this.#fh, chunks, position);
  }

  async publish(digest: Digest, size: number): Promise<void> {
    await this.#fh.sync();
    await this.#close();
    await this.#moveIntoPlace(digest, size);
  }

  async discard(): Promise<void> {
    await this.#close().catch(() => {});
    await rm(this.localPath, { force: true });
  }

  async #close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#fh.close();
  }
}
