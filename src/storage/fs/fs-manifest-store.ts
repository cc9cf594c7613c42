import { readdirSync } from 'node:fs';
import { appendFile, mkdir, readdir, rename, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Descriptor } from '../../domain/descriptor.js';
import { sha256Digest, type Digest } from '../../domain/digest.js';
import { RegistryError } from '../../domain/errors.js';
import { listingRefs, type ListingRefs } from '../../domain/manifest-refs.js';
import { isTag, isValidRepoPath, type RepoKey, type RepoName, type Tag } from '../../domain/reference.js';
import { isKeySpace } from '../../domain/registry-name.js';
import { checkManifest, manifestProblem } from '../manifest-entry.js';
import type { ManifestStore, MetadataStore, StoredManifest, StoredManifestInfo } from '../manifest-store.js';
import { checkTagEntry, toTagEntry, type TagEntry } from '../tag-store.js';
import { fsyncDir, isFile, isNotFound, readdirSorted, readIfExists, readIfExistsBlocking, readSmallFilesBlocking, writeFileAtomic } from './fs-util.js';
import { formatRefsLine, parseRefs, readRefsFile, storedInPartition } from './manifest-refs.js';
import { BLOB_LINKS_DIR, MANIFEST_LINKS_DIR, StorageLayout, TAGS_DIR } from './layout.js';
import { indexedEntries, readTrustedTagIndex, TagIndexes, type TagIndexFiles } from './tag-index.js';

export interface FsManifestStoreOptions {
  /** The storage root (see layout.ts); shared with the blob and metadata stores. */
  readonly root: string;
  /** Read files with the blocking syscalls: only for a one-shot reader process (`FsStorageOptions.blockingReads`). */
  readonly blockingReads?: boolean;
}

/**
 * Manifests by digest on a local filesystem: the exact bytes at `manifests/sha256/<ab>/<hex>` and
 * the media type in a `<hex>.json` sidecar. The sidecar is renamed into place before the body, and a
 * manifest counts as stored only when its body exists, so `get` never sees one without a media type.
 */
export class FsManifestStore implements ManifestStore {
  readonly layout: StorageLayout;
  readonly #read: (path: string) => Promise<Buffer | undefined>;
  readonly #blocking: boolean;
  /** Lines appended to each partition's refs file since it was last checked (a rewrite is due at REFS_APPENDS_PER_CHECK). */
  readonly #appends = new Map<string, number>();
  /** Partition checks in flight or queued (one at a time), for `refsIdle`. */
  #checks: Promise<void> = Promise.resolve();

  constructor(opts: FsManifestStoreOptions) {
    this.layout = new StorageLayout({ root: opts.root });
    this.#blocking = opts.blockingReads === true;
    this.#read = opts.blockingReads ? readIfExistsBlocking : readIfExists;
  }

  /** Creates the directories. Leftover temp files are swept by `FsBlobStore.init()`. */
  async init(): Promise<void> {
    await mkdir(this.layout.manifestsDir, { recursive: true });
    await mkdir(dirname(this.layout.manifestRefsPath('00')), { recursive: true });
    await mkdir(this.layout.tmpDir, { recursive: true });
  }

  /**
   * The manifest, or `undefined` when it is not stored, or its sidecar is unreadable or names a
   * media type the body is not a manifest of (a store written before hubcache checked them):
   * re-fetching repairs it.
   */
  async get(digest: Digest): Promise<StoredManifest | undefined> {
    const body = await this.#read(this.layout.manifestPath(digest));
    if (body === undefined) return undefined;
    const mediaType = parseSidecar(await this.#read(this.layout.manifestMediaTypePath(digest)));
    if (mediaType === undefined || manifestProblem(body, mediaType) !== undefined) return undefined;
    return { descriptor: { digest, size: body.length, mediaType }, body };
  }

  /**
   * Stores `body` under its sha256 (see `ManifestStore.put`). Throws `DIGEST_INVALID` when it does not
   * hash to `expected` and `MANIFEST_INVALID` when it is not a manifest of `mediaType`; nothing is
   * written then. Putting a stored manifest again writes nothing and returns the stored descriptor.
   */
  async put(body: Buffer, mediaType: string, expected?: Digest): Promise<Descriptor> {
    const digest = sha256Digest(body);
    if (expected !== undefined && expected !== digest) throw new RegistryError('DIGEST_INVALID', { expected, actual: digest });
    checkManifest(body, mediaType);
    const existing = await this.get(digest);
    if (existing) return existing.descriptor;
    const descriptor: Descriptor = { digest, size: body.length, mediaType };
    // Sidecar first: the body's rename is what makes the manifest visible.
    await writeFileAtomic(this.layout.tempPath('manifest'), this.layout.manifestMediaTypePath(digest), JSON.stringify({ mediaType }));
    await writeFileAtomic(this.layout.tempPath('manifest'), this.layout.manifestPath(digest), body);
    await this.#recordRefs(digest, body);
    return descriptor;
  }

  /** Appends a stored manifest's line to its partition's refs file (manifest-refs.ts); a failure only costs a read later. */
  async #recordRefs(digest: Digest, body: Buffer): Promise<void> {
    const hex = digest.slice('sha256:'.length);
    const prefix = hex.slice(0, 2);
    await appendFile(this.layout.manifestRefsPath(prefix), formatRefsLine(hex, listingRefs(body))).catch(() => {});
    const appended = (this.#appends.get(prefix) ?? 0) + 1;
    this.#appends.set(prefix, appended);
    if (appended >= REFS_APPENDS_PER_CHECK) this.#queueCheck(prefix);
  }

  #queueCheck(prefix: string): void {
    this.#appends.set(prefix, 0);
    this.#checks = this.#checks.then(() => this.#checkRefs(prefix).catch(() => {}));
  }

  /**
   * A reader of what the stored manifests reference, for one walk (`ls`, `du`): a partition's
   * listing and refs file are read on its first manifest and kept while the reader is; a stored
   * manifest without a (well-formed) line is read with `get` (manifest-refs.ts).
   */
  refsReader(): (digest: Digest) => Promise<ListingRefs | undefined> {
    const partitions = new Map<string, Promise<Map<string, string | null>>>();
    const load = async (prefix: string): Promise<Map<string, string | null>> => {
      const dir = join(this.layout.manifestsDir, prefix);
      let names: string[];
      try {
        names = this.#blocking ? readdirSync(dir) : await readdir(dir);
      } catch (err) {
        if (isNotFound(err)) return new Map();
        throw err;
      }
      const { refs } = await readRefsFile(this.layout.manifestRefsPath(prefix), this.#blocking);
      return new Map(storedInPartition(prefix, names).map((hex) => [hex, refs.get(hex) ?? null]));
    };
    return async (digest) => {
      const hex = digest.slice('sha256:'.length);
      const prefix = hex.slice(0, 2);
      let partition = partitions.get(prefix);
      if (partition === undefined) {
        partition = load(prefix);
        partitions.set(prefix, partition);
      }
      const line = (await partition).get(hex);
      if (line === undefined) return undefined;
      const recorded = line === null ? undefined : parseRefs(line);
      if (recorded) return recorded;
      const stored = await this.get(digest);
      return stored ? listingRefs(stored.body) : undefined;
    };
  }

  /**
   * Checks every partition's refs file (manifest-refs.ts) and rewrites those that lack a stored
   * manifest or name one that is gone: for the store's owner, after its start; `signal` stops it.
   * Resolves when every partition was checked.
   */
  async maintainRefs(signal: AbortSignal): Promise<void> {
    for (const prefix of await readdirSorted(this.layout.manifestsDir)) {
      if (signal.aborted) return;
      if (!/^[a-f0-9]{2}$/.test(prefix)) continue;
      this.#appends.set(prefix, 0);
      await this.#checkRefs(prefix);
    }
    await this.#checks;
  }

  async #checkRefs(prefix: string): Promise<void> {
    const dir = join(this.layout.manifestsDir, prefix);
    const stored = storedInPartition(prefix, await readdirSorted(dir));
    const path = this.layout.manifestRefsPath(prefix);
    const { refs, lines } = await readRefsFile(path, false);
    let text = '';
    let read = 0;
    for (const hex of stored) {
      const line = refs.get(hex);
      if (line !== undefined && parseRefs(line)) {
        text += `${hex} ${line}\n`;
        continue;
      }
      read++;
      const manifest = await this.get(`sha256:${hex}` as Digest);
      if (manifest) text += formatRefsLine(hex, listingRefs(manifest.body));
    }
    if (read === 0 && lines === stored.length) return;
    const temp = this.layout.tempPath('index');
    try {
      await mkdir(dirname(path), { recursive: true });
      await writeFile(temp, text, { flag: 'wx' });
      await rename(temp, path);
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
  }

  /** Resolves when the partition checks queued by appends are done. */
  async refsIdle(): Promise<void> {
    await this.#checks;
  }

  /** Removes the manifest (body first, so it is never visible without its sidecar). Missing is not an error. */
  async delete(digest: Digest): Promise<void> {
    await rm(this.layout.manifestPath(digest), { force: true });
    await rm(this.layout.manifestMediaTypePath(digest), { force: true });
  }

  /** Every manifest body under manifests/sha256/, in digest order, with its mtime. */
  async *list(): AsyncIterable<StoredManifestInfo> {
    for (const prefix of await readdirSorted(this.layout.manifestsDir)) {
      if (!/^[a-f0-9]{2}$/.test(prefix)) continue;
      for (const name of await readdirSorted(join(this.layout.manifestsDir, prefix))) {
        if (!/^[a-f0-9]{64}$/.test(name) || !name.startsWith(prefix)) continue;
        const st = await stat(join(this.layout.manifestsDir, prefix, name)).catch((err) => (isNotFound(err) ? undefined : Promise.reject(err)));
        if (st?.isFile()) yield { digest: `sha256:${name}` as Digest, size: st.size, modifiedAt: Math.floor(st.mtimeMs) };
      }
    }
  }
}

/** A partition's refs file is checked (and compacted) after this many appends. */
const REFS_APPENDS_PER_CHECK = 1024;

export interface FsMetadataStoreOptions {
  /** The storage root (see layout.ts); shared with the blob and manifest stores. */
  readonly root: string;
  /** Read files with the blocking syscalls: only for a one-shot reader process (`FsStorageOptions.blockingReads`). */
  readonly blockingReads?: boolean;
}

/**
 * Tags and manifest links under `repositories/<upstream>/<repo>/` (see layout.ts). Every file is
 * written atomically (temp + fsync + rename), so a reader sees the old or the new tag, never half.
 * Invalid upstream names, repository names or tags are refused (`NAME_INVALID`, `TAG_INVALID`).
 */
export class FsMetadataStore implements MetadataStore {
  readonly layout: StorageLayout;
  readonly #read: (path: string) => Promise<Buffer | undefined>;

  readonly #blocking: boolean;
  /** The per-repository tag indexes (tag-index.ts), kept by `setTag`/`deleteTag`. */
  readonly tagIndexes: TagIndexes;

  constructor(opts: FsMetadataStoreOptions) {
    this.layout = new StorageLayout({ root: opts.root });
    this.#blocking = opts.blockingReads === true;
    this.#read = opts.blockingReads ? readIfExistsBlocking : readIfExists;
    this.tagIndexes = new TagIndexes({
      tempPath: () => this.layout.tempPath('index'),
      readTags: (files, tags) => Promise.all(tags.map(async (t) => parseTagEntry(await readIfExists(`${files.tagsDir}/${t}`)))),
    });
  }

  #indexFiles(key: RepoKey): TagIndexFiles {
    return { indexPath: this.layout.tagIndexPath(key), tagsDir: this.layout.tagsDir(key) };
  }

  /**
   * Every cached tag of the repository with its entry, sorted by tag: the listing's read (`ls`,
   * `du`; issue #13). From the tag index when it can be trusted (one file, plus the files of tags
   * with a change in flight), else from the tag files (`listTags` + `getTags`).
   */
  async listTagEntries(key: RepoKey): Promise<Array<readonly [string, TagEntry]>> {
    const indexed = await readTrustedTagIndex(this.#indexFiles(key), this.#blocking);
    if (indexed === undefined) {
      const names = await this.listTags(key);
      const read = await this.getTags(key, names);
      return names.flatMap((t, i) => (read[i] ? [[t, read[i]!] as const] : []));
    }
    const entries: Array<readonly [string, TagEntry]> = indexedEntries(indexed);
    const pending = [...indexed.pending];
    if (pending.length > 0) {
      const read = await this.getTags(key, pending);
      pending.forEach((t, i) => read[i] && entries.push([t, read[i]!]));
    }
    return entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  /**
   * Rebuilds (in the background, one at a time) every repository's tag index that can't be trusted:
   * for the store's owner, after its start; `signal` stops it. Resolves when every repository was checked.
   */
  async maintainTagIndexes(signal: AbortSignal): Promise<void> {
    this.tagIndexes.startMaintenance(signal);
    for await (const key of this.listRepositories()) {
      if (signal.aborted) return;
      await this.tagIndexes.check(this.#indexFiles(key));
    }
  }

  /** Creates the directories. Leftover temp files are swept by `FsBlobStore.init()`. */
  async init(): Promise<void> {
    await mkdir(this.layout.repositoriesDir, { recursive: true });
    await mkdir(this.layout.tmpDir, { recursive: true });
  }

  /** The cached tag, or `undefined` when not cached. An unreadable entry is treated as not cached (it is a cache). */
  async getTag(key: RepoKey, tag: Tag): Promise<TagEntry | undefined> {
    return parseTagEntry(await this.#read(this.layout.tagPath(key, tag)));
  }

  /**
   * One directory path for the batch, names checked with `isTag` (no `/`, never `.` or `..`), and
   * with blocking reads the files read by `readSmallFilesBlocking`: a listing's per-tag cost is then
   * three syscalls and a JSON parse (issue #13: `ls`/`du` of 100k tags).
   */
  async getTags(key: RepoKey, tags: readonly string[]): Promise<Array<TagEntry | undefined>> {
    const dir = this.layout.tagsDir(key);
    if (this.#blocking) {
      const valid = tags.map((t) => isTag(t));
      const read = readSmallFilesBlocking(
        tags.filter((_, i) => valid[i]).map((t) => `${dir}/${t}`),
        (text) => (text === undefined ? undefined : parseTagText(text)),
      );
      let next = 0;
      return valid.map((ok) => (ok ? read[next++] : undefined));
    }
    return Promise.all(tags.map((t) => (isTag(t) ? this.getTag(key, t) : undefined)));
  }

  /** Creates or replaces the tag atomically. Only the `TagEntry` fields are stored. */
  async setTag(key: RepoKey, tag: Tag, entry: TagEntry): Promise<void> {
    const path = this.layout.tagPath(key, tag);
    const doc = checkTagEntry(entry);
    const json = JSON.stringify(doc);
    await this.tagIndexes.change(this.#indexFiles(key), tag, `= ${tag} ${json}`, () => writeFileAtomic(this.layout.tempPath('meta'), path, json));
  }

  async listTags(key: RepoKey): Promise<string[]> {
    return (await readdirSorted(this.layout.tagsDir(key))).filter((t) => isTag(t));
  }

  async linkManifest(key: RepoKey, digest: Digest): Promise<void> {
    const path = this.layout.manifestLinkPath(key, digest);
    if (await isFile(path)) return;
    await writeFileAtomic(this.layout.tempPath('meta'), path, digest);
  }

  async hasManifest(key: RepoKey, digest: Digest): Promise<boolean> {
    return isFile(this.layout.manifestLinkPath(key, digest));
  }

  async deleteTag(key: RepoKey, tag: Tag): Promise<void> {
    const path = this.layout.tagPath(key, tag);
    await this.tagIndexes.change(this.#indexFiles(key), tag, `- ${tag}`, () => rmDurable(path));
  }

  async unlinkManifest(key: RepoKey, digest: Digest): Promise<void> {
    await rmDurable(this.layout.manifestLinkPath(key, digest));
  }

  async listManifests(key: RepoKey): Promise<Digest[]> {
    return linksIn(await readdirSorted(this.layout.manifestLinksDir(key)));
  }

  /** Links the blob; a link that exists gets a fresh mtime (`blobLinkedAt`: the link's mtime). */
  async linkBlob(key: RepoKey, digest: Digest): Promise<void> {
    const path = this.layout.blobLinkPath(key, digest);
    if (await isFile(path)) {
      const now = new Date();
      await utimes(path, now, now).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
      if (await isFile(path)) return;
    }
    await writeFileAtomic(this.layout.tempPath('meta'), path, digest);
  }

  async blobLinkedAt(key: RepoKey, digest: Digest): Promise<number | undefined> {
    try {
      return (await stat(this.layout.blobLinkPath(key, digest))).mtimeMs;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async hasBlob(key: RepoKey, digest: Digest): Promise<boolean> {
    return isFile(this.layout.blobLinkPath(key, digest));
  }

  async unlinkBlob(key: RepoKey, digest: Digest): Promise<void> {
    await rmDurable(this.layout.blobLinkPath(key, digest));
  }

  async listBlobs(key: RepoKey): Promise<Digest[]> {
    return linksIn(await readdirSorted(this.layout.blobLinksDir(key)));
  }

  /** Every repository directory holding `_tags`, `_manifests` or `_layers`, by key space (upstream, `_hosted`) then name. */
  async *listRepositories(): AsyncIterable<RepoKey> {
    for (const upstream of await readdirSorted(this.layout.repositoriesDir)) {
      if (!isKeySpace(upstream)) continue;
      yield* walkRepositories(upstream, this.layout.upstreamDir(upstream), []);
    }
  }
}

async function* walkRepositories(upstream: string, dir: string, components: string[]): AsyncIterable<RepoKey> {
  const names = await readdirSorted(dir);
  const repo = components.join('/');
  if (components.length > 0 && isValidRepoPath(repo) && (names.includes(TAGS_DIR) || names.includes(MANIFEST_LINKS_DIR) || names.includes(BLOB_LINKS_DIR))) {
    yield { upstream, repo: repo as RepoName };
  }
  // `_tags`/`_manifests` (and anything else that can't be a name component) are not descended into.
  for (const name of names) {
    if (isValidRepoPath(name)) yield* walkRepositories(upstream, join(dir, name), [...components, name]);
  }
}

const HEX64_RE = /^[a-f0-9]{64}$/;

/** Link file names (`<hex>`) → digests; anything else in the directory is ignored. */
function linksIn(names: readonly string[]): Digest[] {
  return names.filter((n) => HEX64_RE.test(n)).map((n) => `sha256:${n}` as Digest);
}

/** Removes a metadata file and makes the removal durable (fsync of its directory). */
async function rmDurable(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if (isNotFound(err)) return;
    throw err;
  }
  await fsyncDir(dirname(path));
}

function parseSidecar(buf: Buffer | undefined): string | undefined {
  if (buf === undefined) return undefined;
  try {
    const doc = JSON.parse(buf.toString('utf8')) as { mediaType?: unknown };
    return typeof doc.mediaType === 'string' && doc.mediaType.length > 0 ? doc.mediaType : undefined;
  } catch {
    return undefined;
  }
}

function parseTagEntry(buf: Buffer | undefined): TagEntry | undefined {
  return buf === undefined ? undefined : parseTagText(buf.toString('utf8'));
}

function parseTagText(text: string): TagEntry | undefined {
  try {
    return toTagEntry(JSON.parse(text));
  } catch {
    return undefined;
  }
}
