import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Descriptor } from '../../domain/descriptor.js';
import { parseDigest, sha256Digest, type Digest } from '../../domain/digest.js';
import { RegistryError } from '../../domain/errors.js';
import { isTag, isValidRepoPath, parseRepoName, type RepoKey, type RepoName, type Tag } from '../../domain/reference.js';
import { isKeySpace, parseKeySpace } from '../../domain/registry-name.js';
import { checkManifest, manifestProblem } from '../manifest-entry.js';
import type { ManifestStore, MetadataStore, StoredManifest, StoredManifestInfo } from '../manifest-store.js';
import { checkTagEntry, toTagEntry, type TagEntry } from '../tag-store.js';
import { listDigests } from './s3-blob-store.js';
import { isNotFound, isPreconditionFailed, toS3Fault } from './s3-errors.js';
import type { S3Layout } from './s3-layout.js';

export interface S3Location {
  readonly client: S3Client;
  readonly bucket: string;
  readonly layout: S3Layout;
}

/** The object's bytes, or `undefined` when it isn't there. */
export async function getObject(o: S3Location, key: string): Promise<{ body: Buffer; contentType: string | undefined } | undefined> {
  try {
    const out = await o.client.send(new GetObjectCommand({ Bucket: o.bucket, Key: key }));
    return { body: Buffer.from(await out.Body!.transformToByteArray()), contentType: out.ContentType };
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw toS3Fault('GetObject', err);
  }
}

async function exists(o: S3Location, key: string): Promise<boolean> {
  try {
    await o.client.send(new HeadObjectCommand({ Bucket: o.bucket, Key: key }));
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw toS3Fault('HeadObject', err);
  }
}

export async function putObject(o: S3Location, key: string, body: Buffer, extra: { ContentType?: string; IfNoneMatch?: string } = {}): Promise<void> {
  try {
    await o.client.send(new PutObjectCommand({ Bucket: o.bucket, Key: key, Body: body, ContentLength: body.length, ...extra }));
  } catch (err) {
    throw toS3Fault('PutObject', err);
  }
}

export async function deleteObject(o: S3Location, key: string): Promise<void> {
  try {
    await o.client.send(new DeleteObjectCommand({ Bucket: o.bucket, Key: key }));
  } catch (err) {
    if (!isNotFound(err)) throw toS3Fault('DeleteObject', err);
  }
}

/** Every key under `prefix`, in order (ListObjectsV2 pages). */
export async function* listKeys(o: S3Location, prefix: string): AsyncIterable<string> {
  let token: string | undefined;
  do {
    let page;
    try {
      page = await o.client.send(new ListObjectsV2Command({ Bucket: o.bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
    } catch (err) {
      throw toS3Fault('ListObjectsV2', err);
    }
    for (const c of page.Contents ?? []) if (c.Key !== undefined) yield c.Key;
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
}

/**
 * Manifests as objects `manifests/sha256/<ab>/<hex>` holding the exact bytes, the media type as the
 * object's Content-Type (one object: a manifest and its media type appear and go together). `put`
 * is a create-only PUT (`If-None-Match: *`): when several replicas put the same manifest at once,
 * one wins and the others read back its descriptor — the first media type stays.
 */
export class S3ManifestStore implements ManifestStore {
  readonly #o: S3Location;

  constructor(o: S3Location) {
    this.#o = o;
  }

  async get(digest: Digest): Promise<StoredManifest | undefined> {
    const got = await getObject(this.#o, this.#o.layout.manifest(parseDigest(digest)));
    if (!got || got.contentType === undefined) return undefined;
    // Written by another version, or damaged: not served (fetching it again replaces it).
    if (sha256Digest(got.body) !== digest || manifestProblem(got.body, got.contentType) !== undefined) return undefined;
    return { descriptor: { digest, size: got.body.length, mediaType: got.contentType }, body: got.body };
  }

  async put(body: Buffer, mediaType: string, expected?: Digest): Promise<Descriptor> {
    const digest = sha256Digest(body);
    if (expected !== undefined && expected !== digest) throw new RegistryError('DIGEST_INVALID', { expected, actual: digest });
    checkManifest(body, mediaType);
    const existing = await this.get(digest);
    if (existing) return existing.descriptor;
    const key = this.#o.layout.manifest(digest);
    try {
      await this.#o.client.send(new PutObjectCommand({ Bucket: this.#o.bucket, Key: key, Body: Buffer.from(body), ContentLength: body.length, ContentType: mediaType, IfNoneMatch: '*' }));
    } catch (err) {
      if (!isPreconditionFailed(err)) throw toS3Fault('PutObject', err);
      // Another replica stored it first: its media type stays.
      const winner = await this.get(digest);
      if (winner) return winner.descriptor;
      // An unreadable object (an older version's) under the key: replace it.
      await putObject(this.#o, key, Buffer.from(body), { ContentType: mediaType });
    }
    return { digest, size: body.length, mediaType };
  }

  async delete(digest: Digest): Promise<void> {
    await deleteObject(this.#o, this.#o.layout.manifest(parseDigest(digest)));
  }

  async *list(): AsyncIterable<StoredManifestInfo> {
    yield* listDigests(this.#o.client, this.#o.bucket, this.#o.layout.manifestsPrefix());
  }
}

const TAGS = '_tags';
const MANIFESTS = '_manifests';
const LAYERS = '_layers';

/**
 * Tags and links as small objects under `repositories/<upstream>/<repo>/` (s3-layout.ts): a tag is
 * its TagEntry as JSON (a PUT replaces it atomically), a link an empty object. Every replica reads
 * the same objects; S3 (and RGW) are strongly read-after-write consistent, so a tag set on one
 * replica is what the next read on any replica returns.
 */
export class S3MetadataStore implements MetadataStore {
  readonly #o: S3Location;

  constructor(o: S3Location) {
    this.#o = o;
  }

  async getTag(key: RepoKey, tag: Tag): Promise<TagEntry | undefined> {
    const got = await getObject(this.#o, this.#tagKey(key, tag));
    if (!got) return undefined;
    try {
      return toTagEntry(JSON.parse(got.body.toString('utf8')));
    } catch {
      return undefined;
    }
  }

  async setTag(key: RepoKey, tag: Tag, entry: TagEntry): Promise<void> {
    const k = this.#tagKey(key, tag);
    const e = checkTagEntry(entry);
    await putObject(this.#o, k, Buffer.from(JSON.stringify(e)), { ContentType: 'application/json' });
  }

  async listTags(key: RepoKey): Promise<string[]> {
    const prefix = `${this.#repo(key)}${TAGS}/`;
    const out: string[] = [];
    for await (const k of listKeys(this.#o, prefix)) {
      const t = k.slice(prefix.length);
      if (isTag(t)) out.push(t);
    }
    return out.sort();
  }

  async deleteTag(key: RepoKey, tag: Tag): Promise<void> {
    await deleteObject(this.#o, this.#tagKey(key, tag));
  }

  async linkManifest(key: RepoKey, digest: Digest): Promise<void> {
    await putObject(this.#o, this.#link(key, MANIFESTS, digest), Buffer.alloc(0));
  }

  async hasManifest(key: RepoKey, digest: Digest): Promise<boolean> {
    return exists(this.#o, this.#link(key, MANIFESTS, digest));
  }

  async unlinkManifest(key: RepoKey, digest: Digest): Promise<void> {
    await deleteObject(this.#o, this.#link(key, MANIFESTS, digest));
  }

  async listManifests(key: RepoKey): Promise<Digest[]> {
    return this.#links(key, MANIFESTS);
  }

  async linkBlob(key: RepoKey, digest: Digest): Promise<void> {
    await putObject(this.#o, this.#link(key, LAYERS, digest), Buffer.alloc(0));
  }

  async hasBlob(key: RepoKey, digest: Digest): Promise<boolean> {
    return exists(this.#o, this.#link(key, LAYERS, digest));
  }

  async unlinkBlob(key: RepoKey, digest: Digest): Promise<void> {
    await deleteObject(this.#o, this.#link(key, LAYERS, digest));
  }

  async listBlobs(key: RepoKey): Promise<Digest[]> {
    return this.#links(key, LAYERS);
  }

  /**
   * A walk of `repositories/`: a repository is the path between the upstream and the first
   * component starting with `_` (no repository path component can).
   */
  async *listRepositories(): AsyncIterable<RepoKey> {
    const root = this.#o.layout.repositoriesPrefix();
    const seen = new Set<string>();
    for await (const k of listKeys(this.#o, root)) {
      const parts = k.slice(root.length).split('/');
      const cut = parts.findIndex((p, i) => i > 0 && p.startsWith('_'));
      if (cut < 2) continue;
      const upstream = parts[0]!;
      const repo = parts.slice(1, cut).join('/');
      const id = `${upstream}/${repo}`;
      if (seen.has(id) || !isKeySpace(upstream) || !isValidRepoPath(repo)) continue;
      seen.add(id);
      yield Object.freeze({ upstream, repo: repo as RepoName });
    }
  }

  async #links(key: RepoKey, kind: string): Promise<Digest[]> {
    const prefix = `${this.#repo(key)}${kind}/sha256/`;
    const out: Digest[] = [];
    for await (const k of listKeys(this.#o, prefix)) {
      const hex = k.slice(prefix.length);
      if (/^[0-9a-f]{64}$/.test(hex)) out.push(`sha256:${hex}` as Digest);
    }
    return out.sort();
  }

  #repo(key: RepoKey): string {
    return this.#o.layout.repository(parseKeySpace(key.upstream), parseRepoName(key.repo));
  }

  #tagKey(key: RepoKey, tag: Tag): string {
    const repo = this.#repo(key);
    if (!isTag(tag)) throw new RegistryError('TAG_INVALID', { tag: String(tag).slice(0, 200) }, { message: 'invalid tag' });
    return `${repo}${TAGS}/${tag}`;
  }

  #link(key: RepoKey, kind: string, digest: Digest): string {
    const d = parseDigest(digest);
    return `${this.#repo(key)}${kind}/sha256/${d.slice('sha256:'.length)}`;
  }
}
