import { Agent, request } from 'undici';
import cliProgress from 'cli-progress';
import { isIndexMediaType, UPSTREAM_MANIFEST_ACCEPT } from '../domain/media-types.js';
import { formatBytes } from './format.js';
import { mirrorPath, parseImageRef } from './image-ref.js';

export interface PrefetchOptions {
  /** A running hubcache (`http://127.0.0.1:5000`). */
  readonly server: string;
  readonly images: readonly string[];
  /** Only these platforms of multi-platform images (`linux/amd64`); all when empty. */
  readonly platforms?: readonly string[];
  readonly concurrency?: number;
  /** Progress bars on a terminal; plain lines otherwise. */
  readonly progress?: boolean;
  readonly out?: NodeJS.WritableStream;
}

export interface PrefetchResult {
  readonly image: string;
  readonly ok: boolean;
  readonly blobs: number;
  readonly bytes: number;
  readonly error?: string;
}

interface Descriptor {
  digest: string;
  size: number;
  mediaType?: string;
  platform?: { os?: string; architecture?: string; variant?: string };
}

/**
 * Warms the cache by pulling images through a hubcache instance exactly as a client would:
 * manifests (every platform of an index, or the chosen ones), the config and every layer.
 */
export async function prefetch(opts: PrefetchOptions): Promise<PrefetchResult[]> {
  const agent = new Agent({ connections: opts.concurrency ?? 4 });
  const out = opts.out ?? process.stderr;
  // The bars count bytes (whole MB left an image under 0.5 MB at 0% for good); the text shows them
  // formatted. The bar is 30 columns, not 40, so that the image name still fits on an 80-column line.
  const bars = opts.progress
    ? new cliProgress.MultiBar(
        { format: ' {bar} {percentage}% | {transferred}/{size} | {image}', barsize: 30, stream: out, hideCursor: true, clearOnComplete: false },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  const results: PrefetchResult[] = [];
  try {
    for (const image of opts.images) {
      // The size is known once the manifests are read.
      const bar = bars?.create(1, 0, { image, transferred: formatBytes(0), size: '?' });
      try {
        const ref = parseImageRef(image);
        const base = `${opts.server.replace(/\/$/, '')}${mirrorPath(ref)}`;
        const blobs = new Map<string, number>();
        const visit = async (reference: string): Promise<void> => {
          const res = await request(`${base}/manifests/${reference}`, { dispatcher: agent, headers: { accept: UPSTREAM_MANIFEST_ACCEPT } });
          const text = await res.body.text();
          if (res.statusCode !== 200) throw new Error(`manifest ${reference}: HTTP ${res.statusCode} ${text.slice(0, 300)}`);
          const mediaType = String(res.headers['content-type'] ?? '');
          const doc = JSON.parse(text) as { manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
          if (isIndexMediaType(mediaType) || Array.isArray(doc.manifests)) {
            for (const child of doc.manifests ?? []) {
              const p = child.platform;
              const name = p ? `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}` : '';
              if (opts.platforms?.length && !opts.platforms.some((want) => name === want || name.startsWith(`${want}/`))) continue;
              await visit(child.digest);
            }
            return;
          }
          for (const d of [doc.config, ...(doc.layers ?? [])]) if (d) blobs.set(d.digest, d.size);
        };
        await visit(ref.reference);
        const total = [...blobs.values()].reduce((a, b) => a + b, 0);
        bar?.setTotal(total);
        bar?.update(0, { size: formatBytes(total) });
        let done = 0;
        for (const [digest] of blobs) {
          const res = await request(`${base}/blobs/${digest}`, { dispatcher: agent });
          if (res.statusCode !== 200) throw new Error(`blob ${digest}: HTTP ${res.statusCode} ${(await res.body.text()).slice(0, 300)}`);
          for await (const chunk of res.body) {
            done += (chunk as Buffer).length;
            bar?.update(done, { transferred: formatBytes(done) });
          }
        }
        results.push({ image, ok: true, blobs: blobs.size, bytes: total });
        if (!bars) out.write(`prefetched ${image}: ${blobs.size} blobs, ${formatBytes(total)}\n`);
      } catch (err) {
        results.push({ image, ok: false, blobs: 0, bytes: 0, error: (err as Error).message });
        if (!bars) out.write(`failed ${image}: ${(err as Error).message}\n`);
      }
      bar?.stop();
    }
  } finally {
    bars?.stop();
    await agent.close();
  }
  return results;
}
