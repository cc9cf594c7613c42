import { isDigest, type Digest } from '../domain/digest.js';
import { isTag, isValidRepoPath, type RepoKey, type RepoName, type Tag } from '../domain/reference.js';
import { isRegistryName } from '../domain/registry-name.js';

/**
 * What was served: a blob or a manifest (by digest: content is shared by every repository), or a
 * tag of one repository of one upstream.
 */
export type AccessSubject =
  | { readonly kind: 'blob'; readonly digest: Digest }
  | { readonly kind: 'manifest'; readonly digest: Digest }
  | { readonly kind: 'tag'; readonly key: RepoKey; readonly tag: Tag };

export interface AccessEntry {
  readonly subject: AccessSubject;
  /** When it was last served (ms since epoch). */
  readonly at: number;
}

/**
 * When each blob, manifest and tag was last served (hits included): the input of LRU eviction and
 * tag retention (cache/evictor.ts) and of `hubcache du`. Part of the `Storage` seam (`Storage.access`)
 * so that several replicas can share it later (a Redis backend, issue #15).
 *
 * Cheap by contract: `touch` is synchronous and only updates memory (no I/O, no await on the
 * request path); the backend persists what changed in batches (`flush`, run periodically by the
 * store's owner and on `Storage.close()`). A crash loses at most the last batch window, which only
 * makes content look older than it is. Memory is one entry per object the store holds.
 *
 * Times only move forward: a `touch` older than the recorded time is ignored (several writers, or a
 * clock that stepped back, can't make content look older).
 */
export interface AccessRecord {
  /** Records that `subject` was served at `at` (ms). Never throws, never waits. */
  touch(subject: AccessSubject, at: number): void;
  /** Removes the subject's entry (it was deleted from the store). Never throws, never waits. */
  forget(subject: AccessSubject): void;
  /** The last access recorded, or `undefined` when there is none (content stored before the record existed). */
  lastAccess(subject: AccessSubject): Promise<number | undefined>;
  /** Every entry, in no particular order. Includes touches not flushed yet. */
  entries(): AsyncIterable<AccessEntry>;
  /** Persists every change made so far; resolves when they are durable. Rejects with the backend's write error. */
  flush(): Promise<void>;
}

/**
 * A subject as one string without spaces inside its fields, used as a map key and as the record's
 * on-disk form (fs/fs-access-record.ts): `b <digest>`, `m <digest>`, `t <upstream> <repo> <tag>`.
 */
export function subjectId(s: AccessSubject): string {
  switch (s.kind) {
    case 'blob':
      return `b ${s.digest}`;
    case 'manifest':
      return `m ${s.digest}`;
    case 'tag':
      return `t ${s.key.upstream} ${s.key.repo} ${s.tag}`;
  }
}

/** The inverse of `subjectId`; `undefined` for anything malformed (a torn line of a crashed write). */
export function parseSubjectId(id: string): AccessSubject | undefined {
  const parts = id.split(' ');
  if ((parts[0] === 'b' || parts[0] === 'm') && parts.length === 2 && isDigest(parts[1]!)) {
    return { kind: parts[0] === 'b' ? 'blob' : 'manifest', digest: parts[1] as Digest };
  }
  if (parts[0] === 't' && parts.length === 4) {
    const [, upstream, repo, tag] = parts as [string, string, string, string];
    if (isRegistryName(upstream) && isValidRepoPath(repo) && isTag(tag)) return { kind: 'tag', key: { upstream, repo: repo as RepoName }, tag: tag as Tag };
  }
  return undefined;
}

/**
 * The in-memory part every backend shares: the latest time per subject, and what changed since the
 * last flush (a time, or `null` for a forgotten subject).
 */
export class AccessTable {
  readonly times = new Map<string, number>();
  /** Changes not persisted yet, by subject id. */
  pending = new Map<string, number | null>();

  touch(subject: AccessSubject, at: number): void {
    if (!Number.isFinite(at)) return;
    const id = subjectId(subject);
    const prev = this.times.get(id);
    if (prev !== undefined && prev >= at) return;
    this.times.set(id, at);
    this.pending.set(id, at);
  }

  forget(subject: AccessSubject): void {
    const id = subjectId(subject);
    this.times.delete(id);
    this.pending.set(id, null);
  }

  /** A persisted entry read back at start: applied unless this process changed the subject since. */
  load(id: string, at: number | null): void {
    if (this.pending.has(id)) return;
    if (at === null) this.times.delete(id);
    else if ((this.times.get(id) ?? -Infinity) < at) this.times.set(id, at);
  }

  /** Hands the pending changes over (to be persisted) and starts a new batch. */
  takePending(): Map<string, number | null> {
    const batch = this.pending;
    this.pending = new Map();
    return batch;
  }

  /** A batch that could not be persisted goes back, unless newer changes replaced its entries. */
  restore(batch: Map<string, number | null>): void {
    for (const [id, at] of batch) if (!this.pending.has(id)) this.pending.set(id, at);
  }

  *entries(): Iterable<AccessEntry> {
    for (const [id, at] of this.times) {
      const subject = parseSubjectId(id);
      if (subject) yield { subject, at };
    }
  }
}
