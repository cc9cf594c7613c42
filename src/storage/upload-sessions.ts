import { randomUUID } from 'node:crypto';
import type { Digest } from '../domain/digest.js';
import { RegistryError } from '../domain/errors.js';
import type { RepoKey } from '../domain/reference.js';
import type { BlobInfo, BlobStore, BlobWriter } from './blob-store.js';

/**
 * A blob upload session of the push protocol (`POST /v2/<name>/blobs/uploads/` … final `PUT`), as
 * data: JSON-serialisable on purpose, so that a shared session store (issue #15: Redis, with the
 * bytes in an S3 multipart upload) can hold it and a `PATCH` can land on another replica.
 */
export interface UploadSessionRecord {
  /** Opaque, unguessable (a random UUID): the `<uuid>` of `/v2/<name>/blobs/uploads/<uuid>`. */
  readonly id: string;
  /** The repository the upload was started for; the session answers only under that name. */
  readonly key: RepoKey;
  /** Bytes received so far: the next chunk must start here. */
  readonly offset: number;
  /** When the session started and when it last received bytes (ms, the sessions' clock). */
  readonly startedAt: number;
  readonly touchedAt: number;
}

export interface UploadSessionsOptions {
  readonly blobs: BlobStore;
  /** A session that received nothing for this long is cancelled and its bytes removed (`hosted.uploadTimeout`). */
  readonly timeoutMs: number;
  /** Sessions open at once, at most (each holds a temp file and a file descriptor); beyond, `TOOMANYREQUESTS`. */
  readonly maxSessions: number;
  readonly clock?: () => number;
  /** Sessions removed by expiry are reported here (logs). */
  readonly onExpired?: (record: UploadSessionRecord) => void;
  /**
   * Several replicas (issue #15): where the other replicas look up which replica holds a session
   * (cluster/redis-coordinator.ts keeps it in Redis). Told of every session started (awaited: the
   * client learns the session's id only once the others can find it), of progress (at most every
   * `timeoutMs / 4` while bytes arrive: the shared record expires with the session) and of every
   * session that ends (awaited: a later request elsewhere doesn't find it).
   */
  readonly directory?: UploadDirectory;
}

/** The shared index of a cluster's upload sessions (see `UploadSessionsOptions.directory`); never throws. */
export interface UploadDirectory {
  started(record: UploadSessionRecord): Promise<void>;
  touched(record: UploadSessionRecord): Promise<void>;
  ended(id: string): Promise<void>;
}

interface Session {
  record: UploadSessionRecord;
  /** The bytes so far, hashed as they pass (VerifyingBlobWriter, storage/verifying-writer.ts). */
  readonly writer: BlobWriter;
  /** A PATCH or the final PUT is writing: a second request on the session is refused, and expiry waits. */
  busy: boolean;
  /** When the directory was last told of progress (ms, the sessions' clock). */
  told: number;
}

/**
 * The upload sessions of one process. The bytes of a session go straight into a `BlobWriter` of
 * the blob store as they arrive (never buffered: on the filesystem a temp file `tmp/blob-<uuid>`,
 * swept at start), and the final `PUT` commits that writer: size, then digest, verified by the one
 * verification path every blob write takes (`VerifyingBlobWriter`) before anything is visible.
 *
 * The hash: node's `crypto.Hash` can't be serialised, so the running sha256 lives in the process
 * that holds the writer. Today every session lives in this process (the record map is in memory,
 * and the temp files don't outlive a restart: the owner's `init` sweeps `tmp/`), so no byte is ever
 * hashed twice. With several replicas (issue #15) a session stays with the replica that started
 * it (its owner: the bytes and the hash are here); `directory` publishes which replica that is, and
 * a request for the session that reaches another replica is passed through to this one
 * (docs/architecture.md, "Uploads across replicas"), so the hash is never moved nor redone.
 */
export class UploadSessions {
  readonly #o: UploadSessionsOptions;
  readonly #clock: () => number;
  readonly #sessions = new Map<string, Session>();
  readonly #timer: NodeJS.Timeout;

  constructor(opts: UploadSessionsOptions) {
    this.#o = opts;
    this.#clock = opts.clock ?? Date.now;
    // Sessions expire within 1.5× the timeout; the sweep itself is cheap (a map walk).
    this.#timer = setInterval(() => void this.sweep(), Math.max(1_000, Math.min(opts.timeoutMs / 2, 60_000))).unref();
  }

  get size(): number {
    return this.#sessions.size;
  }

  /** Starts a session for `key`. `TOOMANYREQUESTS` beyond `maxSessions`. */
  async start(key: RepoKey): Promise<UploadSessionRecord> {
    if (this.#sessions.size >= this.#o.maxSessions) {
      throw new RegistryError('TOOMANYREQUESTS', { uploadSessions: this.#sessions.size }, { message: 'too many blob uploads in progress: finish or cancel some, or retry later', headers: { 'Retry-After': '10' } });
    }
    const writer = await this.#o.blobs.create();
    const now = this.#clock();
    const record: UploadSessionRecord = { id: randomUUID(), key: { upstream: key.upstream, repo: key.repo }, offset: 0, startedAt: now, touchedAt: now };
    this.#sessions.set(record.id, { record, writer, busy: false, told: now });
    await this.#o.directory?.started(record);
    return record;
  }

  /** Whether this process holds the session `id` (whatever its repository). */
  has(id: string): boolean {
    return this.#sessions.has(id);
  }

  /** The session, or `BLOB_UPLOAD_UNKNOWN` when there is none for `key` under `id` (expired, finished, cancelled, never). */
  get(key: RepoKey, id: string): UploadSessionRecord {
    return this.#session(key, id).record;
  }

  /**
   * Appends `body` to the session as it arrives. `start` is where the client says the bytes go
   * (`Content-Range`), when it says: anything but the current offset is `RANGE_INVALID` (416) with
   * the current `Range`, and nothing is written. A body that breaks off keeps the bytes received
   * (the client can ask the status and go on from there).
   */
  async append(key: RepoKey, id: string, body: AsyncIterable<Uint8Array>, start?: number): Promise<UploadSessionRecord> {
    const s = this.#session(key, id);
    if (start !== undefined && start !== s.record.offset) {
      throw new RegistryError('RANGE_INVALID', { offset: s.record.offset, start }, { message: 'chunk out of order: it must start at the upload’s current offset', headers: { Range: uploadRange(s.record.offset) } });
    }
    return this.#exclusive(s, () => this.#write(s, body));
  }

  /**
   * Appends `body` (the final PUT's, when there is one), then verifies and publishes the blob under
   * `digest` (`SIZE_INVALID` when `expectedSize` is given and differs, `DIGEST_INVALID` when the
   * bytes don't hash to it; `onVerified` sees nothing unverified). The session ends either way:
   * a failed verification discards the bytes (the client starts over, as with distribution).
   */
  async finish(key: RepoKey, id: string, digest: Digest, body?: AsyncIterable<Uint8Array>, expectedSize?: number): Promise<BlobInfo> {
    const s = this.#session(key, id);
    return this.#exclusive(s, async () => {
      if (body) await this.#write(s, body);
      try {
        const info = await s.writer.commit(digest, expectedSize);
        await this.#end(id);
        return info;
      } catch (err) {
        await this.#end(id);
        await s.writer.abort().catch(() => {});
        throw err;
      }
    });
  }

  /** Cancels the session and removes its bytes; `BLOB_UPLOAD_UNKNOWN` when there is none. */
  async cancel(key: RepoKey, id: string): Promise<void> {
    const s = this.#session(key, id);
    await this.#end(id);
    await s.writer.abort();
  }

  /** Cancels the sessions idle for longer than the timeout; returns how many. Runs on a timer too. */
  async sweep(): Promise<number> {
    const now = this.#clock();
    const expired = [...this.#sessions.values()].filter((s) => !s.busy && now - s.record.touchedAt > this.#o.timeoutMs);
    for (const s of expired) {
      await this.#end(s.record.id);
      await s.writer.abort().catch(() => {});
      this.#o.onExpired?.(s.record);
    }
    return expired.length;
  }

  /** Stops the timer and cancels every session (shutdown: their temp data goes). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    const all = [...this.#sessions.values()];
    this.#sessions.clear();
    await Promise.all(all.map(async (s) => {
      await this.#o.directory?.ended(s.record.id);
      await s.writer.abort().catch(() => {});
    }));
  }

  /** The session leaves this process and the shared directory. */
  async #end(id: string): Promise<void> {
    if (!this.#sessions.delete(id)) return;
    await this.#o.directory?.ended(id);
  }

  #session(key: RepoKey, id: string): Session {
    const s = this.#sessions.get(id);
    if (!s || s.record.key.upstream !== key.upstream || s.record.key.repo !== key.repo) {
      throw new RegistryError('BLOB_UPLOAD_UNKNOWN', { uuid: id.slice(0, 100) });
    }
    return s;
  }

  async #exclusive<T>(s: Session, fn: () => Promise<T>): Promise<T> {
    if (s.busy) throw new RegistryError('BLOB_UPLOAD_INVALID', { uuid: s.record.id }, { message: 'another request is writing to this upload' });
    s.busy = true;
    try {
      return await fn();
    } finally {
      s.busy = false;
      s.record = { ...s.record, touchedAt: this.#clock() };
      this.#tell(s);
    }
  }

  /** Progress to the directory, at most every quarter of the timeout (its record expires with the session). */
  #tell(s: Session): void {
    const dir = this.#o.directory;
    if (!dir || !this.#sessions.has(s.record.id) || s.record.touchedAt - s.told < this.#o.timeoutMs / 4) return;
    s.told = s.record.touchedAt;
    void dir.touched(s.record);
  }

  async #write(s: Session, body: AsyncIterable<Uint8Array>): Promise<UploadSessionRecord> {
    // Chunks are gathered up to WRITE_BATCH bytes and written with one vectored write: a socket
    // delivers 16–64 KiB at a time, and a write (and a promise) per chunk costs more than the copy.
    // One batch is written while the next one is gathered: reading the socket doesn't stop for the
    // disk (a push profiled idle two thirds of the time when each batch waited for its write), and
    // memory stays bounded (two batches per session; the socket is paused while a full batch waits).
    // A body that breaks off (the client left) throws out of the loop; what was written stays.
    let batch: Uint8Array[] = [];
    let batched = 0;
    let writing: Promise<void> | undefined;
    const failed: { err?: unknown; happened: boolean } = { happened: false };
    const write = async (chunks: Uint8Array[]) => {
      try {
        await s.writer.write(chunks);
      } catch (err) {
        // The store failed (disk full, …): the writer can't commit any more, the session is over.
        failed.err = err;
        failed.happened = true;
        await this.#end(s.record.id);
        await s.writer.abort().catch(() => {});
        return;
      }
      s.record = { ...s.record, offset: s.writer.written, touchedAt: this.#clock() };
      this.#tell(s);
    };
    /** Waits for the write in flight; then starts one of the gathered batch (`wait`: and waits for it too). */
    const flush = async (wait: boolean) => {
      if (writing) await writing;
      writing = undefined;
      if (failed.happened) throw failed.err;
      if (batched > 0) {
        const chunks = batch;
        batch = [];
        batched = 0;
        writing = write(chunks);
      }
      if (wait && writing) {
        await writing;
        writing = undefined;
        if (failed.happened) throw failed.err;
      }
    };
    try {
      for await (const chunk of body) {
        if (chunk.length === 0) continue;
        batch.push(chunk);
        batched += chunk.length;
        if (batched >= WRITE_BATCH) await flush(false);
      }
    } finally {
      // What arrived before a break is kept too: the status tells the client where to go on.
      await flush(true);
    }
    return s.record;
  }
}

/** Bytes gathered from a request body before they are written (per session: bounded memory). */
const WRITE_BATCH = 1024 * 1024;

/**
 * The `Range` header of an upload's status: the bytes received, `0-<last>` inclusive. distribution
 * (and the clients written against it) answer `0-0` for an empty upload, so that is what is sent.
 */
export function uploadRange(offset: number): string {
  return `0-${Math.max(0, offset - 1)}`;
}
