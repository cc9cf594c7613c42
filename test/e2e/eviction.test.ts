/**
 * Eviction in a real `hubcache serve` (issue #13):
 * - kill -9 in the middle of eviction: many small blobs and images pulled concurrently through a
 *   tight cap, so that passes run back to back; the process is SIGKILLed during one. After a
 *   restart on the same store: no partial file outside tmp/, every blob and manifest hashes to its
 *   name, every tag names a stored manifest or is fetched again transparently, and every pull works
 *   with the right bytes.
 * - a full disk heals itself: hubcache (no cap) fills a small tmpfs with its own content until a
 *   write fails with ENOSPC; the emergency eviction pass frees space and the store is writable
 *   again without a restart.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startHostileUpstream } from '../../src/upstream/testing/hostile-registry.js';
import { metricValue, startHubcacheProcess } from '../support/hubcache-process.js';
import { ALL_MANIFESTS, putImage, seededBytes, type FakeImage } from '../support/oci-fixtures.js';

const KiB = 1024;
const BIN = fileURLToPath(new URL('../../bin/hubcache.js', import.meta.url));
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Every file under `dir`, recursively (absolute paths). */
function files(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)]));
}

async function pull(url: string, path: string): Promise<{ status: number; body: Buffer; digest: string | null }> {
  const res = await fetch(`${url}${path}`, { headers: { accept: ALL_MANIFESTS } });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()), digest: res.headers.get('docker-content-digest') };
}

describe('eviction in a real process', () => {
  it('kill -9 during an eviction pass leaves a consistent store: every file whole, tags fetched again, pulls still work', async () => {
    const up = await startHostileUpstream();
    const images: Array<{ repo: string; tag: string; img: FakeImage }> = [];
    for (let i = 0; i < 30; i++) images.push({ repo: `library/app${i % 5}`, tag: `v${i}`, img: putImage(up.registry, `library/app${i % 5}`, `v${i}`, { seed: `kill-${i}`, layerSizes: [6 * KiB, 3 * KiB, 2 * KiB] }) });
    const loose = Array.from({ length: 200 }, (_, i) => up.registry.putBlob(seededBytes(`loose-${i}`, 4 * KiB)));
    const storagePath = mkdtempSync(join(tmpdir(), 'hubcache-kill9-'));
    try {
      const args = ['--storage-max-size', '160KiB', '--eviction-high-watermark', '90', '--eviction-low-watermark', '40'];
      const hc = await startHubcacheProcess({ upstreamUrl: up.url, storagePath, args });
      // 8 clients pull images and loose blobs round and round until the process dies under them.
      let stop = false;
      const clients = Array.from({ length: 8 }, async (_, c) => {
        for (let n = c; !stop; n += 8) {
          try {
            const { repo, tag, img } = images[n % images.length]!;
            await pull(hc.url, `/v2/${repo}/manifests/${tag}`);
            for (const b of [img.config, ...img.layers]) await pull(hc.url, `/v2/${repo}/blobs/${b.digest}`);
            await pull(hc.url, `/v2/library/loose/blobs/${loose[n % loose.length]}`);
          } catch {
            // The process was killed under this request.
          }
        }
      });
      // Killed in the middle of the 5th pass (passes log their start; deletions follow at once).
      let passes = 0;
      await hc.waitForLog((l) => l.message === 'eviction pass started' && ++passes >= 5, 60_000);
      hc.child.kill('SIGKILL');
      await hc.stop();
      stop = true;
      await Promise.all(clients);
      assert.ok(hc.logs.some((l) => l.message === 'eviction pass' && Number(l.blobs) > 0), 'passes evicted blobs before the kill');

      // The store as the killed process left it: nothing partial outside tmp/.
      for (const f of files(join(storagePath, 'blobs'))) assert.equal(sha256(readFileSync(f)), f.split('/').pop(), `blob ${f} hashes to its name`);
      for (const f of files(join(storagePath, 'manifests'))) {
        if (f.endsWith('.json')) assert.equal(typeof JSON.parse(readFileSync(f, 'utf8')).mediaType, 'string', `sidecar ${f}`);
        else assert.equal(sha256(readFileSync(f)), f.split('/').pop(), `manifest ${f} hashes to its name`);
      }
      const tagFiles = files(join(storagePath, 'repositories')).filter((f) => f.includes('/_tags/'));
      for (const f of tagFiles) assert.match(JSON.parse(readFileSync(f, 'utf8')).digest, /^sha256:[0-9a-f]{64}$/, `tag ${f} is whole`);
      const dangling = tagFiles.filter((f) => !existsSync(join(storagePath, 'manifests', 'sha256', JSON.parse(readFileSync(f, 'utf8')).digest.slice(7, 9), JSON.parse(readFileSync(f, 'utf8')).digest.slice(7))));

      // Restarted on the same store (the dead owner's lock is taken over): every pull works.
      const again = await startHubcacheProcess({ upstreamUrl: up.url, storagePath, args });
      try {
        for (const f of dangling) {
          const [repo, tag] = [f.split('/repositories/docker.io/')[1]!.split('/_tags/')[0]!, f.split('/_tags/')[1]!];
          const res = await pull(again.url, `/v2/${repo}/manifests/${tag}`);
          assert.equal(res.status, 200, `a tag naming an evicted manifest is fetched again: ${repo}:${tag}`);
        }
        for (const { repo, tag, img } of images) {
          const m = await pull(again.url, `/v2/${repo}/manifests/${tag}`);
          assert.equal(m.status, 200);
          assert.ok(m.body.equals(img.manifest), `${repo}:${tag} byte-exact`);
          for (const b of [img.config, ...img.layers]) {
            const r = await pull(again.url, `/v2/${repo}/blobs/${b.digest}`);
            assert.equal(r.status, 200);
            assert.ok(r.body.equals(b.bytes), `${b.digest} identical`);
          }
        }
      } finally {
        await again.stop();
      }
      assert.ok(again.logs.some((l) => l.message === 'stale storage lock taken over'), 'the killed owner left its lock');
    } finally {
      rmSync(storagePath, { recursive: true, force: true });
      await up.close();
    }
  });

  it('a full disk heals itself: ENOSPC triggers an emergency eviction pass and the store is writable again, no restart', async () => {
    assert.ok(process.getuid?.() === 0, 'mounting a tmpfs needs root: run the e2e tests as root');
    const mountPoint = mkdtempSync(join(tmpdir(), 'hubcache-tmpfs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint]);
    const up = await startHostileUpstream();
    try {
      const blobs = Array.from({ length: 40 }, (_, i) => up.registry.putBlob(seededBytes(`heal-${i}`, 256 * KiB)));
      const hc = await startHubcacheProcess({ upstreamUrl: up.url, storagePath: mountPoint });
      try {
        // Pull until a download runs into the full disk (4 MiB hold about 15 of them).
        let i = 0;
        for (; i < blobs.length; i++) {
          await pull(hc.url, `/v2/library/heal/blobs/${blobs[i]}`).catch(() => undefined);
          if (hc.logs.some((l) => l.message === 'emergency eviction')) break;
          await hc.waitForLog((l) => (l.message === 'fill committed' && l.digest === blobs[i]) || l.message === 'emergency eviction');
          if (hc.logs.some((l) => l.message === 'emergency eviction')) break;
        }
        const emergency = await hc.waitForLog((l) => l.message === 'emergency eviction');
        assert.ok(Number(emergency.removed) >= 1, 'the least recently used blobs went');
        assert.ok(hc.logs.some((l) => l.message === 'store degraded: writes fail, content not cached is passed through from upstream, not stored' && l.errno === 'ENOSPC'));
        await hc.waitForLog((l) => l.message === 'store writable again');
        const metrics = await hc.metrics();
        assert.equal(metricValue(metrics, 'hubcache_store_writable'), 1);
        assert.ok(metricValue(metrics, 'hubcache_evictions_total', { kind: 'blob', reason: 'emergency' }) >= 1);
        // The next blob is cached again; the evicted first one is fetched again, whole.
        const next = await pull(hc.url, `/v2/library/heal/blobs/${blobs[i + 1]}`);
        assert.equal(next.status, 200);
        const first = await pull(hc.url, `/v2/library/heal/blobs/${blobs[0]}`);
        assert.equal(first.status, 200);
        assert.equal(sha256(first.body), blobs[0]!.slice(7));
      } finally {
        await hc.stop();
      }
    } finally {
      await up.close();
      execFileSync('umount', [mountPoint]);
      rmdirSync(mountPoint);
    }
  });

  it('hubcache gc (the CLI): --dry-run then a real pass on a stopped store; refused while a server owns it, with the --server hint; --server runs it on the metrics listener', async () => {
    const gc = async (args: string[]) => {
      const child = spawn(process.execPath, [BIN, 'gc', ...args], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const [code] = (await once(child, 'close')) as [number | null];
      return { code, stdout, stderr };
    };
    const up = await startHostileUpstream();
    const digests = Array.from({ length: 4 }, (_, i) => up.registry.putBlob(seededBytes(`gc-cli-${i}`, 20 * KiB)));
    const storagePath = mkdtempSync(join(tmpdir(), 'hubcache-gc-cli-'));
    try {
      const hc = await startHubcacheProcess({ upstreamUrl: up.url, storagePath, args: ['--metrics-listen', '127.0.0.1:0'] });
      for (const d of digests) {
        assert.equal((await pull(hc.url, `/v2/library/app/blobs/${d}`)).status, 200);
        await hc.waitForLog((l) => l.message === 'fill committed' && l.digest === d);
      }
      const refused = await gc(['--storage-path', storagePath, '--storage-max-size', '30KiB']);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /in use by another hubcache process/);
      assert.match(refused.stderr, /hubcache gc --server http:\/\/HOST:METRICS_PORT/);
      const metricsUrl = String(hc.logs.find((l) => l.message === 'hubcache started')!.metrics).replace(/\/metrics$/, '');
      const remote = await gc(['--server', metricsUrl, '--dry-run', '--json']);
      assert.equal(remote.code, 0, remote.stderr);
      assert.deepEqual(JSON.parse(remote.stdout).removed, [], 'no cap on the server: nothing to evict');
      await hc.stop();

      const dry = await gc(['--dry-run', '--storage-path', storagePath, '--storage-max-size', '30KiB']);
      assert.equal(dry.code, 0, dry.stderr);
      assert.equal(dry.stdout.split('\n').filter((l) => l.startsWith('would remove blob sha256:')).length, 3, dry.stdout);
      assert.match(dry.stdout, /^gc: would remove 3 blobs, 0 manifests, 0 tags, 61\.4 KB; store 20\.5 KB$/m);
      assert.equal(files(join(storagePath, 'blobs')).length, 4, 'a dry run removes nothing');
      const real = await gc(['--storage-path', storagePath, '--storage-max-size', '30KiB']);
      assert.equal(real.code, 0, real.stderr);
      assert.match(real.stdout, /^gc: removed 3 blobs, 0 manifests, 0 tags, 61\.4 KB; store 20\.5 KB$/m);
      assert.deepEqual(files(join(storagePath, 'blobs')).map((f) => `sha256:${f.split('/').pop()}`), [digests[3]], 'the least recently used went');
    } finally {
      rmSync(storagePath, { recursive: true, force: true });
      await up.close();
    }
  });
});
