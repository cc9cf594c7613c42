import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { digestHex, sha256Digest, type Digest } from '../domain/digest.js';
import { MediaTypes } from '../domain/media-types.js';
import { HOSTED_UPSTREAM, type RepoKey, type RepoName, type Tag } from '../domain/reference.js';
import { MemoryBlobStore } from '../storage/memory/memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../storage/memory/memory-manifest-store.js';
import { distributionRoot, DistributionLayout, type LayoutProblem } from './distribution-layout.js';
import { importDistribution, NotHostedError, planImport, type ImportOptions } from './import.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Writes distribution's filesystem layout by hand (registry/storage/paths.go). */
class SyntheticRegistry {
  readonly root = mkdtempSync(join(tmpdir(), 'hubcache-registry2-'));
  readonly v2 = join(this.root, 'docker', 'registry', 'v2');
  constructor() {
    dirs.push(this.root);
  }
  blob(bytes: Buffer | string, opts: { storeAs?: Digest } = {}): Digest {
    const digest = opts.storeAs ?? sha256Digest(bytes);
    const hex = digestHex(digest);
    const dir = join(this.v2, 'blobs', 'sha256', hex.slice(0, 2), hex);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'data'), bytes);
    return digest;
  }
  link(repo: string, sub: string, digest: Digest, content: string = digest): void {
    const dir = join(this.v2, 'repositories', repo, sub, 'sha256', digestHex(digest));
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'link'), content);
  }
  tag(repo: string, tag: string, content: string): void {
    const dir = join(this.v2, 'repositories', repo, '_manifests', 'tags', tag, 'current');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'link'), content);
  }
  /** An image (config + layers) pushed to `repo` as registry:2 stores it; returns the manifest digest. */
  image(repo: string, tag: string | undefined, layers: string[]): { manifest: Digest; config: Digest; layers: Digest[] } {
    const config = this.blob(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, layers }));
    const layerDigests = layers.map((l) => this.blob(l));
    const body = JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: Buffer.byteLength(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, layers })) },
      layers: layers.map((l, i) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigests[i], size: Buffer.byteLength(l) })),
    });
    const manifest = this.blob(body);
    for (const d of [config, ...layerDigests]) this.link(repo, '_layers', d);
    this.link(repo, '_manifests/revisions', manifest);
    if (tag) this.tag(repo, tag, manifest);
    return { manifest, config, layers: layerDigests };
  }
}

function stores() {
  return { blobs: new MemoryBlobStore(), manifests: new MemoryManifestStore(), metadata: new MemoryMetadataStore() };
}

const key = (repo: string): RepoKey => ({ upstream: HOSTED_UPSTREAM, repo: repo as RepoName });

async function run(reg: SyntheticRegistry, s: ReturnType<typeof stores>, opts: Partial<ImportOptions> = {}) {
  const layout = new DistributionLayout(distributionRoot(reg.root));
  const problems: LayoutProblem[] = [];
  const o: ImportOptions = { hostedPatterns: ['**'], clock: () => 1_000, ...opts };
  const plan = await planImport(layout, s, o, problems);
  return { plan, report: await importDistribution(layout, s, plan, o, problems) };
}

describe('DistributionLayout (registry:2 filesystem layout walker)', () => {
  it('finds nested repositories with their tags, revisions and layers, in name order', async () => {
    const reg = new SyntheticRegistry();
    const a = reg.image('myorg/team/app', 'v1', ['layer-a']);
    const b = reg.image('myorg/base', 'latest', ['layer-b']);
    const layout = new DistributionLayout(distributionRoot(reg.root));
    const problems: LayoutProblem[] = [];
    const repos = [];
    for await (const r of layout.repositories(problems)) repos.push(r);
    assert.deepEqual(problems, []);
    assert.deepEqual(repos.map((r) => r.name), ['myorg/base', 'myorg/team/app']);
    assert.deepEqual(repos[1]!.tags, [{ tag: 'v1', digest: a.manifest }]);
    assert.deepEqual(repos[1]!.manifests, [a.manifest]);
    assert.deepEqual(repos[1]!.layers, [a.config, ...a.layers].sort());
    assert.deepEqual(repos[0]!.tags, [{ tag: 'latest', digest: b.manifest }]);
  });

  it('accepts the v2 directory itself, and refuses a directory that is no registry store', () => {
    const reg = new SyntheticRegistry();
    reg.image('app', 'v1', ['x']);
    assert.equal(distributionRoot(reg.v2), reg.v2);
    assert.equal(distributionRoot(reg.root), reg.v2);
    assert.throws(() => distributionRoot(tmpdir() + '/does-not-exist'), /not a registry:2 filesystem store/);
  });

  it('reports a broken link, a link to a missing blob, a tag naming an unknown revision and an invalid name, and leaves them out', async () => {
    const reg = new SyntheticRegistry();
    const good = reg.image('app', 'v1', ['good']);
    const ghost = sha256Digest('never stored');
    reg.link('app', '_layers', ghost); // missing blob
    const other = sha256Digest('other');
    reg.link('app', '_layers', sha256Digest('mismatch'), other); // link naming another digest than its directory
    reg.tag('app', 'broken', 'not a digest\n');
    reg.tag('app', 'dangling', sha256Digest('no such revision'));
    reg.image('Bad_Name', 'v1', ['z']);
    const problems: LayoutProblem[] = [];
    const repos = [];
    for await (const r of new DistributionLayout(reg.v2).repositories(problems)) repos.push(r);
    assert.deepEqual(repos.map((r) => r.name), ['app']);
    assert.deepEqual(repos[0]!.tags.map((t) => t.tag), ['v1']);
    assert.deepEqual(repos[0]!.layers, [good.config, ...good.layers].sort());
    assert.deepEqual(problems.map((p) => p.kind).sort(), ['broken-link', 'broken-link', 'invalid-name', 'missing-blob', 'missing-blob']);
    assert.ok(problems.some((p) => p.kind === 'missing-blob' && p.what === ghost));
    assert.ok(problems.some((p) => p.kind === 'invalid-name' && p.repository === 'Bad_Name'));
  });
});

describe('importDistribution', () => {
  it('imports blobs, manifests byte-exact and tags as hosted content, and a second run imports nothing new', async () => {
    const reg = new SyntheticRegistry();
    const img = reg.image('myorg/app', 'v1', ['layer-1', 'layer-2']);
    const s = stores();
    const { plan, report } = await run(reg, s);
    assert.equal(plan.blobsToCopy, 3);
    assert.deepEqual(report.problems, []);
    assert.equal(report.blobsCopied, 3);
    assert.equal(report.manifestsImported, 1);
    assert.equal(report.tagsImported, 1);
    const k = key('myorg/app');
    for (const d of [img.config, ...img.layers]) assert.ok(await s.metadata.hasBlob(k, d), `${d} linked`);
    assert.ok(await s.metadata.hasManifest(k, img.manifest));
    const stored = await s.manifests.get(img.manifest);
    assert.equal(sha256Digest(stored!.body), img.manifest);
    assert.equal(stored!.descriptor.mediaType, MediaTypes.ociManifest);
    const tag = await s.metadata.getTag(k, 'v1' as Tag);
    assert.equal(tag?.digest, img.manifest);
    assert.equal(tag?.validatedAt, 1_000);

    const again = await run(reg, s);
    assert.equal(again.plan.blobsToCopy, 0);
    assert.deepEqual([again.report.blobsCopied, again.report.manifestsImported, again.report.tagsImported], [0, 0, 0]);
    assert.deepEqual([again.report.blobsPresent, again.report.manifestsPresent, again.report.tagsPresent], [3, 1, 1]);
  });

  it('reports a corrupt blob, imports nothing that needs it, and imports the rest', async () => {
    const reg = new SyntheticRegistry();
    const ok = reg.image('app', 'ok', ['fine']);
    const bad = reg.image('app', 'bad', ['will be corrupted']);
    reg.blob('something else entirely', { storeAs: bad.layers[0]! });
    const s = stores();
    const { report } = await run(reg, s);
    assert.ok(report.problems.some((p) => p.kind === 'corrupt-blob' && p.what === bad.layers[0]));
    assert.ok(report.problems.some((p) => p.kind === 'incomplete-manifest' && p.what === bad.manifest));
    assert.equal(await s.blobs.stat(bad.layers[0]!), undefined, 'the corrupt bytes are not in the store');
    assert.equal(await s.metadata.hasManifest(key('app'), bad.manifest), false);
    assert.equal(await s.metadata.getTag(key('app'), 'bad' as Tag), undefined);
    assert.equal((await s.metadata.getTag(key('app'), 'ok' as Tag))?.digest, ok.manifest);
  });

  it('reports a missing blob: the manifest needing it and its tag stay out', async () => {
    const reg = new SyntheticRegistry();
    const img = reg.image('app', 'v1', ['gone']);
    rmSync(join(reg.v2, 'blobs', 'sha256', digestHex(img.layers[0]!).slice(0, 2), digestHex(img.layers[0]!)), { recursive: true });
    const s = stores();
    const { report } = await run(reg, s);
    assert.ok(report.problems.some((p) => p.kind === 'missing-blob' && p.what === img.layers[0]));
    assert.equal(await s.metadata.hasManifest(key('app'), img.manifest), false);
    assert.equal(await s.metadata.getTag(key('app'), 'v1' as Tag), undefined);
    assert.ok(await s.metadata.hasBlob(key('app'), img.config), 'the blobs that are there are imported');
  });

  it('imports an index after its children, and leaves out an index whose child is missing', async () => {
    const reg = new SyntheticRegistry();
    const child = reg.image('multi', undefined, ['amd64 layer']);
    const index = (children: Digest[]) =>
      JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: children.map((d) => ({ mediaType: MediaTypes.ociManifest, digest: d, size: 1, platform: { os: 'linux', architecture: 'amd64' } })) });
    const good = reg.blob(index([child.manifest]));
    reg.link('multi', '_manifests/revisions', good);
    reg.tag('multi', 'latest', good);
    const orphan = reg.blob(index([sha256Digest('no such child')]));
    reg.link('multi', '_manifests/revisions', orphan);
    const s = stores();
    const { report } = await run(reg, s);
    assert.ok(await s.metadata.hasManifest(key('multi'), child.manifest));
    assert.ok(await s.metadata.hasManifest(key('multi'), good));
    assert.equal((await s.metadata.getTag(key('multi'), 'latest' as Tag))?.digest, good);
    assert.equal(await s.metadata.hasManifest(key('multi'), orphan), false);
    assert.deepEqual(report.problems.map((p) => [p.kind, p.what]), [['incomplete-manifest', orphan]]);
  });

  it('keeps a tag hubcache already has for another manifest (pushed since) and reports it', async () => {
    const reg = new SyntheticRegistry();
    const img = reg.image('app', 'v1', ['a']);
    const s = stores();
    const other = await s.manifests.put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [] })), MediaTypes.ociIndex);
    await s.metadata.setTag(key('app'), 'v1' as Tag, { ...other, validatedAt: 5 });
    const { report } = await run(reg, s);
    assert.equal((await s.metadata.getTag(key('app'), 'v1' as Tag))?.digest, other.digest);
    assert.deepEqual(report.problems.map((p) => p.kind), ['tag-conflict']);
    assert.ok(await s.metadata.hasManifest(key('app'), img.manifest), 'the manifest itself is imported');
  });

  it('refuses to start when a selected repository is outside hosted.repositories, naming the setting; --repository selects a subset', async () => {
    const reg = new SyntheticRegistry();
    reg.image('myorg/app', 'v1', ['a']);
    reg.image('other/app', 'v1', ['b']);
    const s = stores();
    await assert.rejects(run(reg, s, { hostedPatterns: ['myorg/**'] }), (err: unknown) => err instanceof NotHostedError && /hosted\.repositories/.test(err.message) && err.repositories.join() === 'other/app');
    assert.equal((await s.blobs.usage?.())?.objects ?? 0, 0, 'nothing written');
    const { report } = await run(reg, s, { hostedPatterns: ['myorg/**'], only: ['myorg/*'] });
    assert.equal(report.repositories, 1);
    assert.equal(report.tagsImported, 1);
  });

  it('a dry run writes nothing and says what would be copied', async () => {
    const reg = new SyntheticRegistry();
    reg.image('app', 'v1', ['abc', 'defg']);
    const s = stores();
    const { report } = await run(reg, s, { dryRun: true });
    assert.equal(report.dryRun, true);
    assert.equal(report.blobsCopied, 3);
    assert.equal(await s.metadata.getTag(key('app'), 'v1' as Tag), undefined);
    const listed = [];
    for await (const b of s.blobs.list()) listed.push(b);
    assert.equal(listed.length, 0);
  });
});
