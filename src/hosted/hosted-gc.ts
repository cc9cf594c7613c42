import type { EvictedItem } from '../cache/evictor.js';
import { isDigest, type Digest } from '../domain/digest.js';
import { HOSTED_UPSTREAM, type RepoKey, type Tag } from '../domain/reference.js';
import type { Logger } from '../lib/logger.js';
import type { AccessRecord } from '../storage/access-record.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { ManifestStore, MetadataStore } from '../storage/manifest-store.js';
import type { HostedContent } from './hosted-content.js';

export interface HostedGcStorage {
  readonly blobs: BlobStore;
  readonly manifests: ManifestStore;
  readonly metadata: MetadataStore;
  readonly access: AccessRecord;
}

export interface HostedGcOptions {
  readonly storage: HostedGcStorage;
  /** The hosted content known to the process: its links, and the pushes in progress (`use`/`tryCollect`). */
  readonly content: HostedContent;
  /** `hosted.gcGracePeriod`: a blob linked (or a manifest stored) more recently than this is never collected. */
  readonly gracePeriodMs: number;
  /** What else protects content by digest (pins): never collected. */
  readonly isProtected?: (digest: Digest) => boolean;
  /** The cache's claim on a blob before it is deleted (not while it is being served): `Evictor`'s `claimBlob`. */
  readonly claimBlob?: (digest: Digest) => (() => void) | undefined;
  /** Ms since epoch; tests inject one. */
  readonly clock?: () => number;
  readonly logger: Logger;
}

export interface HostedGcResult {
  /** Blob links removed from hosted repositories (the bytes may have stayed: still referenced elsewhere). */
  readonly linksRemoved: number;
  readonly errors: number;
}

/**
 * Garbage collection of hosted content after deletes (issue #14): online, in the eviction pass
 * (`Evictor`'s `collectGarbage`: `hubcache gc`, POST /admin/gc, and periodically).
 *
 * Mark (no state is kept between passes, so a pass that dies leaves nothing to resume): walk every
 * repository. A hosted repository's blob link (`_layers`) is garbage when no manifest linked to
 * the repository (or named by one of its tags) references the blob, and it was linked more than
 * the grace period ago (`blobLinkedAt`: an upload or mount refreshes it), so a push's blobs
 * uploaded before its manifest are safe. A stored manifest is garbage when no repository links it,
 * no tag names it, no linked manifest references it and it was stored more than the grace period
 * ago (hosted manifests deleted by digest; cached orphans too: those are fetched again on demand).
 *
 * Sweep, per blob, with garbage collection's claim on it (`HostedContent.tryCollect`: skipped
 * while a push uses it; a push that comes meanwhile waits, then finds it gone): the links are
 * checked again (a manifest pushed since may reference it now), then, when every hosted link of it
 * is garbage, no manifest of the cache references it and nothing else protects it, the bytes are
 * deleted FIRST and the links after. A link always comes with its bytes as far as a manifest PUT
 * is concerned: it checks both (hosted-registry.ts), so a crash between the two steps leaves a
 * link without bytes that the next pass removes, never a manifest accepted without its blob.
 * Blobs still referenced by the cache's manifests or linked to another hosted repository lose
 * only the garbage links: the bytes are the cache's (LRU) or the other repository's from then on.
 */
export class HostedGc {
  readonly #o: HostedGcOptions;
  readonly #clock: () => number;

  constructor(opts: HostedGcOptions) {
    this.#o = opts;
    this.#clock = opts.clock ?? Date.now;
  }

  async collect(opts: { readonly dryRun: boolean; readonly record: (item: EvictedItem) => void; readonly signal?: AbortSignal }): Promise<HostedGcResult> {
    const { content, logger } = this.#o;
    if (!content.loaded) {
      logger.debug('hosted gc skipped: hosted content not counted yet');
      return { linksRemoved: 0, errors: 0 };
    }
    const now = this.#clock();
    const { metadata, manifests, blobs, access } = this.#o.storage;
    const refsCache = new Map<Digest, Set<Digest> | undefined>();
    const refsOf = async (m: Digest): Promise<Set<Digest> | undefined> => {
      if (refsCache.has(m)) return refsCache.get(m);
      const stored = await manifests.get(m);
      const refs = stored ? digestsIn(stored.body) : undefined;
      refsCache.set(m, refs);
      return refs;
    };

    // --- mark ---
    /** Manifests something points at: a repository link, a tag. */
    const pointedAt = new Set<Digest>();
    /** Blobs and manifests referenced by a manifest that something points at (filled lazily). */
    const referencedByManifests = new Set<Digest>();
    const hostedLinks = new Map<Digest, RepoKey[]>();
    const garbageLinks = new Map<Digest, RepoKey[]>();
    for await (const key of metadata.listRepositories()) {
      const named = new Set<Digest>(await metadata.listManifests(key));
      for (const tag of await metadata.listTags(key)) {
        const entry = await metadata.getTag(key, tag as Tag);
        if (entry) named.add(entry.digest);
      }
      for (const d of named) pointedAt.add(d);
      if (key.upstream !== HOSTED_UPSTREAM) continue;
      const referenced = await this.#referencedIn(key, refsOf);
      for (const d of await metadata.listBlobs(key)) {
        push(hostedLinks, d, key);
        if (referenced === undefined || referenced.has(d)) continue;
        if (await this.#linkIsOld(key, d, now)) push(garbageLinks, d, key);
      }
    }
    // Stored manifests nothing points at and past the grace period: the candidates of the last sweep.
    const unpointed: Array<{ digest: Digest; size: number }> = [];
    for await (const m of manifests.list()) {
      if (pointedAt.has(m.digest) || m.modifiedAt === undefined || now - m.modifiedAt <= this.#o.gracePeriodMs) continue;
      unpointed.push({ digest: m.digest, size: m.size });
    }
    // What every manifest something points at mentions: read only when there is garbage to judge
    // (a store with nothing deleted costs a walk of its metadata, not a read of every manifest).
    if (garbageLinks.size > 0 || unpointed.length > 0) {
      for (const m of pointedAt) for (const d of (await refsOf(m)) ?? []) referencedByManifests.add(d);
    }

    // --- sweep: blobs ---
    let linksRemoved = 0;
    let errors = 0;
    for (const [digest, keys] of garbageLinks) {
      if (opts.signal?.aborted) break; // the cluster's maintenance lock was lost
      const allGarbage = keys.length === (hostedLinks.get(digest)?.length ?? 0);
      const keepBytes = !allGarbage || referencedByManifests.has(digest) || this.#o.isProtected?.(digest) === true;
      if (opts.dryRun) {
        const info = keepBytes ? undefined : await blobs.stat(digest);
        if (info) opts.record({ kind: 'blob', reason: 'unreferenced', digest, upstream: HOSTED_UPSTREAM, repository: keys[0]!.repo, bytes: info.size });
        continue;
      }
      const done = await content.tryCollect(digest);
      if (!done) continue; // a push (on any replica) is using it: next pass
      try {
        // Checked again under the claim: a manifest pushed or a link refreshed since the mark.
        const still: RepoKey[] = [];
        for (const key of keys) {
          const referenced = await this.#referencedIn(key, refsOf);
          if (referenced !== undefined && !referenced.has(digest) && (await this.#linkIsOld(key, digest, now))) still.push(key);
        }
        if (still.length === 0) continue;
        // Every link to it (as this process knows them, and with other replicas as the store has
        // them now: one may have linked it since the mark) is garbage: the bytes go first.
        if (!keepBytes && still.length === keys.length && content.links(digest) <= still.length && !(content.shared && (await this.#linkedElsewhere(digest, still)))) {
          const info = await blobs.stat(digest);
          const release = info && (this.#o.claimBlob ? this.#o.claimBlob(digest) : () => {});
          if (info && !release) continue; // being served: next pass
          try {
            if (info) {
              await blobs.delete(digest);
              access.forget({ kind: 'blob', digest });
              opts.record({ kind: 'blob', reason: 'unreferenced', digest, upstream: HOSTED_UPSTREAM, repository: still[0]!.repo, bytes: info.size });
            }
          } finally {
            release?.();
          }
        }
        for (const key of still) {
          await metadata.unlinkBlob(key, digest);
          content.remove(digest);
          linksRemoved++;
        }
      } catch (err) {
        errors++;
        logger.warn('hosted gc failed', { kind: 'blob', digest, error: (err as Error).message });
      } finally {
        done();
      }
    }

    // --- sweep: manifests nothing points at ---
    for (const m of unpointed) {
      if (opts.signal?.aborted) break;
      if (referencedByManifests.has(m.digest) || this.#o.isProtected?.(m.digest) || content.holds(m.digest)) continue;
      if (opts.dryRun) {
        opts.record({ kind: 'manifest', reason: 'unreferenced', digest: m.digest, bytes: m.size });
        continue;
      }
      const done = await content.tryCollect(m.digest);
      if (!done) continue;
      try {
        if (content.holds(m.digest)) continue; // pushed since the mark
        await manifests.delete(m.digest);
        access.forget({ kind: 'manifest', digest: m.digest });
        opts.record({ kind: 'manifest', reason: 'unreferenced', digest: m.digest, bytes: m.size });
      } catch (err) {
        errors++;
        logger.warn('hosted gc failed', { kind: 'manifest', digest: m.digest, error: (err as Error).message });
      } finally {
        done();
      }
    }
    if (linksRemoved > 0 || errors > 0) logger.info('hosted gc', { linksRemoved, errors, dryRun: opts.dryRun });
    return { linksRemoved, errors };
  }

  /**
   * What the manifests of a hosted repository (linked, or named by a tag) reference; `undefined`
   * when one of them can't be read (then none of the repository's links is judged garbage).
   */
  async #referencedIn(key: RepoKey, refsOf: (m: Digest) => Promise<Set<Digest> | undefined>): Promise<Set<Digest> | undefined> {
    const { metadata } = this.#o.storage;
    const named = new Set<Digest>(await metadata.listManifests(key));
    for (const tag of await metadata.listTags(key)) {
      const entry = await metadata.getTag(key, tag as Tag);
      if (entry) named.add(entry.digest);
    }
    const out = new Set<Digest>();
    for (const m of named) {
      // Manifests are immutable: a parse cached for the pass stays right; only the links change.
      const refs = await refsOf(m);
      if (!refs) return undefined;
      for (const d of refs) out.add(d);
    }
    return out;
  }

  /** Whether a hosted repository other than `keys` links `digest` in the store now (another replica's push or mount). */
  async #linkedElsewhere(digest: Digest, keys: readonly RepoKey[]): Promise<boolean> {
    const { metadata } = this.#o.storage;
    for await (const key of metadata.listRepositories()) {
      if (key.upstream !== HOSTED_UPSTREAM || keys.some((k) => k.repo === key.repo)) continue;
      if (await metadata.hasBlob(key, digest)) return true;
    }
    return false;
  }

  /** Linked more than the grace period ago (the link's time, else the blob's; unknown: not old). */
  async #linkIsOld(key: RepoKey, digest: Digest, now: number): Promise<boolean> {
    const { metadata, blobs } = this.#o.storage;
    const at = metadata.blobLinkedAt ? await metadata.blobLinkedAt(key, digest) : (await blobs.stat(digest))?.modifiedAt;
    return at !== undefined && now - at > this.#o.gracePeriodMs;
  }
}

function push<K, V>(map: Map<K, V[]>, k: K, v: V): void {
  const list = map.get(k);
  if (list) list.push(v);
  else map.set(k, [v]);
}

/**
 * Every digest a manifest mentions (descriptors' `digest`, schema 1's `blobSum`, `subject`, …):
 * a superset of what it references, whatever its schema. Keeping a blob that an annotation
 * happens to name costs a few bytes; missing a reference would lose one.
 */
function digestsIn(body: Buffer): Set<Digest> {
  const out = new Set<Digest>();
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    return out;
  }
  const walk = (v: unknown): void => {
    if (typeof v === 'string') {
      if (isDigest(v)) out.add(v);
    } else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(doc);
  return out;
}
