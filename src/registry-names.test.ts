// Issue #12, "one rule per concept": a registry name the configuration accepts can be asked for by
// every client and stored, and the Helm chart's values.schema.json accepts exactly the names the
// configuration does. Property-style, over the generated corpus of domain/testing/, through the
// real loader, router and stores.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError, loadConfig } from './config/load.js';
import { sha256Digest } from './domain/digest.js';
import type { RepoKey, RepoName } from './domain/reference.js';
import { isRegistryName, REGISTRY_NAME_SCHEMA } from './domain/registry-name.js';
import { registryNameCorpus } from './domain/testing/registry-name-corpus.js';
import { resolveRepo } from './http/resolve-repo.js';
import { FsMetadataStore } from './storage/fs/fs-manifest-store.js';
import type { MetadataStore } from './storage/manifest-store.js';
import { MemoryMetadataStore } from './storage/memory/memory-manifest-store.js';
import { DOCKER_HUB } from './upstream/docker-hub.js';

const tmp = mkdtempSync(join(tmpdir(), 'hubcache-names-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const ALIASES: readonly string[] = DOCKER_HUB.aliases.filter((a) => a !== DOCKER_HUB.name);
const CORPUS = [...new Set([...registryNameCorpus(1000), ...DOCKER_HUB.aliases])];

/** The real loader on a config file naming these upstreams: the names it refuses (one problem line each), or none. */
function configRefuses(names: readonly string[]): Set<string> {
  const file = join(tmp, 'upstreams.yaml');
  writeFileSync(file, `upstreams:\n${names.map((n) => `  ${JSON.stringify(n)}: {url: "https://registry.example"}`).join('\n')}\n`);
  try {
    const config = loadConfig({ file, env: {} });
    for (const n of names) assert.ok(config.upstreams[n], `${n} accepted, yet not configured`);
    return new Set();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return new Set(names.filter((n) => err.problems.some((p) => p.startsWith(`upstreams.${n}: `))));
  }
}

const refused = configRefuses(CORPUS);
const accepted = CORPUS.filter((n) => !refused.has(n));

describe('registry names: one rule for config, routing, storage and the chart (issue #12)', () => {
  it('the configuration accepts exactly the registry names of domain/registry-name.ts, Docker Hub under one name', () => {
    assert.deepEqual(configRefuses(accepted), new Set(), 'the accepted names are accepted together');
    assert.deepEqual(accepted, CORPUS.filter((n) => isRegistryName(n) && !ALIASES.includes(n)));
    assert.ok(accepted.length > 200, `only ${accepted.length} accepted names in the corpus`);
  });

  it('every name the configuration accepts is routed to its upstream, by ?ns=, by path prefix and as the default', () => {
    for (const name of accepted) {
      const upstreams = new Set([DOCKER_HUB.name, name]);
      const want = { upstream: name, repo: 'org/app' };
      assert.deepEqual(resolveRepo({ upstreams, defaultUpstream: DOCKER_HUB.name }, `${name}/org/app`, null), want, `path prefix ${name}`);
      assert.deepEqual(resolveRepo({ upstreams, defaultUpstream: DOCKER_HUB.name }, 'org/app', name), want, `ns=${name}`);
      assert.deepEqual(resolveRepo({ upstreams, defaultUpstream: name }, 'org/app', null), want, `default ${name}`);
    }
  });

  for (const [kind, make] of [
    ['FsMetadataStore', async () => {
      const store = new FsMetadataStore({ root: mkdtempSync(join(tmp, 'fs-')) });
      await store.init();
      return store;
    }],
    ['MemoryMetadataStore', async () => new MemoryMetadataStore()],
  ] as const) {
    it(`every name the configuration accepts can be stored: ${kind}`, async () => {
      const store: MetadataStore = await make();
      const digest = sha256Digest('manifest');
      const keys: RepoKey[] = [];
      for (const name of accepted) {
        const key: RepoKey = { upstream: name, repo: 'org/app' as RepoName };
        await store.linkManifest(key, digest);
        assert.equal(await store.hasManifest(key, digest), true, name);
        keys.push(key);
      }
      const listed: RepoKey[] = [];
      for await (const k of store.listRepositories()) listed.push(k);
      const id = (k: RepoKey) => `${k.upstream} ${k.repo}`;
      assert.deepEqual(listed.map(id).sort(), keys.map(id).sort(), 'every stored repository is listed back (hubcache ls)');
      if (store instanceof FsMetadataStore) {
        for (const k of keys) assert.ok(store.layout.repositoryDir(k).startsWith(store.layout.repositoriesDir + sep));
      }
    });
  }

  describe("the chart's values.schema.json", () => {
    const file = new URL('../helm/hubcache/values.schema.json', import.meta.url);
    const text = readFileSync(file, 'utf8');
    const UPSTREAM_KEY = { ...REGISTRY_NAME_SCHEMA, not: { enum: ALIASES } };
    /** Every place in the chart that holds a registry name, and the rule it must carry. */
    const places = (schema: Record<string, any>): Array<[Record<string, unknown>, object]> => { // eslint-disable-line @typescript-eslint/no-explicit-any
      const p = schema.properties;
      return [
        [p.config.properties.defaultUpstream, UPSTREAM_KEY],
        [p.config.properties.upstreams.propertyNames, UPSTREAM_KEY],
        [p.upstreamCredentials.propertyNames, UPSTREAM_KEY],
        [p.nodeConfiguration.properties.registries.items, REGISTRY_NAME_SCHEMA],
      ];
    };

    it('carries the rule of domain/registry-name.ts everywhere it names a registry', () => {
      const schema = JSON.parse(text);
      const generated = structuredClone(schema);
      for (const [node, rule] of places(generated)) Object.assign(node, rule);
      if (process.env.UPDATE_CHART_SCHEMA === '1') writeFileSync(file, `${JSON.stringify(generated, null, 2)}\n`);
      assert.deepEqual(schema, generated, 'values.schema.json is out of step with src/domain/registry-name.ts: rerun this test with UPDATE_CHART_SCHEMA=1');
    });

    it('accepts exactly the upstream names the configuration accepts', () => {
      const node = JSON.parse(text).properties.config.properties.upstreams.propertyNames as { pattern: string; maxLength: number; not: { enum: string[] } };
      const re = new RegExp(node.pattern);
      const chartAccepts = (n: string) => n.length <= node.maxLength && re.test(n) && !node.not.enum.includes(n);
      assert.deepEqual(CORPUS.filter(chartAccepts), accepted);
    });
  });
});
