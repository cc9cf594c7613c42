/**
 * The client configurations in deploy/clients agree with each other and with hubcache: the same
 * registries everywhere, the DaemonSet carries exactly the certs.d files, the Kubernetes objects
 * validate, and the example hubcache configuration loads and routes every one of them. (The
 * containerd and podman files are also used as-is by test/e2e/containerd.test.ts and podman.test.ts.)
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { compileRepoFilter, resolveRepo } from '../../src/http/resolve-repo.js';
import { ROOT } from './support/metrics-catalog.js';

const DIR = join(ROOT, 'deploy', 'clients');
const read = (p: string) => readFileSync(join(DIR, p), 'utf8');
const MIRROR = 'hubcache.example:5000';
const REGISTRIES = ['docker.io', 'gcr.io', 'ghcr.io', 'mcr.microsoft.com', 'public.ecr.aws', 'quay.io', 'registry.k8s.io'];

describe('deploy/clients', () => {
  it('containerd: one hosts.toml per common registry, with its real server and hubcache as a pull/resolve host', () => {
    assert.deepEqual(readdirSync(join(DIR, 'containerd', 'certs.d')).sort(), REGISTRIES);
    for (const r of REGISTRIES) {
      const toml = read(`containerd/certs.d/${r}/hosts.toml`);
      const server = /^server = "(https:\/\/[^"]+)"$/m.exec(toml)?.[1];
      assert.equal(server, r === 'docker.io' ? 'https://registry-1.docker.io' : `https://${r}`, r);
      // Without a [host] table containerd ignores the file silently (docs/protocol.md#containerd).
      assert.match(toml, new RegExp(`^\\[host\\."http://${MIRROR.replace(/\./g, '\\.')}"\\]\\n  capabilities = \\["pull", "resolve"\\]$`, 'm'), r);
    }
  });

  it('the DaemonSet writes exactly the certs.d files, and its objects validate against the Kubernetes schemas', async () => {
    const docs = parseAllDocuments(read('kubernetes/containerd-mirror-daemonset.yaml')).map((d) => d.toJSON() as { apiVersion: string; kind: string; metadata: { name: string }; data?: Record<string, string>; spec?: any });
    assert.deepEqual(docs.map((d) => d.kind), ['ConfigMap', 'DaemonSet']);
    for (const o of docs) {
      const mod = (await import(`kubernetes-models/${o.apiVersion}`)) as Record<string, new (data: unknown) => { validate(): void }>;
      new mod[o.kind]!(o).validate();
    }
    const [cm, ds] = docs as [(typeof docs)[0], (typeof docs)[0]];
    for (const r of REGISTRIES) {
      const key = `${r.replace(/\./g, '_')}.toml`;
      assert.equal(cm.data![key], read(`containerd/certs.d/${r}/hosts.toml`), `${key} is the shipped hosts.toml`);
      assert.match(cm.data!['install.sh']!, new RegExp(`^install_hosts ${r.replace(/\./g, '\\.')} ${key.replace(/\./g, '\\.')}$`, 'm'));
    }
    const pod = ds.spec.template.spec;
    assert.equal(pod.volumes.find((v: any) => v.name === 'certs-d').hostPath.path, '/etc/containerd/certs.d');
    assert.equal(pod.volumes.find((v: any) => v.name === 'config').configMap.name, cm.metadata.name);
    assert.deepEqual(ds.spec.selector.matchLabels, ds.spec.template.metadata.labels);
    // The same images as the chart's node DaemonSet (helm/hubcache nodeConfiguration), so the two don't drift apart.
    const chart = (parseYaml(readFileSync(join(ROOT, 'helm', 'hubcache', 'values.yaml'), 'utf8')) as { nodeConfiguration: Record<'image' | 'pauseImage', { repository: string; tag: string }> }).nodeConfiguration;
    assert.deepEqual(pod.initContainers.map((c: any) => c.image), [`${chart.image.repository}:${chart.image.tag}`]);
    assert.deepEqual(pod.containers.map((c: any) => c.image), [`${chart.pauseImage.repository}:${chart.pauseImage.tag}`]);
  });

  it('k3s/RKE2 registries.yaml, podman registries.conf and daemon.json name hubcache for the same registries', () => {
    const k3s = parseYaml(read('k3s/registries.yaml')) as { mirrors: Record<string, { endpoint: string[] }> };
    assert.deepEqual(Object.keys(k3s.mirrors).sort(), REGISTRIES);
    for (const m of Object.values(k3s.mirrors)) assert.deepEqual(m.endpoint, [`http://${MIRROR}`]);

    const conf = read('podman/registries.conf');
    const blocks = conf.split(/^\[\[registry\]\]$/m).slice(1);
    assert.deepEqual(blocks.map((b) => /prefix = "([^"]+)"/.exec(b)![1]).sort(), REGISTRIES);
    for (const b of blocks) {
      const prefix = /prefix = "([^"]+)"/.exec(b)![1]!;
      // containers/image sends no ns: every registry but Docker Hub needs the path prefix.
      assert.match(b, new RegExp(`\\[\\[registry\\.mirror\\]\\]\\nlocation = "${MIRROR}${prefix === 'docker.io' ? '' : `/${prefix}`}"\\ninsecure = true`), prefix);
    }

    const daemon = JSON.parse(read('docker/daemon.json')) as Record<string, string[]>;
    assert.deepEqual(daemon['registry-mirrors'], [`http://${MIRROR}`]);
    assert.deepEqual(daemon['insecure-registries'], [MIRROR]);
  });

  it('the example hubcache.yaml loads and routes every shipped registry; its filters apply', () => {
    const c = loadConfig({
      file: join(DIR, 'hubcache.yaml'),
      // Its password files exist only in a real deployment: the environment replaces them.
      env: { HUBCACHE_UPSTREAMS_DOCKER_IO_PASSWORD: 'x', HUBCACHE_UPSTREAMS_REGISTRY_INTERNAL_EXAMPLE_5000_PASSWORD: 'y' },
    });
    for (const r of REGISTRIES) assert.ok(c.upstreams[r], r);
    const opts = {
      upstreams: new Set(Object.keys(c.upstreams)),
      defaultUpstream: c.defaultUpstream,
      filters: new Map(Object.entries(c.upstreams).flatMap(([n, u]) => (u.repositories ? [[n, compileRepoFilter(u.repositories)] as const] : []))),
    };
    for (const r of REGISTRIES) assert.equal(resolveRepo(opts, r === 'ghcr.io' ? 'myorg/app' : 'team/app', r).upstream, r);
    assert.equal(resolveRepo(opts, 'ghcr.io/myorg/tool', null).repo, 'myorg/tool');
    assert.throws(() => resolveRepo(opts, 'ghcr.io/someone/else', null), /may not be pulled/);
    assert.throws(() => resolveRepo(opts, 'restricted/x', 'registry.internal.example:5000'), /may not be pulled/);
    assert.deepEqual(c.upstreams['registry.internal.example:5000']!.allowedRedirectHosts, ['minio.internal.example:9000']);
  });
});
