import { digestHex, type Digest } from '../../domain/digest.js';

/**
 * The keys of an S3 store under its `prefix` (docs/storage-layout.md, "S3"): content-addressed like
 * the filesystem store, so that any replica finds any object by its digest alone.
 *   blobs/sha256/<ab>/<hex>              a blob's bytes
 *   manifests/sha256/<ab>/<hex>          a manifest's exact bytes; Content-Type = its media type
 *   repositories/<upstream>/<repo>/_tags/<tag>                  a tag's TagEntry (JSON)
 *   repositories/<upstream>/<repo>/_manifests/sha256/<hex>      a manifest link (empty)
 *   repositories/<upstream>/<repo>/_layers/sha256/<hex>         a hosted blob link (empty)
 *   uploads/<uuid>                       a push's multipart upload, completed only once verified,
 *                                        then copied to blobs/… and deleted (a fill's upload goes
 *                                        straight to its blobs/… key: it knows its digest)
 *   _probe/<random>                      the write probe (put, then deleted)
 * Listing a `…/sha256/` prefix yields keys in digest order (the `<ab>/` level is the hex's own first
 * two characters).
 */
export class S3Layout {
  constructor(readonly prefix: string) {}

  readonly blobsPrefix = (): string => `${this.prefix}blobs/sha256/`;
  readonly manifestsPrefix = (): string => `${this.prefix}manifests/sha256/`;
  readonly repositoriesPrefix = (): string => `${this.prefix}repositories/`;

  blob(digest: Digest): string {
    const hex = digestHex(digest);
    return `${this.blobsPrefix()}${hex.slice(0, 2)}/${hex}`;
  }

  manifest(digest: Digest): string {
    const hex = digestHex(digest);
    return `${this.manifestsPrefix()}${hex.slice(0, 2)}/${hex}`;
  }

  /** `repositories/<upstream>/<repo>/` (names already validated). */
  repository(upstream: string, repo: string): string {
    return `${this.repositoriesPrefix()}${upstream}/${repo}/`;
  }

  /** The temp key of a push's multipart upload (completed there, then copied to `blob()`). */
  upload(id: string): string {
    return `${this.prefix}uploads/${id}`;
  }

  readonly uploadsPrefix = (): string => `${this.prefix}uploads/`;

  probe(id: string): string {
    return `${this.prefix}_probe/${id}`;
  }

  /** The digest of a blob or manifest key (`…/sha256/<ab>/<hex>`), or undefined for anything else. */
  static digestOfKey(key: string): Digest | undefined {
    const m = /\/sha256\/([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(key);
    return m && m[2]!.startsWith(m[1]!) ? (`sha256:${m[2]}` as Digest) : undefined;
  }
}
