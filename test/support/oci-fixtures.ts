/**
 * Small images for the in-process tier, built in memory and put straight into a FakeRegistry (no
 * tarballs, no push): deterministic bytes per seed, manifests deliberately not in canonical JSON
 * form (indented, key order of our choosing) so a test can tell a byte-exact copy from a
 * re-serialised one. Plus the helpers every integration test reads responses with.
 */
import { createCipheriv, createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { sha256Digest, type Digest } from '../../src/domain/digest.js';
import { MediaTypes } from '../../src/domain/media-types.js';
import type { FakeRegistry } from '../../src/upstream/testing/fake-registry.js';

/** Every manifest type a modern client accepts, as docker sends them. */
export const ALL_MANIFESTS = [MediaTypes.ociIndex, MediaTypes.dockerManifestList, MediaTypes.ociManifest, MediaTypes.dockerManifest].join(', ');

export interface FakeBlob {
  readonly digest: Digest;
  readonly bytes: Buffer;
}

export interface FakeImage {
  readonly digest: Digest;
  readonly manifest: Buffer;
  readonly mediaType: string;
  readonly config: FakeBlob;
  readonly layers: readonly FakeBlob[];
  readonly platform?: { readonly os: string; readonly architecture: string };
}

export interface FakeIndex {
  readonly digest: Digest;
  readonly manifest: Buffer;
  readonly mediaType: string;
  readonly children: readonly FakeImage[];
}

export type Format = 'oci' | 'docker';

/** `size` pseudo-random bytes, the same for the same seed (AES-CTR over zeros: fast for MiBs). */
export function seededBytes(seed: string, size: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** Indented JSON: valid, but not what `JSON.stringify` of the parsed document gives back. */
function manifestBytes(doc: object): Buffer {
  return Buffer.from(`${JSON.stringify(doc, null, 3)}\n`);
}

/**
 * An image with a config and `layerSizes.length` layers, its blobs and manifest stored in
 * `registry` (manifest under `tag` when given, and always under its digest).
 */
export function putImage(
  registry: FakeRegistry,
  repo: string,
  tag: string | undefined,
  opts: { seed: string; format?: Format; layerSizes?: readonly number[]; platform?: { os: string; architecture: string } },
): FakeImage {
  const format = opts.format ?? 'oci';
  const platform = opts.platform ?? { os: 'linux', architecture: 'amd64' };
  const configBytes = Buffer.from(JSON.stringify({ architecture: platform.architecture, os: platform.os, seed: opts.seed, rootfs: { type: 'layers', diff_ids: [] } }));
  const config = { digest: registry.putBlob(configBytes), bytes: configBytes };
  const layers = (opts.layerSizes ?? [4096]).map((size, i) => {
    const bytes = seededBytes(`${opts.seed}/layer${i}`, size);
    return { digest: registry.putBlob(bytes), bytes };
  });
  const mediaType = format === 'oci' ? MediaTypes.ociManifest : MediaTypes.dockerManifest;
  const manifest = manifestBytes({
    schemaVersion: 2,
    mediaType,
    config: { mediaType: format === 'oci' ? 'application/vnd.oci.image.config.v1+json' : 'application/vnd.docker.container.image.v1+json', digest: config.digest, size: configBytes.length },
    layers: layers.map((l) => ({ mediaType: format === 'oci' ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: l.digest, size: l.bytes.length })),
  });
  const digest = registry.putManifest(repo, tag, manifest, mediaType);
  return { digest, manifest, mediaType, config, layers, platform };
}

/** A multi-platform index (linux/amd64 and linux/arm64 unless `platforms` says otherwise). */
export function putIndex(
  registry: FakeRegistry,
  repo: string,
  tag: string | undefined,
  opts: { seed: string; format?: Format; platforms?: ReadonlyArray<{ os: string; architecture: string }> },
): FakeIndex {
  const format = opts.format ?? 'oci';
  const platforms = opts.platforms ?? [
    { os: 'linux', architecture: 'amd64' },
    { os: 'linux', architecture: 'arm64' },
  ];
  const children = platforms.map((platform) => putImage(registry, repo, undefined, { seed: `${opts.seed}/${platform.architecture}`, format, layerSizes: [2048], platform }));
  const mediaType = format === 'oci' ? MediaTypes.ociIndex : MediaTypes.dockerManifestList;
  const manifest = manifestBytes({
    schemaVersion: 2,
    mediaType,
    manifests: children.map((c) => ({ mediaType: c.mediaType, digest: c.digest, size: c.manifest.length, platform: c.platform })),
  });
  const digest = registry.putManifest(repo, tag, manifest, mediaType);
  return { digest, manifest, mediaType, children };
}

export interface OciErrorBody {
  readonly code: string;
  readonly message: string;
  readonly detail: unknown;
}

/** The first entry of an OCI error body, checking the document's shape on the way. */
export function parseOciError(text: string): OciErrorBody {
  const doc = JSON.parse(text) as { errors?: OciErrorBody[] };
  if (!Array.isArray(doc.errors) || doc.errors.length !== 1) throw new Error(`not an OCI error document: ${text}`);
  const [e] = doc.errors;
  if (typeof e!.code !== 'string' || typeof e!.message !== 'string' || !('detail' in e!)) throw new Error(`malformed OCI error: ${text}`);
  return e!;
}

export async function ociError(res: Response): Promise<OciErrorBody> {
  return parseOciError(await res.text());
}

/** Requests to `/v2/…/manifests/…` (optionally one method) in a LoopbackServer's log. */
export const manifestRequests = (method?: string) => (r: { method: string; url: string }) => /\/manifests\//.test(r.url) && (!method || r.method === method);
export const blobRequests = (method?: string) => (r: { method: string; url: string }) => /\/blobs\//.test(r.url) && (!method || r.method === method);

/**
 * Parks the upstream requests `match` picks (after auth, before the registry answers) until
 * `release()`: the way to hold a download in flight while other clients arrive. Parked requests
 * are then answered by the registry as usual; later ones are not parked.
 */
export function holdUpstream(registry: FakeRegistry, match: (req: IncomingMessage) => boolean) {
  const parked: Array<[IncomingMessage, ServerResponse]> = [];
  const waiting: Array<() => void> = [];
  const previous = registry.hook;
  let open = false;
  registry.hook = (req, res) => {
    if (previous?.(req, res)) return true;
    if (open || !match(req)) return false;
    parked.push([req, res]);
    waiting.splice(0).forEach((wake) => wake());
    return true;
  };
  return {
    /** Resolves once `n` requests are parked. */
    async parked(n: number): Promise<void> {
      while (parked.length < n) await new Promise<void>((r) => waiting.push(r));
    },
    release(): void {
      open = true;
      registry.hook = previous;
      for (const [req, res] of parked.splice(0)) void registry.handle(req, res);
    },
  };
}

/** A manifest (or any bytes) whose digest a test wants without storing it anywhere. */
export const digestOf = (bytes: Buffer): Digest => sha256Digest(bytes);
