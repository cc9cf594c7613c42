/**
 * Deterministic test images: real gzip'd tar layers, image configs and manifests in the Docker
 * schema2 and OCI formats, single-platform or two-platform indexes. Same seed → same bytes → same
 * digests on every run and machine with the same zlib.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream, createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants as zlibConstants, createGzip } from 'node:zlib';

export const MediaTypes = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

export type ImageFormat = 'docker' | 'oci';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** A blob's bytes, either in memory or in a file (big layers). */
export interface TestBlob {
  readonly digest: string;
  readonly size: number;
  readonly mediaType: string;
  /** Set for in-memory blobs. */
  readonly data?: Buffer;
  /** Set for blobs written to disk. */
  readonly path?: string;
  /** A fresh stream of the bytes (optionally a byte range, inclusive `end`). */
  stream(range?: { start: number; end: number }): Readable;
  /** All bytes (reads the file for disk blobs: avoid for big ones). */
  bytes(): Buffer;
}

/** A manifest or index plus everything it references. */
export interface TestImage {
  /** 'docker' | 'oci' for single-platform manifests; 'docker-list' | 'oci-index' for indexes. */
  readonly kind: 'docker' | 'oci' | 'docker-list' | 'oci-index';
  readonly mediaType: string;
  /** The exact manifest bytes to push and expect back. */
  readonly manifest: Buffer;
  /** sha256 of `manifest`. */
  readonly digest: string;
  readonly size: number;
  /** Every blob (configs + layers) reachable from this manifest, including the children's. */
  readonly blobs: Map<string, TestBlob>;
  /** The config blob (single-platform only). */
  readonly config?: TestBlob;
  /** Layer blobs in order (single-platform only). */
  readonly layers: TestBlob[];
  /** Platform manifests of an index, in index order. */
  readonly children: TestImage[];
  readonly platform?: Platform;
  /** Removes temp files of disk blobs this image created (no-op otherwise). */
  dispose(): void;
}

export interface ImageOptions {
  /** Seed of everything random; default 'hubcache'. Different seeds give different digests. */
  seed?: string;
  /** Number of layers; default 2. */
  layers?: number;
  /** Bytes of file content per layer (before tar/gzip); default 2 MiB. */
  layerSize?: number;
  /** Regular files per layer (content split between them); 1 or 2, default 2. */
  filesPerLayer?: 1 | 2;
  /** Platform of a single-platform image; default linux/amd64. */
  platform?: Platform;
  /**
   * Layers whose content is larger than this many bytes are written to files instead of memory.
   * Default 16 MiB.
   */
  inMemoryMaxBytes?: number;
  /** Directory for disk blobs; default a new temp dir removed by dispose(). */
  dir?: string;
}

export interface IndexOptions extends Omit<ImageOptions, 'platform'> {
  /** Platforms, each its own manifest with distinct layers; default linux/amd64 and linux/arm64/v8. */
  platforms?: Platform[];
}

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Deterministic pseudo-random bytes: AES-256-CTR keystream keyed by sha256(seed). Fast (GB/s), unlike a JS PRNG loop. */
export function seededBytes(seed: string, length: number): Buffer {
  return seededCipher(seed).update(Buffer.alloc(length));
}

function seededCipher(seed: string) {
  const key = createHash('sha256').update(`key:${seed}`).digest();
  const iv = createHash('sha256').update(`iv:${seed}`).digest().subarray(0, 16);
  return createCipheriv('aes-256-ctr', key, iv);
}

/** A Readable of `length` deterministic bytes, produced in 1 MiB chunks. */
function seededStream(seed: string, length: number): Readable {
  const cipher = seededCipher(seed);
  const zero = Buffer.alloc(1024 * 1024);
  let left = length;
  return new Readable({
    read() {
      if (left === 0) return void this.push(null);
      const n = Math.min(left, zero.length);
      left -= n;
      this.push(cipher.update(zero.subarray(0, n)));
    },
  });
}

/** A ustar header (POSIX 1003.1-1988) for a regular file or directory. Hand-written: no tar dependency. */
export function tarHeader(name: string, size: number, type: 'file' | 'dir'): Buffer {
  const h = Buffer.alloc(512);
  if (Buffer.byteLength(name) > 100) throw new Error(`tar name too long: ${name}`);
  const field = (off: number, len: number, value: string) => h.write(value, off, len, 'ascii');
  const octal = (off: number, len: number, n: number) => field(off, len, n.toString(8).padStart(len - 1, '0') + '\0');
  field(0, 100, name);
  octal(100, 8, type === 'dir' ? 0o755 : 0o644);
  octal(108, 8, 0); // uid
  octal(116, 8, 0); // gid
  octal(124, 12, type === 'dir' ? 0 : size);
  octal(136, 12, 1704067200); // mtime 2024-01-01: fixed, so digests are stable
  field(148, 8, '        '); // checksum is computed with its own field as spaces
  field(156, 1, type === 'dir' ? '5' : '0');
  field(257, 6, 'ustar\0');
  field(263, 2, '00');
  field(265, 32, 'root');
  field(297, 32, 'root');
  let sum = 0;
  for (const b of h) sum += b;
  field(148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  return h;
}

/** Tar stream of a directory and 1–2 regular files with seeded content, ending with two zero blocks. */
function layerTarStream(seed: string, contentSize: number, files: number, dirName: string): Readable {
  const sizes = files === 1 ? [contentSize] : [Math.ceil(contentSize / 2), Math.floor(contentSize / 2)];
  async function* gen() {
    yield tarHeader(`${dirName}/`, 0, 'dir');
    for (let i = 0; i < sizes.length; i++) {
      const size = sizes[i]!;
      yield tarHeader(`${dirName}/file-${i}.bin`, size, 'file');
      for await (const chunk of seededStream(`${seed}/file-${i}`, size)) yield chunk as Buffer;
      if (size % 512) yield Buffer.alloc(512 - (size % 512));
    }
    yield Buffer.alloc(1024);
  }
  return Readable.from(gen(), { objectMode: false });
}

function memoryBlob(data: Buffer, mediaType: string): TestBlob {
  return {
    digest: sha256(data),
    size: data.length,
    mediaType,
    data,
    stream: (range) => Readable.from([range ? data.subarray(range.start, range.end + 1) : data]),
    bytes: () => data,
  };
}

function fileBlob(path: string, digest: string, size: number, mediaType: string): TestBlob {
  return {
    digest,
    size,
    mediaType,
    path,
    stream: (range) => createReadStream(path, range ? { start: range.start, end: range.end } : {}),
    bytes: () => readFileSync(path),
  };
}

/**
 * One gzip'd tar layer. Returns the blob and the diff_id (sha256 of the uncompressed tar).
 * Hashes are computed while streaming, so a big layer never sits in memory when `toDir` is set.
 */
export async function makeLayer(opts: {
  seed: string;
  size: number;
  files?: 1 | 2;
  mediaType: string;
  /** Write to a file in this directory instead of memory. */
  toDir?: string;
}): Promise<{ blob: TestBlob; diffId: string }> {
  const tarHash = createHash('sha256');
  const gzHash = createHash('sha256');
  const chunks: Buffer[] = [];
  let gzSize = 0;
  const dirName = `hubcache-${createHash('sha256').update(opts.seed).digest('hex').slice(0, 12)}`;
  // Hash on the way through, so a big layer never has to sit in memory.
  const tap = (fn: (c: Buffer) => void) =>
    new Transform({
      transform(c: Buffer, _enc, cb) {
        fn(c);
        cb(null, c);
      },
    });
  let path: string | undefined;
  if (opts.toDir) path = join(opts.toDir, `layer-${createHash('sha256').update(opts.seed).digest('hex').slice(0, 16)}.tar.gz`);
  const sink = path
    ? createWriteStream(path)
    : new Writable({
        write(c: Buffer, _enc, cb) {
          chunks.push(c);
          cb();
        },
      });
  await pipeline(
    layerTarStream(opts.seed, opts.size, opts.files ?? 2, dirName),
    tap((c) => tarHash.update(c)),
    // Level 1, Huffman only: the content is random, so LZ77 matching finds nothing and only costs
    // time (3.5× slower here). The output is still ordinary gzip, and deterministic.
    createGzip({ level: 1, strategy: zlibConstants.Z_HUFFMAN_ONLY, chunkSize: 256 * 1024 }),
    tap((c) => {
      gzHash.update(c);
      gzSize += c.length;
    }),
    sink,
  );
  const diffId = `sha256:${tarHash.digest('hex')}`;
  const digest = `sha256:${gzHash.digest('hex')}`;
  const blob = path ? fileBlob(path, digest, gzSize, opts.mediaType) : memoryBlob(Buffer.concat(chunks), opts.mediaType);
  return { blob, diffId };
}

/**
 * JSON the way docker writes manifests: 3-space indentation. Deliberately not compact, so a cache
 * that re-serialises JSON (and so changes the digest) is caught.
 */
function manifestBytes(obj: unknown): Buffer {
  return Buffer.from(JSON.stringify(obj, null, 3));
}

const platformKey = (p: Platform) => `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;

/** Builds a single-platform image in the Docker schema2 or OCI format. */
export async function makeImage(format: ImageFormat, opts: ImageOptions = {}): Promise<TestImage> {
  const seed = opts.seed ?? 'hubcache';
  const platform = opts.platform ?? { os: 'linux', architecture: 'amd64' };
  const layerSize = opts.layerSize ?? 2 * 1024 * 1024;
  const nLayers = opts.layers ?? 2;
  const onDisk = layerSize > (opts.inMemoryMaxBytes ?? 16 * 1024 * 1024);
  let ownDir: string | undefined;
  const dir = onDisk ? (opts.dir ?? (ownDir = mkdtempSync(join(tmpdir(), 'hubcache-img-')))) : undefined;
  const docker = format === 'docker';

  const layers: TestBlob[] = [];
  const diffIds: string[] = [];
  for (let i = 0; i < nLayers; i++) {
    const { blob, diffId } = await makeLayer({
      // The format and platform are part of the seed so every image has its own layers.
      seed: `${seed}/${format}/${platformKey(platform)}/layer-${i}`,
      size: layerSize,
      files: opts.filesPerLayer ?? 2,
      mediaType: docker ? MediaTypes.dockerLayer : MediaTypes.ociLayer,
      toDir: dir,
    });
    layers.push(blob);
    diffIds.push(diffId);
  }
  const configJson = {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    created: '2024-01-01T00:00:00Z',
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['/bin/sh', '-c', `echo ${seed}`],
      Labels: { 'org.hubcache.test.seed': seed },
    },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: layers.map((_, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `hubcache test layer ${i} (${seed})` })),
  };
  const config = memoryBlob(Buffer.from(JSON.stringify(configJson)), docker ? MediaTypes.dockerConfig : MediaTypes.ociConfig);
  const desc = (b: TestBlob) => ({ mediaType: b.mediaType, size: b.size, digest: b.digest });
  const mediaType = docker ? MediaTypes.dockerManifest : MediaTypes.ociManifest;
  const manifest = manifestBytes({
    schemaVersion: 2,
    mediaType,
    config: desc(config),
    layers: layers.map(desc),
  });
  const blobs = new Map<string, TestBlob>([[config.digest, config], ...layers.map((l) => [l.digest, l] as [string, TestBlob])]);
  return {
    kind: format,
    mediaType,
    manifest,
    digest: sha256(manifest),
    size: manifest.length,
    blobs,
    config,
    layers,
    children: [],
    platform,
    dispose: () => {
      if (ownDir) rmSync(ownDir, { recursive: true, force: true });
    },
  };
}

/** Builds a multi-platform image: a Docker manifest list ('docker') or an OCI index ('oci') over one manifest per platform. */
export async function makeIndex(format: ImageFormat, opts: IndexOptions = {}): Promise<TestImage> {
  const platforms = opts.platforms ?? [
    { os: 'linux', architecture: 'amd64' },
    { os: 'linux', architecture: 'arm64', variant: 'v8' },
  ];
  const children: TestImage[] = [];
  for (const platform of platforms) children.push(await makeImage(format, { ...opts, platform }));
  const mediaType = format === 'docker' ? MediaTypes.dockerManifestList : MediaTypes.ociIndex;
  const manifest = manifestBytes({
    schemaVersion: 2,
    mediaType,
    manifests: children.map((c) => ({ mediaType: c.mediaType, size: c.size, digest: c.digest, platform: c.platform })),
  });
  const blobs = new Map<string, TestBlob>();
  for (const c of children) for (const [d, b] of c.blobs) blobs.set(d, b);
  return {
    kind: format === 'docker' ? 'docker-list' : 'oci-index',
    mediaType,
    manifest,
    digest: sha256(manifest),
    size: manifest.length,
    blobs,
    layers: [],
    children,
    dispose: () => children.forEach((c) => c.dispose()),
  };
}

/** sha256 digest string of bytes. */
export function digestOf(b: Buffer | Uint8Array): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}
