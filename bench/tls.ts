/**
 * What TLS on the registry listener costs (issue #14): two real `hubcache serve` processes in front
 * of the fake Docker Hub, one plain HTTP, one HTTPS (a test-CA certificate, P-256), each warmed with
 * the same image. Then, alternating plain, TLS, plain, TLS… so drift hits both:
 *
 *   1. a warm blob of BENCH_TLS_MIB (default 256) MiB with curl: MiB/s, TLS ÷ plain;
 *   2. a manifest GET on a fresh connection (curl per request: TCP + handshake + request): ms,
 *      TLS ÷ plain — the per-connection cost clients pay once per keep-alive connection.
 *
 * Medians of the per-pair ratios are printed.   npm run bench:tls   BENCH_RUNS (default 7)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubcacheProcess } from '../test/support/hubcache-process.js';
import { makeImage } from '../test/support/images.js';
import { createTestCa } from '../test/support/test-ca.js';
import { startUpstream } from '../test/support/upstream-harness.js';
import { curlGet } from './curl-client.js';
import { fmt, mbps, median, MiB, ratios } from './stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const BIG = Number(process.env.BENCH_TLS_MIB ?? 256) * MiB;
const ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json';

const dir = mkdtempSync(join(tmpdir(), 'hubcache-bench-tls-'));
const ca = createTestCa('bench CA');
const server = ca.issueServer('bench');
const image = await makeImage('docker', { seed: 'bench-tls', layerSize: BIG, layers: 1 });
const upstream = await startUpstream();
await upstream.push(image, 'library/bench-tls', '1');
const plain = await startHubcacheProcess({ upstream, args: [] });
const tls = await startHubcacheProcess({ upstream, args: ['--tls-certificate', server.certificate, '--tls-key', server.key] });
if (!tls.url.startsWith('https://')) throw new Error(`expected an https listener, got ${tls.url}`);
const [layer] = [...image.blobs.values()].sort((x, y) => y.size - x.size).map((b) => b.digest);
const blobPath = `/v2/library/bench-tls/blobs/${layer}`;
const manifestPath = '/v2/library/bench-tls/manifests/1';
const curlTls = { headers: { accept: ACCEPT } };

const get = (base: string, path: string, headers: Record<string, string> = {}) =>
  base.startsWith('https://') ? curlGet(`${base}${path}`, { headers, caCert: ca.caCertificate }) : curlGet(`${base}${path}`, { headers });

try {
  for (const hc of [plain, tls]) {
    await get(hc.url, manifestPath, curlTls.headers);
    await get(hc.url, blobPath);
  }
  const blobPlain: number[] = [];
  const blobTls: number[] = [];
  const manPlain: number[] = [];
  const manTls: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const a = await get(plain.url, blobPath);
    const b = await get(tls.url, blobPath);
    blobPlain.push(mbps(a.bytes, a.totalMs));
    blobTls.push(mbps(b.bytes, b.totalMs));
    const m: number[] = [];
    const n: number[] = [];
    for (let j = 0; j < 10; j++) {
      m.push((await get(plain.url, manifestPath, curlTls.headers)).totalMs);
      n.push((await get(tls.url, manifestPath, curlTls.headers)).totalMs);
    }
    manPlain.push(median(m));
    manTls.push(median(n));
  }
  console.log(`warm ${BIG / MiB} MiB blob, MiB/s: plain ${fmt(median(blobPlain), 0)}, TLS ${fmt(median(blobTls), 0)}; TLS ÷ plain (median of ${RUNS} pairs) ${fmt(median(ratios(blobTls, blobPlain)))}`);
  console.log(`manifest GET on a new connection, ms: plain ${fmt(median(manPlain))}, TLS ${fmt(median(manTls))}; TLS ÷ plain ${fmt(median(ratios(manTls, manPlain)))}`);
} finally {
  await tls.close();
  await plain.close();
  await upstream.close();
  image.dispose();
  ca.close();
  rmSync(dir, { recursive: true, force: true });
}
