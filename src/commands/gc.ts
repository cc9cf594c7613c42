import type { Writable } from 'node:stream';
import { evictionPolicy, Evictor, type EvictedItem, type PassReport } from '../cache/evictor.js';
import { PinSet } from '../cache/pins.js';
import type { Config } from '../config/schema.js';
import { HostedContent } from '../hosted/hosted-content.js';
import { HostedGc } from '../hosted/hosted-gc.js';
import type { Logger } from '../lib/logger.js';
import { openStorage } from '../storage/open-storage.js';
import { formatBytes } from './format.js';

export interface GcOptions {
  readonly dryRun: boolean;
  readonly logger: Logger;
  /** Each item as it is removed (progress for a long pass). */
  readonly onRemoved?: (item: EvictedItem) => void;
  /** Now, for garbage collection's grace period (tests). */
  readonly clock?: () => number;
}

/**
 * `hubcache gc` against a stopped store: takes ownership of it like `serve` (refused with
 * `StoreOwnedError` while a server owns it: use `--server` then), prepares it, waits for its size
 * to be counted, runs one retention and eviction pass with the configured cap, floor and
 * retention, then closes it (flushing the access record) and gives ownership back. Pushed
 * (hosted) content and pinned images (`cache.pin`) are protected as in the server, by the same
 * `isProtected`: each pin is resolved from what the store holds (a pinned tag's digest is its tag
 * record; a pattern matches the stored tags), as the server does at start before it asks any
 * upstream — so no upstream is needed here.
 */
export async function gcStore(config: Readonly<Config>, opts: GcOptions): Promise<PassReport> {
  // Several replicas share the store: a pass that deletes must hold the cluster's maintenance lock
  // and respect pushes in progress on the replicas, which a replica does (docs/architecture.md).
  if (config.cluster && !opts.dryRun) throw new GcWithClusterError();
  const storage = await openStorage(config.storage, { logger: opts.logger });
  const ownership = await storage.acquireOwnership({ failFast: true });
  try {
    const ready = await storage.init();
    await ready.usage;
    // Pushed content is never evicted: know all of it before the pass, as the server does.
    const hosted = new HostedContent();
    await hosted.load(storage);
    // Pinned images are never evicted either: what the store holds for each pin, no upstream asked.
    const pins = new PinSet({
      pins: config.cache.pin,
      manifests: storage.manifests,
      metadata: storage.metadata,
      concurrency: config.cache.pinConcurrency,
      platforms: config.cache.pinPlatforms,
      maxTags: config.cache.pinMaxTags,
      logger: opts.logger,
    });
    await pins.loaded();
    // Hosted content nothing references after deletes goes too (hosted/hosted-gc.ts).
    const hostedGc = new HostedGc({ storage, content: hosted, gracePeriodMs: config.hosted.gcGracePeriod, logger: opts.logger, ...(opts.clock ? { clock: opts.clock } : {}) });
    const evictor = new Evictor({
      isProtected: (digest) => pins.protects(digest) || hosted.isProtected(digest),
      ...(config.hosted.repositories.length > 0 ? { collectGarbage: (o: Parameters<HostedGc['collect']>[0]) => hostedGc.collect(o) } : {}),
      storage,
      ...evictionPolicy(config),
      logger: opts.logger,
      ...(opts.onRemoved ? { onRemoved: opts.onRemoved } : {}),
    });
    return await evictor.run({ mode: 'gc', dryRun: opts.dryRun });
  } finally {
    await storage.close();
    await ownership.release();
  }
}

/** `hubcache gc --server URL`: POST /admin/gc on a running server's metrics listener. */
export async function gcServer(server: string, dryRun: boolean): Promise<PassReport> {
  const url = `${server.replace(/\/+$/, '')}/admin/gc${dryRun ? '?dryRun=1' : ''}`;
  const res = await fetch(url, { method: 'POST' });
  const text = await res.text();
  if (!res.ok) {
    const hint = res.status === 404 ? ' (is this the metrics listener, metrics.listen? the admin endpoint is not on the registry port)' : '';
    throw new Error(`${url}: ${res.status} ${text.slice(0, 200)}${hint}`);
  }
  return JSON.parse(text) as PassReport;
}

/** One line per item: `removed blob sha256:… 12.3 MB lru, last access 2026-…`. */
export function formatItem(item: EvictedItem, dryRun: boolean): string {
  const what = item.kind === 'tag' ? `tag ${item.upstream}/${item.repository}:${item.tag}` : `${item.kind} ${item.digest}`;
  const size = item.kind === 'tag' ? '' : ` ${formatBytes(item.bytes)}`;
  const last = item.lastAccess !== undefined ? `, last access ${new Date(item.lastAccess).toISOString()}` : '';
  return `${dryRun ? 'would remove' : 'removed'} ${what}${size} (${item.reason}${last})`;
}

/** The closing summary: counts by kind and the bytes freed. */
export function formatSummary(report: PassReport): string {
  const count = (k: EvictedItem['kind']) => report.removed.filter((r) => r.kind === k).length;
  const verb = report.dryRun ? 'would remove' : 'removed';
  const store = report.storeBytesAfter !== undefined ? `; store ${formatBytes(report.storeBytesAfter)}` : '';
  const errors = report.errors > 0 ? `; ${report.errors} deletions failed (see the log)` : '';
  return `gc: ${verb} ${count('blob')} blobs, ${count('manifest')} manifests, ${count('tag')} tags, ${formatBytes(report.freedBytes)}${store}${errors}`;
}

/** Writes a whole report (the `--server` case: the items arrive at once). */
export function writeReport(out: Writable, report: PassReport, opts: { json: boolean }): void {
  if (opts.json) {
    out.write(`${JSON.stringify(report)}\n`);
    return;
  }
  for (const item of report.removed) out.write(`${formatItem(item, report.dryRun)}\n`);
  out.write(`${formatSummary(report)}\n`);
}

/** `hubcache gc` (not a dry run) on a store with `cluster` set: it runs through a replica (`--server`). */
export class GcWithClusterError extends Error {
  constructor() {
    super('cluster is set: several replicas share this store; run the pass through one of them (hubcache gc --server http://<replica metrics address>), which takes the cluster\'s maintenance lock');
    this.name = 'GcWithClusterError';
  }
}
