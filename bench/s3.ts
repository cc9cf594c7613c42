/**
 * The S3 store (issue #15) against the filesystem store, on one machine, in one process (the
 * storage layer, without HTTP: what a replica's blob store costs per warm GET):
 *
 *   1. warm 1 GiB blob read from the bucket (a real Ceph RGW, test/support/rgw.ts: memstore, on
 *      loopback) ÷ the same blob read from the filesystem store; and read through the hot cache
 *      (storage.hotCache, a local directory in front of the bucket) ÷ the filesystem store. The
 *      sides alternate (fs, s3, hot, fs, s3, hot, …); medians of the per-round ratios. A fourth side,
 *      curl reading the object straight from RGW (anonymous GET allowed by a bucket policy), tells
 *      RGW's own speed here from our reader's: s3 ÷ RGW direct.
 *   2. RSS during an S3 fill of 1 GiB (multipart, partSize × partsInFlight in flight): the growth of
 *      this process's RSS over its baseline must stay near partSize × (partsInFlight + 1), not the
 *      blob's size.
 *   3. cold fill of a BENCH_S3_FILL_MIB blob into the bucket: a writer created for its digest (what a
 *      fill does: its multipart upload completed on the blob's key) ÷ one that learns it at commit
 *      (what a push does, and every fill did before: upload under uploads/, then a server-side copy
 *      and a delete). Alternating, the blob deleted before each fill; median of the per-pair ratios.
 *
 * Bodies are read the way the server sends them: `writeTo` where the body offers it (the
 * filesystem's fast path), else as a stream, into a sink that discards.
 *
 *   tsx bench/s3.ts            (or BENCH_ONLY=s3 npm run bench)   env: BENCH_RUNS (5), BENCH_S3_MIB (1024), BENCH_S3_FILL_MIB (256)
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { PutBucketPolicyCommand } from '@aws-sdk/client-s3';
import { parseDigest, type Digest } from '../src/domain/digest.js';
import { silentLogger } from '../src/lib/logger.js';
import { isDirectBody, type BlobStore } from '../src/storage/blob-store.js';
import { FsBlobStore } from '../src/storage/fs/fs-blob-store.js';
import type { HotCachedBlobStore } from '../src/storage/s3/hot-cache.js';
import { S3Storage } from '../src/storage/s3/s3-storage.js';
import { startRgw } from '../test/support/rgw.js';
import type { EvictionRow } from './eviction.js';
import { fmt, max, mbps, median, MiB, ratios } from './stats.js';

const PART = 16 * MiB;
const IN_FLIGHT = 4;

/** Block `i` of the synthetic blob: 1 MiB of a fixed pattern with `i` in its first bytes. */
function block(base: Buffer, i: number): Buffer {
  base.writeUInt32LE(i, 0);
  return base;
}

async function fill(store: BlobStore, size: number, digest: Digest, onBlock?: () => void, hint = true): Promise<void> {
  const base = Buffer.alloc(MiB);
  for (let i = 4; i < MiB; i += 4) base.writeUInt32LE((i * 2654435761) >>> 0, i);
  const w = await store.create(hint ? { digest } : {});
  try {
    for (let i = 0; i < size / MiB; i++) {
      await w.write(block(base, i));
      onBlock?.();
    }
    await w.commit(digest, size);
  } catch (err) {
    await w.abort();
    throw err;
  }
}

function digestOf(size: number): Digest {
  const base = Buffer.alloc(MiB);
  for (let i = 4; i < MiB; i += 4) base.writeUInt32LE((i * 2654435761) >>> 0, i);
  const h = createHash('sha256');
  for (let i = 0; i < size / MiB; i++) h.update(block(base, i));
  return `sha256:${h.digest('hex')}` as Digest;
}

/** ms to read the whole blob into a discarding sink. */
async function readMs(store: BlobStore, digest: Digest, size: number): Promise<number> {
  const t0 = performance.now();
  const body: Readable = await store.open(digest);
  let n = 0;
  const sink = new Writable({
    highWaterMark: 4 * MiB,
    write(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      cb();
    },
  });
  if (isDirectBody(body)) await body.writeTo(sink);
  else for await (const chunk of body as AsyncIterable<Buffer>) n += chunk.length;
  const ms = performance.now() - t0;
  if (n !== size) throw new Error(`read ${n} bytes of ${size}`);
  return ms;
}

export async function benchS3(log: (msg: string) => void): Promise<{ rows: EvictionRow[]; results: Record<string, unknown> }> {
  const runs = Number(process.env.BENCH_RUNS ?? 5);
  const size = Number(process.env.BENCH_S3_MIB ?? 1024) * MiB;
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-bench-s3-'));
  log('s3: starting Ceph RGW');
  const rgw = await startRgw();
  log(`s3: RGW ready in ${fmt(rgw.startMs / 1000, 1)} s`);
  const storages: S3Storage[] = [];
  try {
    const bucket = await rgw.createBucket();
    const s3 = (hot: boolean) => {
      const s = new S3Storage({ endpoint: rgw.endpoint, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey, region: rgw.region, forcePathStyle: true, bucket, prefix: 'bench/', partSize: PART, partsInFlight: IN_FLIGHT, logger: silentLogger(), ...(hot ? { hotCache: { path: join(dir, 'hot'), maxSize: 2 * size } } : {}) });
      storages.push(s);
      return s;
    };
    const plain = s3(false);
    const hot = s3(true);
    await plain.init();
    await hot.init();
    const fs = new FsBlobStore({ root: join(dir, 'fs') });
    await fs.init();
    const digest = digestOf(size);

    // RSS during the S3 fill, sampled after every 1 MiB handed to the writer.
    global.gc?.();
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const t0 = performance.now();
    await fill(plain.blobs, size, digest, () => (peak = Math.max(peak, process.memoryUsage().rss)));
    const fillMs = performance.now() - t0;
    const growth = peak - baseline;
    log(`s3: filled ${size / MiB} MiB in ${fmt(fillMs / 1000, 1)} s (${fmt(mbps(size, fillMs), 0)} MiB/s, multipart on the blob's key); RSS +${fmt(growth / MiB, 0)} MiB over ${fmt(baseline / MiB, 0)} MiB`);
    await fill(fs, size, digest);
    // Warm the hot cache: one read copies the blob into its directory.
    await readMs(hot.blobs, digest, size);
    await (hot.blobs as HotCachedBlobStore).settled();

    // RGW's own speed: curl GETs the object anonymously (a bucket policy allows reads).
    await rgw.client.send(new PutBucketPolicyCommand({ Bucket: bucket, Policy: JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: '*', Action: ['s3:GetObject'], Resource: [`arn:aws:s3:::${bucket}/*`] }] }) }));
    const objectUrl = `${rgw.endpoint}/${bucket}/${plain.layout.blob(parseDigest(digest))}`;
    const curlMiBps = () => {
      const [status, bytes, speed] = execFileSync('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{speed_download}', objectUrl]).toString().split(' ').map(Number);
      if (status !== 200 || bytes !== size) throw new Error(`curl of RGW: ${status}, ${bytes} bytes`);
      return speed! / MiB;
    };

    const t = { fs: [] as number[], s3: [] as number[], hot: [] as number[], rgw: [] as number[] };
    for (let r = 0; r < runs; r++) {
      t.fs.push(mbps(size, await readMs(fs, digest, size)));
      t.s3.push(mbps(size, await readMs(plain.blobs, digest, size)));
      t.hot.push(mbps(size, await readMs(hot.blobs, digest, size)));
      t.rgw.push(curlMiBps());
      log(`s3: round ${r + 1}/${runs}: fs ${fmt(t.fs.at(-1)!, 0)} MiB/s, s3 ${fmt(t.s3.at(-1)!, 0)} MiB/s, hot cache ${fmt(t.hot.at(-1)!, 0)} MiB/s, RGW straight to curl ${fmt(t.rgw.at(-1)!, 0)} MiB/s`);
    }
    // Cold fills: in place (digest known up front) vs temp key + copy (digest known at commit).
    const fillSize = Number(process.env.BENCH_S3_FILL_MIB ?? 256) * MiB;
    const fillDigest = digestOf(fillSize);
    const f = { direct: [] as number[], copy: [] as number[] };
    for (let r = 0; r < runs; r++) {
      for (const side of r % 2 === 0 ? (['direct', 'copy'] as const) : (['copy', 'direct'] as const)) {
        await plain.blobs.delete(fillDigest);
        const t1 = performance.now();
        await fill(plain.blobs, fillSize, fillDigest, undefined, side === 'direct');
        f[side].push(performance.now() - t1);
      }
      log(`s3: cold fill ${fillSize / MiB} MiB round ${r + 1}/${runs}: in place ${fmt(f.direct.at(-1)! / 1000, 2)} s, temp key + copy ${fmt(f.copy.at(-1)! / 1000, 2)} s`);
    }
    const fillRatio = median(ratios(f.direct, f.copy));
    const s3Ratio = median(ratios(t.s3, t.fs));
    const hotRatio = median(ratios(t.hot, t.fs));
    const bound = PART * (IN_FLIGHT + 1);
    const rows: EvictionRow[] = [
      { metric: `warm ${size / MiB} MiB blob, S3 (RGW) ÷ filesystem store`, median: s3Ratio, unit: '×', target: 'measured', pass: true, detail: `median s3 ${fmt(median(t.s3), 0)} MiB/s, fs ${fmt(median(t.fs), 0)} MiB/s` },
      { metric: `warm ${size / MiB} MiB blob, S3 store's reader ÷ curl straight from RGW`, median: median(ratios(t.s3, t.rgw)), unit: '×', target: '(info)', pass: true, detail: `median RGW to curl ${fmt(median(t.rgw), 0)} MiB/s: RGW's own speed on this machine` },
      { metric: `warm ${size / MiB} MiB blob, S3 + hot cache ÷ filesystem store`, median: hotRatio, unit: '×', target: '≥ 0.8', pass: hotRatio >= 0.8, detail: `median hot ${fmt(median(t.hot), 0)} MiB/s, fs ${fmt(median(t.fs), 0)} MiB/s` },
      { metric: `cold fill of ${fillSize / MiB} MiB into RGW: in place ÷ temp key + copy (time)`, median: fillRatio, unit: '×', target: '< 1', pass: fillRatio < 1, detail: `median in place ${fmt(median(f.direct) / 1000, 2)} s, temp key + copy ${fmt(median(f.copy) / 1000, 2)} s` },
      { metric: `RSS growth during an S3 fill of ${size / MiB} MiB`, median: growth / MiB, unit: 'MiB', target: `≤ ${(2 * bound) / MiB} (2 × partSize × (partsInFlight + 1))`, pass: growth <= 2 * bound, detail: `partSize ${PART / MiB} MiB, partsInFlight ${IN_FLIGHT}; fill ${fmt(mbps(size, fillMs), 0)} MiB/s; RGW start ${fmt(rgw.startMs / 1000, 1)} s` },
    ];
    return { rows, results: { s3: { runs, size, fillMs, coldFillMs: { size: fillSize, ...f }, rssBaseline: baseline, rssPeak: peak, mibps: t, rgwStartMs: rgw.startMs, maxRatio: max(t.s3) } } };
  } finally {
    for (const s of storages) await s.close();
    await rgw.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
  const { rows } = await benchS3(log);
  for (const r of rows) process.stdout.write(`${r.metric}: ${fmt(r.median)} ${r.unit} (target ${r.target}: ${r.pass ? 'ok' : 'FAIL'}) — ${r.detail}\n`);
}
