import type { DigestGuards } from '../cache/fill-coordinator.js';
import type { Digest } from '../domain/digest.js';
import { HOSTED_UPSTREAM } from '../domain/reference.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { ManifestStore, MetadataStore } from '../storage/manifest-store.js';

/** Hosted content's share of the store: distinct blobs and manifests, and their bytes. */
export interface HostedUsage {
  readonly bytes: number;
  readonly objects: number;
}

/**
 * Which content belongs to hosted repositories, in memory: every blob and manifest linked to a
 * hosted repository (a blob uploaded or mounted, a manifest pushed), counted by links, so that
 * content shared by several hosted repositories stays until its last link goes. A manifest's
 * blobs and child manifests are always linked to its repository (a manifest PUT refuses anything
 * else), so they are covered too; and a blob being committed is held from just before its commit.
 *
 * `isProtected` is what the cache's evictor asks before it removes a blob (issue #13's
 * `isProtected?: (digest) => boolean`): a Map lookup. Until the walk of the hosted repositories at
 * start has finished, everything is protected (an evictor waits rather than guessing).
 */
export class HostedContent {
  /**
   * Several replicas (issue #15): the same exclusion across processes, through Redis
   * (`RedisCoordinator`'s digest guards): `use` marks the digests cluster-wide too, `tryCollect`
   * needs the cluster's claim as well. Unset on a single node.
   */
  readonly shared: DigestGuards | undefined;

  constructor(opts: { readonly shared?: DigestGuards } = {}) {
    this.shared = opts.shared;
  }

  readonly #refs = new Map<Digest, { refs: number; size: number }>();
  #loaded = false;
  #bytes = 0;

  /** The predicate for the evictor: true for hosted content (and for everything until `load` finished). */
  readonly isProtected = (digest: Digest): boolean => !this.#loaded || this.#refs.has(digest) || this.#inStore.has(digest);
  /**
   * Several replicas: what the store's hosted repositories linked at the last `refreshFromStore`
   * (before each eviction pass), including what other replicas pushed since this one counted.
   */
  #inStore = new Set<Digest>();
  /**
   * Whether `digest` is linked to a hosted repository, as far as known: the cache then serves it
   * under a mirrored name only after that name's upstream confirmed it (cache/pull-through.ts
   * `heldForOthers`). Until the walk after start has finished, only what was pushed since is known.
   */
  readonly holds = (digest: Digest): boolean => this.#refs.has(digest);

  /**
   * Digests a push is using right now (a manifest PUT validating and linking what it references, a
   * blob upload or mount committing and linking): garbage collection leaves them alone.
   */
  readonly #inUse = new Map<Digest, number>();
  /** Digests garbage collection is removing right now, and when it is done with each. */
  readonly #collecting = new Map<Digest, Promise<void>>();

  /**
   * Marks `digests` as in use by a push until the returned release is called, after any
   * collection of one of them in progress has finished (so the push then sees the store as the
   * collection left it: the blob gone, its link gone). Garbage collection never starts on a digest
   * in use (`tryCollect`). Together they make a manifest PUT racing a sweep either find every blob
   * it references (and keep it) or fail with `MANIFEST_BLOB_UNKNOWN`, never link a manifest whose
   * blobs are being removed.
   */
  async use(digests: Iterable<Digest>): Promise<() => void> {
    const list = [...new Set(digests)];
    const local = await this.#useLocal(list);
    if (!this.shared) return local;
    // Then cluster-wide: waits while a collection on any replica holds one of them. Redis
    // unreachable: the push goes on alone (no replica collects without Redis).
    const shared = await this.shared.use(list);
    return () => {
      local();
      void shared.release();
    };
  }

  async #useLocal(list: readonly Digest[]): Promise<() => void> {
    for (;;) {
      const busy = list.flatMap((d) => this.#collecting.get(d) ?? []);
      if (busy.length === 0) break;
      await Promise.all(busy);
    }
    // No await between the check above and this: a collection can't slip in.
    for (const d of list) this.#inUse.set(d, (this.#inUse.get(d) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const d of list) {
        const n = (this.#inUse.get(d) ?? 1) - 1;
        if (n > 0) this.#inUse.set(d, n);
        else this.#inUse.delete(d);
      }
    };
  }

  /**
   * Garbage collection's claim on `digest`: `undefined` while a push uses it (`use`), else a
   * function to call when the collection of `digest` is over; pushes wanting it wait until then.
   */
  async tryCollect(digest: Digest): Promise<(() => void) | undefined> {
    if (this.#inUse.has(digest) || this.#collecting.has(digest)) return undefined;
    let done!: () => void;
    this.#collecting.set(digest, new Promise<void>((resolve) => (done = resolve)));
    const local = () => {
      this.#collecting.delete(digest);
      done();
    };
    if (!this.shared) return local;
    // Pushes of this process wait from here on; the cluster's claim decides for the others.
    const shared = await this.shared.collect(digest);
    if (!shared) {
      local();
      return undefined;
    }
    return () => {
      // The cluster's claim goes after the bytes and links are gone (the caller is done with them).
      void shared().finally(local);
    };
  }

  /** Links (and holds) on `digest` known to this process: hosted repositories linking it. */
  links(digest: Digest): number {
    return this.#refs.get(digest)?.refs ?? 0;
  }

  get loaded(): boolean {
    return this.#loaded;
  }

  /** One more link (or hold) on `digest` of `size` bytes (a hold before a commit doesn't know the size yet: 0). */
  add(digest: Digest, size: number): void {
    const e = this.#refs.get(digest);
    if (e) {
      e.refs++;
      if (e.size === 0 && size > 0) {
        e.size = size;
        this.#bytes += size;
      }
    } else {
      this.#refs.set(digest, { refs: 1, size });
      this.#bytes += size;
    }
  }

  /** One link (or hold) fewer; the content stops being hosted with its last one. */
  remove(digest: Digest): void {
    const e = this.#refs.get(digest);
    if (!e) return;
    if (--e.refs > 0) return;
    this.#refs.delete(digest);
    this.#bytes -= e.size;
  }

  usage(): HostedUsage | undefined {
    return this.#loaded ? { bytes: this.#bytes, objects: this.#refs.size } : undefined;
  }

  /**
   * Several replicas (issue #15): this process's counts know only its own pushes since its start,
   * so before an eviction pass the replica running it walks the hosted repositories' links again
   * and protects everything they name as well. Only ever adds protection (counts are untouched).
   */
  async refreshFromStore(stores: { metadata: MetadataStore }): Promise<void> {
    const seen = new Set<Digest>();
    for await (const key of stores.metadata.listRepositories()) {
      if (key.upstream !== HOSTED_UPSTREAM) continue;
      for (const d of await stores.metadata.listBlobs(key)) seen.add(d);
      for (const d of await stores.metadata.listManifests(key)) seen.add(d);
    }
    this.#inStore = seen;
  }

  /**
   * Walks the hosted repositories once (at start, in the background): one link per blob and
   * manifest, with the size from the store. Links to content missing from the store count with
   * size 0 (they protect nothing that exists). Counts added meanwhile by pushes are kept.
   */
  async load(stores: { metadata: MetadataStore; blobs: BlobStore; manifests: ManifestStore }, signal?: AbortSignal): Promise<HostedUsage> {
    for await (const key of stores.metadata.listRepositories()) {
      signal?.throwIfAborted();
      if (key.upstream !== HOSTED_UPSTREAM) continue;
      for (const d of await stores.metadata.listBlobs(key)) this.add(d, (await stores.blobs.stat(d))?.size ?? 0);
      for (const d of await stores.metadata.listManifests(key)) this.add(d, (await stores.manifests.get(d))?.descriptor.size ?? 0);
    }
    this.#loaded = true;
    return this.usage()!;
  }
}
