import type { Digest } from '../domain/digest.js';

/**
 * Which stored blobs are being served right now, so that eviction never deletes one under a
 * response (issue #13). On a filesystem a stream that holds its file descriptor would finish
 * anyway, but an object store's GET would not: the rule is explicit, whatever the backend.
 *
 * A request takes a lease before it looks the blob up and gives it back when its body closes;
 * eviction claims a blob only while nobody holds a lease, and a request arriving during the
 * deletion waits for it to finish (microseconds to milliseconds), then finds the blob missing and
 * fetches it again like any miss.
 */
export class BlobLeases {
  readonly #readers = new Map<Digest, number>();
  readonly #evicting = new Map<Digest, Promise<void>>();

  /**
   * A lease on `digest`: the release function (call it once; later calls do nothing). Synchronous
   * unless the blob is being deleted, in which case it resolves once the deletion is done.
   */
  acquire(digest: Digest): (() => void) | Promise<() => void> {
    const deleting = this.#evicting.get(digest);
    if (deleting) return deleting.then(() => this.acquire(digest));
    this.#readers.set(digest, (this.#readers.get(digest) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = this.#readers.get(digest)! - 1;
      if (left > 0) this.#readers.set(digest, left);
      else this.#readers.delete(digest);
    };
  }

  /** How many leases are held on `digest`. */
  readers(digest: Digest): number {
    return this.#readers.get(digest) ?? 0;
  }

  /**
   * For eviction: `undefined` while `digest` is leased (or already claimed), else a release
   * function to call once the deletion is over; requests for it wait meanwhile.
   */
  tryClaim(digest: Digest): (() => void) | undefined {
    if (this.#readers.has(digest) || this.#evicting.has(digest)) return undefined;
    let done!: () => void;
    this.#evicting.set(
      digest,
      new Promise<void>((r) => (done = r)),
    );
    return () => {
      this.#evicting.delete(digest);
      done();
    };
  }
}
