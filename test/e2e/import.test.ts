/**
 * `hubcache import` (issue #14, "Migration from registry:2") against a store written by Debian's
 * `docker-registry` (CNCF distribution): images pushed into it, imported with the CLI as users run
 * it, then served by `hubcache serve` and pulled with skopeo byte-identical to what the registry
 * serves; a second import imports nothing; an import killed mid-way completes when run again.
 * Then hosted garbage collection offline: `hubcache gc` after a delete removes what only the
 * deleted image used, and the other images still pull whole.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, watch } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { formatBytes } from '../../src/commands/format.js';
import { startDistribution, type Distribution } from '../support/distribution.js';
import { startHubcacheProcess } from '../support/hubcache-process.js';
import { makeImage, makeIndex, type TestImage } from '../support/images.js';
import { pushImage } from '../support/push.js';
import { skopeoCopy, skopeoInspectRaw } from '../support/skopeo.js';

const BIN = fileURLToPath(new URL('../../bin/hubcache.js', import.meta.url));
const KiB = 1024;
const MiB = 1024 * KiB;
const HOSTED = ['--hosted-repositories', 'myorg/**'];

interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** `hubcache ARGS` in a clean environment; `onSpawn` may kill it. */
async function cli(args: string[], onSpawn?: (child: ReturnType<typeof spawn>) => void): Promise<CliResult> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  onSpawn?.(child);
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  return { code, signal, stdout, stderr };
}

/** Every file of a `skopeo copy … dir:` output, by name. */
function dirFiles(dir: string): Map<string, Buffer> {
  return new Map(readdirSync(dir).sort().map((f) => [f, readFileSync(join(dir, f))]));
}

describe('hubcache import from a registry:2 store', () => {
  let dist: Distribution;
  const images: Array<{ repo: string; tag: string; image: TestImage }> = [];
  const dirs: string[] = [];
  const tmp = (prefix: string) => {
    const d = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(d);
    return d;
  };

  before(async () => {
    dist = await startDistribution();
    const app = await makeImage('oci', { seed: 'import-app', layers: 2, layerSize: 256 * KiB });
    const app2 = await makeImage('docker', { seed: 'import-app-2', layers: 1, layerSize: 128 * KiB });
    const multi = await makeIndex('oci', { seed: 'import-multi', layers: 1, layerSize: 64 * KiB });
    // Big enough that the killed import below is still copying when it is killed.
    const big = await makeImage('oci', { seed: 'import-big', layers: 2, layerSize: 24 * MiB, filesPerLayer: 1 });
    images.push({ repo: 'myorg/app', tag: 'v1', image: app }, { repo: 'myorg/app', tag: 'v2', image: app2 }, { repo: 'myorg/tools/multi', tag: 'latest', image: multi }, { repo: 'myorg/big', tag: '1.0', image: big });
    for (const { repo, tag, image } of images) await pushImage(dist.url, image, repo, tag);
  });
  after(async () => {
    await dist?.close();
    for (const { image } of images) image.dispose();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('imports every image, serves them byte-identical to the registry, a second run imports nothing; gc offline after a delete', async () => {
    const store = tmp('hubcache-import-store-');
    const first = await cli(['import', dist.storageDir, '--storage-path', store, ...HOSTED]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stderr, '', 'no progress bar when stderr is not a terminal');
    assert.match(first.stdout, /^import: imported 3 repositories: \d+ blobs \(.+\), 6 manifests, 4 tags; already present: 0 blobs, 0 manifests, 0 tags\n$/);

    const second = await cli(['import', dist.storageDir, '--storage-path', store, ...HOSTED]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /imported 3 repositories: 0 blobs \(0 B\), 0 manifests, 0 tags; already present: \d+ blobs, 6 manifests, 4 tags/);

    const hc = await startHubcacheProcess({ storagePath: store, args: [...HOSTED, '--hosted-allow-delete', 'true'] });
    try {
      for (const { repo, tag, image } of images) {
        const served = await skopeoInspectRaw(`docker://${hc.host}/${repo}:${tag}`);
        assert.equal(served.toString(), image.manifest.toString(), `${repo}:${tag} manifest byte-exact`);
        const fromHubcache = tmp('hubcache-import-pull-');
        const fromRegistry = tmp('hubcache-import-ref-');
        await skopeoCopy(`docker://${hc.host}/${repo}:${tag}`, `dir:${fromHubcache}`, { all: image.kind.endsWith('index') || image.kind.endsWith('list') });
        await skopeoCopy(`docker://${dist.host}/${repo}:${tag}`, `dir:${fromRegistry}`, { all: image.kind.endsWith('index') || image.kind.endsWith('list') });
        assert.deepEqual(dirFiles(fromHubcache), dirFiles(fromRegistry), `${repo}:${tag}: the same bytes as from the registry`);
      }
      // Delete v1 of myorg/app (v2 stays); hosted gc then removes what only v1 used.
      const app = images[0]!.image;
      const del = await fetch(`${hc.url}/v2/myorg/app/manifests/${app.digest}`, { method: 'DELETE' });
      assert.equal(del.status, 202);
    } finally {
      await hc.stop();
    }
    // Age the store by two hours (file times): no sleeping through the grace period.
    const old = new Date(Date.now() - 2 * 3_600_000);
    const age = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) age(p);
        else utimesSync(p, old, old);
      }
    };
    age(join(store, 'repositories'));
    age(join(store, 'manifests'));
    age(join(store, 'blobs'));
    const gc = await cli(['gc', '--storage-path', store, ...HOSTED]);
    assert.equal(gc.code, 0, gc.stderr);
    const app = images[0]!.image;
    for (const d of [app.config!.digest, ...app.layers.map((l) => l.digest)]) assert.match(gc.stdout, new RegExp(`removed blob ${d} .*\\(unreferenced`));
    assert.match(gc.stdout, new RegExp(`removed manifest ${app.digest} .*\\(unreferenced`));
    for (const d of [app.config!.digest, ...app.layers.map((l) => l.digest)]) assert.equal(existsSync(join(store, 'blobs', 'sha256', d.slice(7, 9), d.slice(7))), false);

    const again = await startHubcacheProcess({ storagePath: store, args: HOSTED });
    try {
      for (const { repo, tag, image } of images.slice(1)) {
        const pulled = tmp('hubcache-import-after-gc-');
        await skopeoCopy(`docker://${again.host}/${repo}:${tag}`, `dir:${pulled}`, { all: image.kind.endsWith('index') || image.kind.endsWith('list') });
        assert.equal(readFileSync(join(pulled, 'manifest.json')).toString(), image.manifest.toString());
      }
      const gone = await fetch(`${again.url}/v2/myorg/app/manifests/v1`, { headers: { accept: app.mediaType } });
      assert.equal(gone.status, 404);
      await gone.arrayBuffer();
    } finally {
      await again.stop();
    }
  });

  it('an import killed mid-way completes when run again', async () => {
    const store = tmp('hubcache-import-killed-');
    // Killed as soon as it starts copying a blob into the store (its temp file appears).
    const watcher = watch(store, { recursive: true });
    const killed = await cli(['import', dist.storageDir, '--storage-path', store, ...HOSTED], (child) => {
      watcher.on('change', (_event, name) => {
        if (String(name).startsWith('tmp/blob-')) child.kill('SIGKILL');
      });
    });
    watcher.close();
    assert.equal(killed.signal, 'SIGKILL', `killed while importing: ${killed.stdout}${killed.stderr}`);
    const rerun = await cli(['import', dist.storageDir, '--storage-path', store, ...HOSTED]);
    assert.equal(rerun.code, 0, rerun.stderr);
    const [, newManifests, newTags, presentManifests, presentTags] = /(\d+) manifests, (\d+) tags; already present: \d+ blobs, (\d+) manifests, (\d+) tags/.exec(rerun.stdout) ?? [];
    assert.equal(Number(newManifests) + Number(presentManifests), 6, rerun.stdout);
    assert.equal(Number(newTags) + Number(presentTags), 4, rerun.stdout);
    const hc = await startHubcacheProcess({ storagePath: store, args: HOSTED });
    try {
      for (const { repo, tag, image } of images) {
        const pulled = tmp('hubcache-import-resumed-');
        await skopeoCopy(`docker://${hc.host}/${repo}:${tag}`, `dir:${pulled}`, { all: image.kind.endsWith('index') || image.kind.endsWith('list') });
        assert.equal(readFileSync(join(pulled, 'manifest.json')).toString(), image.manifest.toString());
      }
    } finally {
      await hc.stop();
    }
  });

  it('on a terminal: a progress bar with the bytes and the items, then the summary', async () => {
    const store = tmp('hubcache-import-tty-');
    const command = [process.execPath, BIN, 'import', dist.storageDir, '--storage-path', store, ...HOSTED, '--repository', 'myorg/app'].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    const child = spawn('script', ['-qec', command, '/dev/null'], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const [code] = (await once(child, 'close')) as [number | null];
    assert.equal(code, 0, out);
    // myorg/app: two images, 5 blobs, 2 manifests, 2 tags.
    const bytes = [images[0]!.image, images[1]!.image].flatMap((i) => [...i.blobs.values()]).reduce((n, b) => n + b.size, 0);
    const size = formatBytes(bytes).replace(/\./g, '\\.');
    assert.match(out, new RegExp(`100% \\| ${size}/${size} \\| 9/9 items \\| myorg/app`), out);
    assert.match(out, /import: imported 1 repositories: 5 blobs/);
  });

  it('refuses names outside hosted.repositories (exit 2, nothing written) and a running server owns the store (exit 1)', async () => {
    const store = tmp('hubcache-import-refused-');
    const refused = await cli(['import', dist.storageDir, '--storage-path', store, '--hosted-repositories', 'myorg/app']);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /not hosted \(not matched by hosted\.repositories\): myorg\/big, myorg\/tools\/multi/);
    assert.deepEqual(readdirSync(store), [], 'nothing written');
    const subset = await cli(['import', dist.storageDir, '--storage-path', store, '--hosted-repositories', 'myorg/app', '--repository', 'myorg/app']);
    assert.equal(subset.code, 0, subset.stderr);
    assert.match(subset.stdout, /imported 1 repositories/);

    const hc = await startHubcacheProcess({ storagePath: store, args: HOSTED });
    try {
      const owned = await cli(['import', dist.storageDir, '--storage-path', store, ...HOSTED]);
      assert.equal(owned.code, 1);
      assert.match(owned.stderr, /in use by another hubcache process[\s\S]*stop it, import, then start it again/);
    } finally {
      await hc.stop();
    }
  });
});
