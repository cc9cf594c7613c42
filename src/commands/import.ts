import { createReadStream } from 'node:fs';
import cliProgress from 'cli-progress';
import { readFile } from 'node:fs/promises';
import { sha256Digest, type Digest } from '../domain/digest.js';
import { RegistryError } from '../domain/errors.js';
import { manifestMediaType } from '../domain/manifest.js';
import { isIndexMediaType } from '../domain/media-types.js';
import { HOSTED_UPSTREAM, type RepoKey, type RepoName } from '../domain/reference.js';
import { matchesAny } from '../domain/repo-pattern.js';
import { pushedManifestRefs } from '../domain/manifest-refs.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { ManifestStore, MetadataStore } from '../storage/manifest-store.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../lib/logger.js';
import { openStorage } from '../storage/open-storage.js';
import { distributionRoot, DistributionLayout, type DistributionRepository, type LayoutProblem } from './distribution-layout.js';
import { formatBytes } from './format.js';

/**
 * `hubcache import DIR` (issue #14, "Migration from registry:2"): a distribution filesystem store
 * becomes hosted content (`repositories/_hosted/…`, docs/storage-layout.md).
 *
 * Per repository, in the order that leaves nothing half-visible if the import is killed at any
 * point: every blob (streamed through the store's verifying writer: a blob whose bytes don't hash
 * to its digest is reported and left out), and its link to the repository; then the manifests
 * whose blobs (and, for an index, child manifests) are all there, byte-exact, children before
 * their indexes; then the tags naming imported manifests. Every step is idempotent (a blob or
 * manifest the store has is skipped by digest, a link or tag that exists is left as it is), so a
 * rerun imports only what is missing: that is what makes a killed import resumable.
 */
export interface ImportStores {
  readonly blobs: BlobStore;
  readonly manifests: ManifestStore;
  readonly metadata: MetadataStore;
}

/** What an import (or a dry run) will do, known before it starts: the progress bar's totals. */
export interface ImportPlan {
  readonly repositories: readonly DistributionRepository[];
  /** Blobs (config, layers) to copy: not in the store yet, and their bytes. */
  readonly blobsToCopy: number;
  readonly bytesToCopy: number;
  /** Blobs, manifests and tags in the selected repositories (the items of the progress bar). */
  readonly items: number;
}

export interface ImportReport {
  readonly dryRun: boolean;
  readonly repositories: number;
  /** Blobs copied into the store, and their bytes. */
  readonly blobsCopied: number;
  readonly bytesCopied: number;
  /** Blobs the store had already (skipped by digest). */
  readonly blobsPresent: number;
  /** Manifests newly linked to a hosted repository / linked already. */
  readonly manifestsImported: number;
  readonly manifestsPresent: number;
  /** Tags set / already naming the same manifest. */
  readonly tagsImported: number;
  readonly tagsPresent: number;
  /** What was left out, and why. */
  readonly problems: readonly LayoutProblem[];
  readonly ms: number;
}

export interface ImportProgress {
  /** Bytes of blob data copied (as they are read). */
  bytes(n: number): void;
  /** One blob, manifest or tag done (imported, present or left out). */
  item(repository: string): void;
}

export interface ImportOptions {
  /** `--repository` patterns: only matching source repositories (all when empty). */
  readonly only?: readonly string[];
  /** `hosted.repositories`' patterns: every imported name must match one. */
  readonly hostedPatterns: readonly string[];
  readonly dryRun?: boolean;
  /** `validatedAt` of the imported tags (their push time, as hubcache records it). */
  readonly clock?: () => number;
  readonly progress?: ImportProgress;
}

/** Source repositories whose names are outside `hosted.repositories`: the import refuses to start. */
export class NotHostedError extends Error {
  readonly repositories: readonly string[];
  constructor(repositories: readonly string[]) {
    const list = repositories.slice(0, 10).join(', ') + (repositories.length > 10 ? `, … (${repositories.length} in all)` : '');
    super(
      `${repositories.length} repositor${repositories.length === 1 ? 'y' : 'ies'} of the source ${repositories.length === 1 ? 'is' : 'are'} not hosted (not matched by hosted.repositories): ${list}. ` +
        'Add patterns for them to hosted.repositories (HUBCACHE_HOSTED_REPOSITORIES, --hosted-repositories), or import a subset with --repository PATTERN.',
    );
    this.repositories = repositories;
  }
}

/**
 * Walks the source and the store: which repositories are selected, what is to be copied. Throws
 * `NotHostedError` when a selected repository is outside `hosted.repositories`, and when nothing
 * at all is hosted.
 */
export async function planImport(layout: DistributionLayout, stores: ImportStores, opts: ImportOptions, problems: LayoutProblem[]): Promise<ImportPlan> {
  const selected = opts.only && opts.only.length > 0 ? matchesAny(opts.only) : () => true;
  const hosted = matchesAny(opts.hostedPatterns);
  const repositories: DistributionRepository[] = [];
  for await (const repo of layout.repositories(problems)) if (selected(repo.name)) repositories.push(repo);
  const outside = repositories.filter((r) => !hosted(r.name)).map((r) => r.name);
  if (outside.length > 0) throw new NotHostedError(outside);
  const toCopy = new Map<Digest, number>();
  let items = 0;
  for (const repo of repositories) {
    items += repo.layers.length + repo.manifests.length + repo.tags.length;
    for (const d of repo.layers) {
      if (toCopy.has(d) || (await stores.blobs.stat(d))) continue;
      toCopy.set(d, (await layout.blobSize(d)) ?? 0);
    }
  }
  let bytes = 0;
  for (const n of toCopy.values()) bytes += n;
  return { repositories, blobsToCopy: toCopy.size, bytesToCopy: bytes, items };
}

/** Imports the planned repositories (see the module comment); a dry run reports the plan and writes nothing. */
export async function importDistribution(layout: DistributionLayout, stores: ImportStores, plan: ImportPlan, opts: ImportOptions, problems: LayoutProblem[]): Promise<ImportReport> {
  const t0 = performance.now();
  const clock = opts.clock ?? Date.now;
  const counts = { blobsCopied: 0, bytesCopied: 0, blobsPresent: 0, manifestsImported: 0, manifestsPresent: 0, tagsImported: 0, tagsPresent: 0 };
  const report = (): ImportReport => ({ dryRun: opts.dryRun === true, repositories: plan.repositories.length, ...counts, problems, ms: Math.round(performance.now() - t0) });
  if (opts.dryRun) {
    counts.blobsCopied = plan.blobsToCopy;
    counts.bytesCopied = plan.bytesToCopy;
    return report();
  }
  // Blobs found corrupt in this run: every repository linking them leaves them (and what needs them) out.
  const corrupt = new Set<Digest>();
  for (const repo of plan.repositories) {
    const key: RepoKey = { upstream: HOSTED_UPSTREAM, repo: repo.name as RepoName };
    const tick = () => opts.progress?.item(repo.name);

    // 1. Blobs, each linked to the repository once it is in the store.
    const linked = new Set<Digest>();
    for (const digest of repo.layers) {
      try {
        if (corrupt.has(digest)) continue;
        if (await stores.blobs.stat(digest)) counts.blobsPresent++;
        else if (await copyBlob(layout, stores.blobs, digest, opts.progress)) {
          counts.blobsCopied++;
          counts.bytesCopied += (await stores.blobs.stat(digest))?.size ?? 0;
        } else {
          corrupt.add(digest);
          problems.push({ kind: 'corrupt-blob', repository: repo.name, what: digest, message: `blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data does not hash to its digest: not imported` });
          continue;
        }
        if (!(await stores.metadata.hasBlob(key, digest))) await stores.metadata.linkBlob(key, digest);
        linked.add(digest);
      } finally {
        tick();
      }
    }

    // 2. Manifests whose references are all in the repository; an index after its children.
    const pending = new Map<Digest, { body: Buffer; mediaType: string; blobs: readonly Digest[]; children: readonly Digest[] }>();
    for (const digest of repo.manifests) {
      const body = await readFile(layout.blobPath(digest));
      if (sha256Digest(body) !== digest) {
        problems.push({ kind: 'corrupt-blob', repository: repo.name, what: digest, message: 'the manifest data does not hash to its digest: not imported' });
        tick();
        continue;
      }
      const verdict = manifestMediaType(body, undefined);
      let refs;
      try {
        if (!verdict.ok) throw new RegistryError('MANIFEST_INVALID', undefined, { message: verdict.reason });
        refs = pushedManifestRefs(body, verdict.mediaType);
      } catch (err) {
        problems.push({ kind: 'invalid-manifest', repository: repo.name, what: digest, message: `not a manifest hubcache accepts: ${(err as Error).message}` });
        tick();
        continue;
      }
      // Non-distributable layers (with `urls`) live elsewhere, as a push of this manifest needn't have them.
      const external = new Set(refs.external);
      pending.set(digest, { body, mediaType: verdict.mediaType, blobs: refs.blobs.filter((b) => !external.has(b)), children: refs.manifests.map((c) => c.digest) });
    }
    const imported = new Set<Digest>();
    for (let progress = true; progress && pending.size > 0; ) {
      progress = false;
      for (const [digest, m] of [...pending].sort(([, a], [, b]) => Number(isIndexMediaType(a.mediaType)) - Number(isIndexMediaType(b.mediaType)))) {
        if (!m.children.every((c) => imported.has(c))) continue;
        pending.delete(digest);
        progress = true;
        try {
          const missing = m.blobs.filter((b) => !linked.has(b));
          if (missing.length > 0) {
            problems.push({ kind: 'incomplete-manifest', repository: repo.name, what: digest, message: `references ${missing.length} blob(s) missing from the source or corrupt (${missing[0]}${missing.length > 1 ? ', …' : ''}): not imported` });
            continue;
          }
          if (await stores.metadata.hasManifest(key, digest)) {
            counts.manifestsPresent++;
          } else {
            await stores.manifests.put(m.body, m.mediaType, digest);
            await stores.metadata.linkManifest(key, digest);
            counts.manifestsImported++;
          }
          imported.add(digest);
        } finally {
          tick();
        }
      }
    }
    for (const [digest] of pending) {
      problems.push({ kind: 'incomplete-manifest', repository: repo.name, what: digest, message: 'an index whose child manifests are missing from the source or not importable: not imported' });
      tick();
    }

    // 3. Tags naming imported manifests; a tag the hosted repository has already (pushed since) is kept.
    for (const { tag, digest } of repo.tags) {
      try {
        if (!imported.has(digest)) {
          problems.push({ kind: 'incomplete-manifest', repository: repo.name, what: `${repo.name}:${tag}`, message: `names ${digest}, which was not imported` });
          continue;
        }
        const existing = await stores.metadata.getTag(key, tag);
        if (existing?.digest === digest) {
          counts.tagsPresent++;
          continue;
        }
        if (existing) {
          problems.push({ kind: 'tag-conflict', repository: repo.name, what: `${repo.name}:${tag}`, message: `already names ${existing.digest} in hubcache (the source says ${digest}): kept` });
          continue;
        }
        const stored = await stores.manifests.get(digest);
        if (!stored) throw new Error(`manifest ${digest} vanished from the store during the import`);
        await stores.metadata.setTag(key, tag, { ...stored.descriptor, validatedAt: clock() });
        counts.tagsImported++;
      } finally {
        tick();
      }
    }
  }
  return report();
}

/** Streams the blob's data into the store; `false` when it doesn't hash to its digest (nothing is stored). */
async function copyBlob(layout: DistributionLayout, blobs: BlobStore, digest: Digest, progress?: ImportProgress): Promise<boolean> {
  const writer = await blobs.create();
  try {
    for await (const chunk of createReadStream(layout.blobPath(digest), { highWaterMark: 1024 * 1024 })) {
      await writer.write(chunk as Buffer);
      progress?.bytes((chunk as Buffer).length);
    }
    await writer.commit(digest);
    return true;
  } catch (err) {
    if (err instanceof RegistryError && (err.code === 'DIGEST_INVALID' || err.code === 'SIZE_INVALID')) return false;
    throw err;
  } finally {
    await writer.abort();
  }
}

export interface ImportCommandOptions {
  readonly only?: readonly string[];
  readonly dryRun: boolean;
  readonly logger: Logger;
  /** A terminal for the progress bar (bytes and items); none when not a TTY. */
  readonly progressOut?: NodeJS.WritableStream;
}

/**
 * `hubcache import DIR` against the configured store: offline. It takes ownership of the store
 * like `serve` (a running server owns it: `StoreOwnedError`, and nothing is written), prepares
 * it, imports, closes it. A dry run only reads, like `hubcache ls`: no ownership, no writes.
 */
export async function importIntoStore(config: Readonly<Config>, dir: string, opts: ImportCommandOptions): Promise<ImportReport> {
  const layout = new DistributionLayout(distributionRoot(dir));
  const storage = await openStorage(config.storage, { logger: opts.logger });
  const problems: LayoutProblem[] = [];
  const importOpts: ImportOptions = { hostedPatterns: config.hosted.repositories.map((r) => r.pattern), dryRun: opts.dryRun, ...(opts.only ? { only: opts.only } : {}) };
  // Planned before the store is touched (reads only): a refusal (names not hosted) changes nothing.
  const plan = await planImport(layout, storage, importOpts, problems);
  const ownership = opts.dryRun ? undefined : await storage.acquireOwnership({ failFast: true });
  let bar: cliProgress.SingleBar | undefined;
  try {
    if (!opts.dryRun) await storage.init();
    if (opts.progressOut && !opts.dryRun) {
      // prefetch's style: a 30-column bar counting bytes, the formatted bytes and the items beside it.
      bar = new cliProgress.SingleBar(
        { format: ' {bar} {percentage}% | {transferred}/{size} | {done}/{items} items | {repository}', barsize: 30, stream: opts.progressOut, hideCursor: true, clearOnComplete: false },
        cliProgress.Presets.shades_classic,
      );
      bar.start(Math.max(1, plan.bytesToCopy), 0, { transferred: formatBytes(0), size: formatBytes(plan.bytesToCopy), done: 0, items: plan.items, repository: '' });
    }
    let bytes = 0;
    let done = 0;
    const progress: ImportProgress | undefined = bar && {
      bytes: (n) => {
        bytes += n;
        bar!.update(bytes, { transferred: formatBytes(bytes) });
      },
      item: (repository) => bar!.update(bytes, { done: ++done, repository }),
    };
    return await importDistribution(layout, storage, plan, { ...importOpts, ...(progress ? { progress } : {}) }, problems);
  } finally {
    bar?.stop();
    await storage.close();
    await ownership?.release();
  }
}

/** The closing summary line. */
export function formatImportSummary(r: ImportReport): string {
  const verb = r.dryRun ? 'would import' : 'imported';
  const present = r.dryRun ? '' : `; already present: ${r.blobsPresent} blobs, ${r.manifestsPresent} manifests, ${r.tagsPresent} tags`;
  const problems = r.problems.length > 0 ? `; ${r.problems.length} problem(s), left out` : '';
  const manifests = r.dryRun ? '' : `, ${r.manifestsImported} manifests, ${r.tagsImported} tags`;
  return `import: ${verb} ${r.repositories} repositories: ${r.blobsCopied} blobs (${formatBytes(r.bytesCopied)})${manifests}${present}${problems}`;
}

/** One line per problem: `import: left out myorg/app: sha256:…: …`. */
export function formatProblem(p: LayoutProblem): string {
  return `import: ${p.kind}${p.repository ? ` in ${p.repository}` : ''}: ${p.what}: ${p.message}`;
}
