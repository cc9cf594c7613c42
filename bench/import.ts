/**
 * `npx tsx bench/import.ts`: `hubcache import` (issue #14) throughput on a synthetic registry:2
 * store of BENCH_IMPORT_BLOBS blobs of BENCH_IMPORT_MIB MiB each (default 8 × 64 MiB) in
 * BENCH_IMPORT_REPOS repositories, against a reference in the same run on the same filesystem:
 * `cp -r` of the source's blobs directory, which copies the same bytes without hashing, fsyncing
 * or renaming them. Both sides alternate (A,B,A,B,…, BENCH_RUNS pairs, default 3) into fresh
 * directories; prints the medians and the median of the per-pair ratios, then the time of a second
 * import of the same store (everything present: the idempotent rerun).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { importIntoStore } from '../src/commands/import.js';
import { loadConfig } from '../src/config/load.js';
import { digestHex, sha256Digest, type Digest } from '../src/domain/digest.js';
import { MediaTypes } from '../src/domain/media-types.js';
import { silentLogger } from '../src/lib/logger.js';
import { seededBytes } from '../test/support/oci-fixtures.js';
import { fmt, mbps, median, MiB, ratios } from './stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const BLOBS = Number(process.env.BENCH_IMPORT_BLOBS ?? 8);
const BLOB_MIB = Number(process.env.BENCH_IMPORT_MIB ?? 64);
const REPOS = Number(process.env.BENCH_IMPORT_REPOS ?? 4);

function writeSource(root: string): number {
  const v2 = join(root, 'docker', 'registry', 'v2');
  const blob = (bytes: Buffer): Digest => {
    const d = sha256Digest(bytes);
    const dir = join(v2, 'blobs', 'sha256', digestHex(d).slice(0, 2), digestHex(d));
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'data'), bytes);
    return d;
  };
  const link = (repo: string, sub: string, d: Digest) => {
    const dir = join(v2, 'repositories', repo, sub, 'sha256', digestHex(d));
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'link'), d);
  };
  let bytes = 0;
  for (let r = 0; r < REPOS; r++) {
    const repo = `bench/app${r}`;
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', repo }));
    const layers = Array.from({ length: Math.ceil(BLOBS / REPOS) }, (_, i) => seededBytes(`import-${r}-${i}`, BLOB_MIB * MiB));
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaTypes.ociManifest,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest(config), size: config.length },
        layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256Digest(l), size: l.length })),
      }),
    );
    for (const b of [config, ...layers]) {
      link(repo, '_layers', blob(b));
      bytes += b.length;
    }
    const m = blob(manifest);
    link(repo, '_manifests/revisions', m);
    const tagDir = join(v2, 'repositories', repo, '_manifests', 'tags', 'v1', 'current');
    mkdirSync(tagDir, { recursive: true });
    writeFileSync(join(tagDir, 'link'), m);
  }
  return bytes;
}

const work = mkdtempSync(join(tmpdir(), 'hubcache-bench-import-'));
try {
  const source = join(work, 'source');
  const bytes = writeSource(source);
  execFileSync('sync');
  const importMs: number[] = [];
  const cpMs: number[] = [];
  let rerunMs = Number.NaN;
  for (let i = 0; i < RUNS; i++) {
    const store = join(work, `store-${i}`);
    const config = loadConfig({ env: {}, flags: { 'storage-path': store, 'hosted-repositories': 'bench/**' } });
    let t = performance.now();
    const report = await importIntoStore(config, source, { dryRun: false, logger: silentLogger() });
    importMs.push(performance.now() - t);
    if (report.problems.length > 0 || report.bytesCopied < bytes) throw new Error(`import incomplete: ${JSON.stringify(report)}`);
    if (i === 0) {
      t = performance.now();
      await importIntoStore(config, source, { dryRun: false, logger: silentLogger() });
      rerunMs = performance.now() - t;
    }
    rmSync(store, { recursive: true, force: true });
    const copy = join(work, `cp-${i}`);
    t = performance.now();
    execFileSync('cp', ['-r', join(source, 'docker', 'registry', 'v2', 'blobs'), copy]);
    execFileSync('sync');
    cpMs.push(performance.now() - t);
    rmSync(copy, { recursive: true, force: true });
  }
  const r = median(ratios(cpMs, importMs));
  console.log(`hubcache import, ${BLOBS} blobs × ${BLOB_MIB} MiB in ${REPOS} repositories (${fmt(bytes / MiB, 0)} MiB), ${RUNS} runs`);
  console.log(`  import      median ${fmt(median(importMs), 0)} ms  ${fmt(mbps(bytes, median(importMs)), 0)} MiB/s`);
  console.log(`  cp -r+sync  median ${fmt(median(cpMs), 0)} ms  ${fmt(mbps(bytes, median(cpMs)), 0)} MiB/s`);
  console.log(`  import throughput ÷ cp -r: median of pair ratios ${fmt(r)}`);
  console.log(`  rerun (everything present): ${fmt(rerunMs, 0)} ms`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
