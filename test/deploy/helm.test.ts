// The Helm chart, rendered with the real helm binary (tools/fetch-helm.sh) for several value sets:
// every object validated against the Kubernetes schemas (kubernetes-models), the wiring checked
// (ports, probes, credentials, checksums, node configuration) and the rendered config.yaml accepted
// by `hubcache config check`.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { renderReadme, undocumentedKeys } from '../../tools/helm-docs.mjs';
import { CHART, fetchHelm, Helm, type K8sObject, type Rendered } from './support/helm.js';
import { ROOT } from './support/metrics-catalog.js';
import { createTestCa, type TestCa } from '../support/test-ca.js';

const run = promisify(execFile);
const BIN = join(ROOT, 'bin', 'hubcache.js');

/** Validates one rendered object against the Kubernetes OpenAPI schema (kubernetes-models). */
async function validate(o: K8sObject): Promise<void> {
  if (o.apiVersion === 'monitoring.coreos.com/v1') return validateMonitoringCrd(o);
  // kubernetes-models is laid out by API group: kubernetes-models/v1, …/apps/v1, …/networking.k8s.io/v1.
  const mod = (await import(`kubernetes-models/${o.apiVersion}`)) as Record<string, new (data: unknown) => { validate(): void }>;
  const Model = mod[o.kind];
  assert.ok(Model, `no model for ${o.apiVersion} ${o.kind}`);
  try {
    new Model(o).validate();
  } catch (err) {
    throw new Error(`${o.kind} ${o.metadata.name}: ${(err as Error).message}`);
  }
}

/** ServiceMonitor and PrometheusRule are CRDs kubernetes-models doesn't know: their basic shape. */
function validateMonitoringCrd(o: K8sObject): void {
  assert.match(o.metadata.name, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  if (o.kind === 'ServiceMonitor') {
    assert.equal(typeof o.spec.selector.matchLabels, 'object');
    assert.ok(Array.isArray(o.spec.endpoints) && o.spec.endpoints.length > 0);
    for (const e of o.spec.endpoints) {
      assert.equal(typeof e.port, 'string');
      assert.match(e.path, /^\//);
      assert.match(e.interval, /^\d+(ms|s|m|h)$/);
      assert.match(e.scrapeTimeout, /^\d+(ms|s|m|h)$/);
    }
  } else if (o.kind === 'PrometheusRule') {
    assert.ok(Array.isArray(o.spec.groups) && o.spec.groups.length > 0);
    for (const g of o.spec.groups) {
      assert.equal(typeof g.name, 'string');
      for (const r of g.rules) {
        assert.ok(typeof r.alert === 'string' || typeof r.record === 'string');
        assert.equal(typeof r.expr, 'string');
        for (const v of Object.values({ ...r.labels, ...r.annotations })) assert.equal(typeof v, 'string');
      }
    }
  } else assert.fail(`unexpected ${o.kind}`);
}

async function validateAll(r: Rendered): Promise<void> {
  for (const o of r.objects) await validate(o);
  const names = r.objects.map((o) => `${o.kind}/${o.metadata.name}`);
  assert.equal(new Set(names).size, names.length, `duplicate objects: ${names}`);
  for (const o of r.objects) assert.equal(o.metadata.labels?.['app.kubernetes.io/instance'], 'hc', `${o.kind} ${o.metadata.name} lacks the instance label`);
}

const container = (d: K8sObject, name = 'hubcache') => d.spec.template.spec.containers.find((c: { name: string }) => c.name === name);
const portOf = (hostPort: string) => Number(hostPort.split(':').at(-1));
const configOf = (r: Rendered) => parse(r.get('ConfigMap', 'hc-hubcache').data['config.yaml']) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Where a mounted file lands in the container: the volume mount's path plus the projected item path. */
function mountedSecretFiles(d: K8sObject): Map<string, { secret: string; key: string }> {
  const files = new Map<string, { secret: string; key: string }>();
  const volumes = d.spec.template.spec.volumes as Array<Record<string, any>>; // eslint-disable-line @typescript-eslint/no-explicit-any
  for (const m of container(d).volumeMounts) {
    const v = volumes.find((x) => x.name === m.name)!;
    const sources = v.projected?.sources ?? (v.secret ? [{ secret: { name: v.secret.secretName, items: v.secret.items } }] : []);
    for (const s of sources) for (const item of s.secret?.items ?? []) files.set(`${m.mountPath}/${item.path}`, { secret: s.secret.name, key: item.key });
  }
  return files;
}

describe('helm/hubcache', () => {
  let helm: Helm;
  const tmp = mkdtempSync(join(tmpdir(), 'hubcache-chart-'));
  after(() => {
    rmSync(tmp, { recursive: true, force: true });
    helm?.dispose();
  });

  /** `hubcache config check` on a rendered config.yaml, as the container would run it (its env applied). */
  async function configCheck(r: Rendered, name: string, passwordFiles: Record<string, string> = {}, tlsPair?: { certificate: string; key: string }): Promise<string> {
    const config = configOf(r);
    // The TLS Secret exists only in the pod: a pair from a test CA stands in for it.
    if (config.tls) {
      assert.ok(tlsPair, 'unexpected tls in config.yaml');
      config.tls = { ...config.tls, ...tlsPair };
    }
    // Password files exist only in the pod: point them at local files with a stand-in secret.
    for (const [registry, up] of Object.entries(config.upstreams ?? {}) as Array<[string, { passwordFile?: string }]>) {
      if (!up.passwordFile) continue;
      assert.ok(passwordFiles[registry], `unexpected passwordFile for ${registry}`);
      const local = join(tmp, `${name}-${registry}.password`);
      writeFileSync(local, 'stand-in-token\n');
      up.passwordFile = local;
    }
    const file = join(tmp, `${name}.config.yaml`);
    writeFileSync(file, stringify(config));
    const env = Object.fromEntries((container(r.get('Deployment')).env ?? []).map((e: { name: string; value: string }) => [e.name, e.value]));
    const { stdout } = await run(process.execPath, [BIN, 'config', 'check', '--config', file], { env: { PATH: process.env.PATH, HOME: tmp, ...env }, encoding: 'utf8' }).catch((err: { stderr?: string }) => {
      throw new Error(`config check rejected the ${name} config.yaml: ${err.stderr}`);
    });
    return stdout;
  }

  before(() => {
    helm = new Helm(fetchHelm());
  });

  it('uses the pinned helm 4.1.4', async () => {
    const { stdout } = await helm.exec(['version', '--short']);
    assert.match(stdout, /^v4\.1\.4\+g05fa379/);
  });

  it('passes helm lint --strict, with defaults and with every feature on', async () => {
    assert.match(await helm.lint({}), /1 chart\(s\) linted, 0 chart\(s\) failed/);
    const everything = {
      ingress: { enabled: true, tls: [{ secretName: 'hubcache-tls', hosts: ['hubcache.example.com'] }] },
      serviceMonitor: { enabled: true },
      prometheusRule: { enabled: true },
      grafanaDashboard: { enabled: true },
      nodeConfiguration: { enabled: true },
      upstreamCredentials: { 'docker.io': { username: 'me', password: 'tok' } },
      tls: { secretName: 'hubcache-tls' },
    };
    assert.match(await helm.lint(everything), /0 chart\(s\) failed/);
  });

  it('documents every value in values.yaml and README.md is generated from it', () => {
    assert.deepEqual(undocumentedKeys(readFileSync(join(CHART, 'values.yaml'), 'utf8')), []);
    assert.ok(readFileSync(join(CHART, 'README.md'), 'utf8') === renderReadme(CHART), 'helm/hubcache/README.md is stale: run node tools/helm-docs.mjs');
  });

  it('keeps Chart.yaml appVersion equal to the package version', () => {
    const chart = parse(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as { appVersion: string };
    assert.equal(chart.appVersion, JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
  });

  describe('defaults', () => {
    let r: Rendered;
    before(async () => {
      r = await helm.template({});
    });

    it('renders valid objects: Deployment, Service, ConfigMap, PVC, PDB, ServiceAccount and nothing optional', async () => {
      await validateAll(r);
      assert.deepEqual(r.objects.map((o) => o.kind).sort(), ['ConfigMap', 'Deployment', 'PersistentVolumeClaim', 'PodDisruptionBudget', 'Service', 'ServiceAccount']);
    });

    it('exposes the port of config.listen and probes /healthz and /readyz on it', () => {
      const c = container(r.get('Deployment'));
      const port = portOf(configOf(r).listen);
      assert.equal(port, 5000);
      assert.deepEqual(c.ports, [{ name: 'http', containerPort: port, protocol: 'TCP' }]);
      assert.deepEqual(c.livenessProbe.httpGet, { path: '/healthz', port: 'http' });
      assert.deepEqual(c.startupProbe.httpGet, { path: '/healthz', port: 'http' });
      assert.deepEqual(c.readinessProbe.httpGet, { path: '/readyz', port: 'http' });
      const svc = r.get('Service');
      assert.deepEqual(svc.spec.ports.map((p: { targetPort: string }) => p.targetPort), ['http']);
      assert.deepEqual(svc.spec.selector, r.get('Deployment').spec.selector.matchLabels);
    });

    it('gives a start time to wait for the storage lock of a crashed container: startupProbe budget (period × failureThreshold) ≥ 60 s', () => {
      // After a crash the restarted container (same pod hostname, new PID namespace) waits up to 30 s
      // (storage.lockStaleAfter) for the old lock before it sweeps tmp/ and listens; a probe that
      // gave up first would restart it into the same wait, and the pod would crash-loop.
      const p = container(r.get('Deployment')).startupProbe;
      assert.equal(typeof p.periodSeconds, 'number');
      assert.equal(typeof p.failureThreshold, 'number');
      const budget = p.periodSeconds * p.failureThreshold;
      assert.ok(budget >= 60, `startupProbe budget ${p.periodSeconds}s × ${p.failureThreshold} = ${budget}s, want ≥ 60s`);
    });

    it('runs hubcache with --config on the rendered config.yaml, the store on the claim', () => {
      const d = r.get('Deployment');
      const c = container(d);
      assert.deepEqual(c.args, ['serve', '--config', '/etc/hubcache/config.yaml']);
      const configMount = c.volumeMounts.find((m: { mountPath: string }) => m.mountPath === '/etc/hubcache/config.yaml');
      const configVolume = d.spec.template.spec.volumes.find((v: { name: string }) => v.name === configMount.name);
      assert.equal(configVolume.configMap.name, r.get('ConfigMap').metadata.name);
      assert.equal(configMount.subPath, 'config.yaml');
      const store = c.volumeMounts.find((m: { mountPath: string }) => m.mountPath === configOf(r).storage.path);
      assert.ok(store, 'storage.path is not a volume mount');
      const storeVolume = d.spec.template.spec.volumes.find((v: { name: string }) => v.name === store.name);
      assert.equal(storeVolume.persistentVolumeClaim.claimName, r.get('PersistentVolumeClaim').metadata.name);
      // The image's ENV overrides the file: the chart sets the same values.
      const env = Object.fromEntries(c.env.map((e: { name: string; value: string }) => [e.name, e.value]));
      assert.equal(env.HUBCACHE_LISTEN, configOf(r).listen);
      assert.equal(env.HUBCACHE_STORAGE_PATH, configOf(r).storage.path);
      assert.equal(r.get('Deployment').spec.strategy.type, 'Recreate');
    });

    it('locks the pod down: non-root, read-only root, no privilege escalation, no capabilities, RuntimeDefault seccomp, /tmp on an emptyDir', () => {
      const spec = r.get('Deployment').spec.template.spec;
      const c = container(r.get('Deployment'));
      assert.equal(spec.securityContext.runAsNonRoot, true);
      assert.notEqual(spec.securityContext.runAsUser, 0);
      assert.equal(spec.securityContext.seccompProfile.type, 'RuntimeDefault');
      assert.equal(c.securityContext.readOnlyRootFilesystem, true);
      assert.equal(c.securityContext.allowPrivilegeEscalation, false);
      assert.equal(c.securityContext.runAsNonRoot, true);
      assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
      assert.equal(c.securityContext.seccompProfile.type, 'RuntimeDefault');
      const tmpMount = c.volumeMounts.find((m: { mountPath: string }) => m.mountPath === '/tmp');
      assert.ok(spec.volumes.find((v: { name: string }) => v.name === tmpMount.name).emptyDir, '/tmp is not an emptyDir');
      assert.equal(spec.automountServiceAccountToken, false);
      assert.deepEqual(configOf(r).shutdown, { delay: '5s', timeout: '30s' }, 'readiness fails for 5s before the listener closes');
      assert.ok(spec.terminationGracePeriodSeconds * 1000 > 5_000 + 30_000, 'grace period must exceed shutdown.delay + timeout (5s + 30s)');
    });

    it('renders a config.yaml that hubcache config check accepts', async () => {
      assert.match(await configCheck(r, 'defaults'), /configuration OK/);
    });

    it('bounds client connections (issue #11), with a blob buffer pool well inside the memory limit', () => {
      assert.deepEqual(configOf(r).server, { headersTimeout: '60s', keepAliveTimeout: '65s', sendTimeout: '60s', maxConnections: 4096, maxConnectionsPerClient: 256, blobBufferPool: '64MiB', trustedProxies: [] });
      assert.equal(container(r.get('Deployment')).resources.limits.memory, '1Gi', 'revisit server.blobBufferPool with the memory limit');
    });

    it('runs one replica, replaced with Recreate, and its PodDisruptionBudget lets a node drain evict it', () => {
      const d = r.get('Deployment');
      assert.equal(d.spec.replicas, 1);
      assert.deepEqual(d.spec.strategy, { type: 'Recreate' });
      const pdb = r.get('PodDisruptionBudget');
      // minAvailable: 1 (or maxUnavailable: 0) with one replica would block every eviction.
      assert.equal(pdb.spec.maxUnavailable, 1);
      assert.equal(pdb.spec.minAvailable, undefined);
      assert.deepEqual(pdb.spec.selector.matchLabels, d.spec.selector.matchLabels);
    });
  });

  it('keeps an explicit podDisruptionBudget.maxUnavailable: 0, and allows RollingUpdate when each pod has its own emptyDir', async () => {
    const blocking = await helm.template({ podDisruptionBudget: { maxUnavailable: 0 } });
    assert.equal(blocking.get('PodDisruptionBudget').spec.maxUnavailable, 0);
    const byMin = await helm.template({ podDisruptionBudget: { minAvailable: '50%', maxUnavailable: null } });
    assert.deepEqual(byMin.get('PodDisruptionBudget').spec.minAvailable, '50%');
    assert.equal(byMin.get('PodDisruptionBudget').spec.maxUnavailable, undefined);
    const rolling = await helm.template({ updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } }, persistence: { enabled: false } });
    assert.equal(rolling.get('Deployment').spec.strategy.type, 'RollingUpdate');
  });

  it('the bounded store (issue #13): no cap by default; the cap, floor, watermarks and retention reach config.yaml, which config check accepts', async () => {
    const defaults = configOf(await helm.template({}));
    assert.deepEqual(defaults.storage, { path: '/var/lib/hubcache', accessFlushInterval: '10s', eviction: { highWatermark: 95, lowWatermark: 85, interval: '1m', concurrency: 4 } });
    assert.equal(defaults.cache.tagRetention, '90d');
    const capped = await helm.template({ config: { storage: { maxSize: '80GiB', minFreeSpace: '10%', eviction: { highWatermark: 90, lowWatermark: 70 } }, cache: { tagRetention: '30d' } } });
    assert.deepEqual(configOf(capped).storage, { path: '/var/lib/hubcache', maxSize: '80GiB', minFreeSpace: '10%', accessFlushInterval: '10s', eviction: { highWatermark: 90, lowWatermark: 70, interval: '1m', concurrency: 4 } });
    assert.match(await configCheck(capped, 'capped'), /configuration OK/);
  });

  describe('repository filters on upstreams', () => {
    // Every upstream key the values schema accepts; config.yaml must carry them unchanged.
    const ghcr = {
      url: 'https://ghcr.io',
      tagTtl: '10m',
      allowedRealmHosts: ['https://ghcr.io', 'auth.ghcr.example:8443'],
      allowedRedirectHosts: ['cdn.internal:8443'],
      repositories: { allow: ['myorg/**', 'library/alpine'], deny: ['myorg/secret-*'] },
    };
    let r: Rendered;
    before(async () => {
      r = await helm.template({ config: { upstreams: { 'docker.io': { repositories: { deny: ['evilcorp/**'] } }, 'ghcr.io': ghcr } } });
    });

    it('renders valid objects and passes helm lint --strict', async () => {
      await validateAll(r);
      assert.match(await helm.lint({ config: { upstreams: { 'ghcr.io': { url: 'https://ghcr.io', repositories: { allow: ['myorg/**'], deny: ['myorg/secret-?'] } } } } }), /0 chart\(s\) failed/);
    });

    it('passes every upstream key through to config.yaml', () => {
      const { upstreams } = configOf(r);
      assert.deepEqual(upstreams['docker.io'], { url: 'https://registry-1.docker.io', tagTtl: '5m', repositories: { deny: ['evilcorp/**'] } });
      assert.deepEqual(upstreams['ghcr.io'], ghcr);
    });

    it('renders a config.yaml that hubcache config check accepts', async () => {
      assert.match(await configCheck(r, 'filters'), /configuration OK/);
    });
  });

  describe('ingress, ServiceMonitor, PrometheusRule and Grafana dashboard on, metrics on their own port', () => {
    let r: Rendered;
    before(async () => {
      r = await helm.template({
        config: { listen: '0.0.0.0:8080', metrics: { listen: '0.0.0.0:9102' } },
        service: { port: 80 },
        ingress: { enabled: true, className: 'nginx', tls: [{ secretName: 'hubcache-tls', hosts: ['hubcache.example.com'] }] },
        serviceMonitor: { enabled: true, labels: { release: 'kube-prometheus-stack' } },
        prometheusRule: { enabled: true, labels: { release: 'kube-prometheus-stack' } },
        grafanaDashboard: { enabled: true },
      });
    });

    it('renders valid objects', async () => {
      await validateAll(r);
      for (const kind of ['Ingress', 'ServiceMonitor', 'PrometheusRule']) assert.equal(r.all(kind).length, 1, kind);
    });

    it('follows the configured ports: container, probes, Service, Ingress and ServiceMonitor', () => {
      const c = container(r.get('Deployment'));
      const ports = Object.fromEntries(c.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]));
      assert.deepEqual(ports, { http: 8080, metrics: 9102 });
      assert.equal(c.livenessProbe.httpGet.port, 'http');
      assert.equal(c.readinessProbe.httpGet.port, 'http');
      const svc = r.get('Service');
      const svcPorts = Object.fromEntries(svc.spec.ports.map((p: { name: string; port: number; targetPort: string }) => [p.name, [p.port, p.targetPort]]));
      assert.deepEqual(svcPorts, { http: [80, 'http'], metrics: [9102, 'metrics'] });
      const ingress = r.get('Ingress');
      assert.deepEqual(ingress.spec.rules[0].http.paths[0].backend.service, { name: svc.metadata.name, port: { name: 'http' } });
      assert.deepEqual(ingress.spec.tls, [{ secretName: 'hubcache-tls', hosts: ['hubcache.example.com'] }]);
      const sm = r.get('ServiceMonitor');
      assert.equal(sm.spec.endpoints[0].port, 'metrics');
      assert.equal(sm.spec.endpoints[0].path, '/metrics');
      for (const [k, v] of Object.entries(sm.spec.selector.matchLabels)) assert.equal(svc.metadata.labels![k], v, `the ServiceMonitor selects ${k}=${v}`);
      assert.equal(sm.metadata.labels!.release, 'kube-prometheus-stack');
    });

    it('ships deploy/prometheus/alerts.yaml as the PrometheusRule and the dashboard for the Grafana sidecar', () => {
      const alerts = parse(readFileSync(join(ROOT, 'deploy/prometheus/alerts.yaml'), 'utf8')) as { groups: unknown };
      assert.deepEqual(r.get('PrometheusRule').spec.groups, alerts.groups);
      const dashboard = r.get('ConfigMap', 'hc-hubcache-dashboard');
      assert.equal(dashboard.metadata.labels!.grafana_dashboard, '1');
      assert.deepEqual(JSON.parse(dashboard.data['hubcache.json']), JSON.parse(readFileSync(join(ROOT, 'deploy/grafana/hubcache.json'), 'utf8')));
    });

    it('renders a config.yaml that hubcache config check accepts', async () => {
      assert.equal(configOf(r).metrics.listen, '0.0.0.0:9102');
      assert.match(await configCheck(r, 'monitoring'), /configuration OK/);
    });
  });

  describe('credentials and store from existing objects', () => {
    let r: Rendered;
    before(async () => {
      r = await helm.template({
        upstreamCredentials: {
          'docker.io': { username: 'me', existingSecret: 'dockerhub', existingSecretKey: 'token' },
          'ghcr.io': { username: 'bot', existingSecret: 'ghcr' },
        },
        config: { upstreams: { 'ghcr.io': { url: 'https://ghcr.io', tagTtl: '10m' } } },
        persistence: { existingClaim: 'hubcache-store' },
        tls: { secretName: 'hubcache-tls' },
      });
    });

    it('renders valid objects, no claim and no Secret of its own', async () => {
      await validateAll(r);
      assert.equal(r.all('PersistentVolumeClaim').length, 0);
      assert.equal(r.all('Secret').length, 0);
      const store = r.get('Deployment').spec.template.spec.volumes.find((v: { name: string }) => v.name === 'store');
      assert.deepEqual(store.persistentVolumeClaim, { claimName: 'hubcache-store' });
    });

    it('mounts each secret key as a file and points passwordFile at it', () => {
      const files = mountedSecretFiles(r.get('Deployment'));
      const config = configOf(r);
      assert.equal(config.upstreams['docker.io'].username, 'me');
      assert.equal(config.upstreams['ghcr.io'].username, 'bot');
      assert.equal(config.upstreams['ghcr.io'].tagTtl, '10m');
      assert.deepEqual(files.get(config.upstreams['docker.io'].passwordFile), { secret: 'dockerhub', key: 'token' });
      assert.deepEqual(files.get(config.upstreams['ghcr.io'].passwordFile), { secret: 'ghcr', key: 'password' });
      assert.equal(config.upstreams['docker.io'].password, undefined);
      const tlsMount = container(r.get('Deployment')).volumeMounts.find((m: { name: string }) => m.name === 'tls');
      assert.equal(tlsMount.mountPath, '/etc/hubcache/tls');
    });

    it('renders a config.yaml that hubcache config check accepts', async () => {
      assert.match(await configCheck(r, 'existing', { 'docker.io': 'x', 'ghcr.io': 'y' }), /configuration OK/);
    });
  });

  describe('users and permissions: htpasswd from a Secret, rules in config.auth', () => {
    const auth = {
      challenge: 'bearer',
      realm: 'https://registry.example.com/auth/token',
      groups: { devs: ['alice'] },
      rules: [{ repositories: ['myorg/**'], groups: ['devs'], actions: ['pull', 'push'], cidrs: ['10.0.0.0/8'] }],
      anonymousPullCidrs: ['10.0.0.0/8'],
    };
    let r: Rendered;
    before(async () => {
      r = await helm.template({ auth: { htpasswdSecret: 'hubcache-users' }, config: { auth } });
    });

    it('renders valid objects and passes helm lint --strict', async () => {
      await validateAll(r);
      assert.match(await helm.lint({ auth: { htpasswdSecret: 'hubcache-users' }, config: { auth } }), /0 chart\(s\) failed/);
    });

    it('mounts the Secret as a directory (updates reach the pod) and points auth.htpasswd at it; passes the rules through', () => {
      const d = r.get('Deployment');
      const mount = container(d).volumeMounts.find((m: { name: string }) => m.name === 'htpasswd');
      assert.deepEqual(mount, { name: 'htpasswd', mountPath: '/etc/hubcache/auth', readOnly: true });
      const volume = d.spec.template.spec.volumes.find((v: { name: string }) => v.name === 'htpasswd');
      assert.deepEqual(volume.secret, { secretName: 'hubcache-users', defaultMode: 288, items: [{ key: 'htpasswd', path: 'htpasswd' }] });
      const config = configOf(r);
      assert.equal(config.auth.htpasswd, '/etc/hubcache/auth/htpasswd');
      assert.deepEqual(config.auth.rules, auth.rules);
      assert.deepEqual(config.auth.anonymousPullCidrs, ['10.0.0.0/8']);
      assert.equal(config.auth.realm, auth.realm);
    });

    it('renders a config.yaml that hubcache config check accepts', async () => {
      assert.match(await configCheck(r, 'auth'), /configuration OK/);
    });

    it('without the Secret auth stays off: no htpasswd in config.yaml, no mount', async () => {
      const off = await helm.template({});
      assert.equal(configOf(off).auth.htpasswd, undefined);
      assert.equal(configOf(off).auth.realm, undefined);
      assert.equal(container(off.get('Deployment')).volumeMounts.find((m: { name: string }) => m.name === 'htpasswd'), undefined);
    });

    it('values.schema.json refuses a rule with an unknown action', async () => {
      await assert.rejects(helm.template({ config: { auth: { rules: [{ repositories: ['a/*'], users: ['x'], actions: ['write'] }] } } }), /values don't meet the specifications of the schema/);
    });
  });

  describe('TLS from a kubernetes.io/tls Secret (tls.enabled)', () => {
    const values = { tls: { enabled: true, secretName: 'hubcache-tls' }, config: { server: { trustedProxies: ['10.0.0.0/8'] } } };
    let r: Rendered;
    let ca: TestCa;
    before(async () => {
      ca = createTestCa();
      r = await helm.template(values);
    });
    after(() => ca.close());

    it('renders valid objects and passes helm lint --strict', async () => {
      await validateAll(r);
      assert.match(await helm.lint(values), /0 chart\(s\) failed/);
    });

    it('mounts the Secret as a directory (a renewal reaches the pod), points tls.certificate/key at it, probes over HTTPS', () => {
      const d = r.get('Deployment');
      assert.deepEqual(container(d).volumeMounts.find((m: { name: string }) => m.name === 'tls'), { name: 'tls', mountPath: '/etc/hubcache/tls', readOnly: true });
      assert.deepEqual(d.spec.template.spec.volumes.find((v: { name: string }) => v.name === 'tls').secret, { secretName: 'hubcache-tls', defaultMode: 288 });
      assert.deepEqual(configOf(r).tls, { certificate: '/etc/hubcache/tls/tls.crt', key: '/etc/hubcache/tls/tls.key' });
      for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) assert.equal(container(d)[probe].httpGet.scheme, 'HTTPS', probe);
      assert.deepEqual(configOf(r).server.trustedProxies, ['10.0.0.0/8']);
    });

    it('renders a config.yaml that hubcache config check accepts', async () => {
      const { certificate, key } = ca.issueServer('chart');
      assert.match(await configCheck(r, 'tls', {}, { certificate, key }), /configuration OK/);
    });

    it('off by default: no tls in config.yaml, probes over HTTP, a mounted Secret alone changes nothing', async () => {
      for (const off of [await helm.template({}), await helm.template({ tls: { secretName: 'for-a-sidecar' } })]) {
        assert.equal(configOf(off).tls, undefined);
        assert.equal(container(off.get('Deployment')).readinessProbe.httpGet.scheme, undefined);
      }
    });

    it('refuses tls.enabled without a Secret, and a ServiceMonitor scraping the HTTPS port (metrics need config.metrics.listen)', async () => {
      await assert.rejects(helm.template({ tls: { enabled: true } }), /tls\.enabled needs tls\.secretName/);
      await assert.rejects(helm.template({ ...values, serviceMonitor: { enabled: true } }), /serviceMonitor\.enabled with tls\.enabled needs config\.metrics\.listen/);
      const scraped = await helm.template({ ...values, config: { metrics: { listen: '0.0.0.0:9102' } }, serviceMonitor: { enabled: true } });
      assert.equal(scraped.get('ServiceMonitor').spec.endpoints[0].port, 'metrics');
    });
  });

  describe('credentials from values, store on an emptyDir', () => {
    it('creates the Secret, mounts it, and rolls the pods when it changes (checksum/secret)', async () => {
      const values = (password: string) => ({ upstreamCredentials: { 'docker.io': { username: 'me', password } }, persistence: { enabled: false } });
      const r = await helm.template(values('dckr_pat_one'));
      await validateAll(r);
      const secret = r.get('Secret');
      assert.equal(Buffer.from(secret.data['docker.io'], 'base64').toString(), 'dckr_pat_one');
      const file = mountedSecretFiles(r.get('Deployment')).get(configOf(r).upstreams['docker.io'].passwordFile);
      assert.deepEqual(file, { secret: secret.metadata.name, key: 'docker.io' });
      assert.ok(!r.get('ConfigMap').data['config.yaml'].includes('dckr_pat_one'), 'the password leaked into the ConfigMap');
      assert.equal(r.all('PersistentVolumeClaim').length, 0);
      assert.deepEqual(r.get('Deployment').spec.template.spec.volumes.find((v: { name: string }) => v.name === 'store').emptyDir, {});

      const other = await helm.template(values('dckr_pat_two'));
      const a = r.get('Deployment').spec.template.metadata.annotations;
      const b = other.get('Deployment').spec.template.metadata.annotations;
      assert.notEqual(a['checksum/secret'], b['checksum/secret']);
      assert.equal(a['checksum/config'], b['checksum/config']);
      assert.match(await configCheck(r, 'created', { 'docker.io': 'x' }), /configuration OK/);
    });

    it('changes checksum/config when the configuration changes, and only then', async () => {
      const annotations = async (values: object) => (await helm.template(values)).get('Deployment').spec.template.metadata.annotations;
      const base = await annotations({});
      assert.match(base['checksum/config'], /^[0-9a-f]{64}$/);
      assert.notEqual((await annotations({ config: { log: { level: 'debug' } } }))['checksum/config'], base['checksum/config']);
      assert.notEqual((await annotations({ config: { upstreams: { 'docker.io': { tagTtl: '10m' } } } }))['checksum/config'], base['checksum/config']);
      assert.equal((await annotations({ resources: { limits: { memory: '2Gi' } } }))['checksum/config'], base['checksum/config']);
    });
  });

  describe('node configuration DaemonSet', () => {
    let r: Rendered;
    before(async () => {
      r = await helm.template({
        service: { clusterIP: '10.96.0.50' },
        config: { upstreams: { 'ghcr.io': { url: 'https://ghcr.io' } } },
        nodeConfiguration: { enabled: true },
      });
    });

    it('renders a valid DaemonSet on every node that writes into containerd certs.d through a hostPath', async () => {
      await validateAll(r);
      const ds = r.get('DaemonSet');
      const spec = ds.spec.template.spec;
      assert.deepEqual(spec.tolerations, [{ operator: 'Exists' }]);
      const hostPath = spec.volumes.find((v: { hostPath?: unknown }) => v.hostPath).hostPath;
      assert.deepEqual(hostPath, { path: '/etc/containerd/certs.d', type: 'DirectoryOrCreate' });
      assert.equal(spec.initContainers.length, 1);
      assert.deepEqual(spec.initContainers[0].command, ['sh', '/config/install.sh']);
      assert.deepEqual(spec.initContainers[0].securityContext.capabilities.drop, ['ALL']);
      assert.equal(spec.containers[0].image, 'registry.k8s.io/pause:3.10');
      assert.equal(spec.containers[0].securityContext.runAsNonRoot, true);
      assert.match(ds.spec.template.metadata.annotations['checksum/node-config'], /^[0-9a-f]{64}$/);
    });

    it('writes hosts.toml files naming the hubcache Service with pull and resolve capabilities', async () => {
      const cm = r.get('ConfigMap', 'hc-hubcache-node-config');
      // Run the DaemonSet's script for real, against a directory standing in for the node.
      const config = join(tmp, 'node-config');
      const certs = join(tmp, 'certs.d');
      mkdirSync(config);
      mkdirSync(certs);
      for (const [key, value] of Object.entries(cm.data as Record<string, string>)) writeFileSync(join(config, key), value);
      const script = cm.data['install.sh'].replaceAll('/host/certs.d', certs).replaceAll('/config/', `${config}/`);
      writeFileSync(join(config, 'install.sh'), script);
      chmodSync(join(config, 'install.sh'), 0o755);
      await run('sh', [join(config, 'install.sh')]);
      const dockerHub = readFileSync(join(certs, 'docker.io', 'hosts.toml'), 'utf8');
      assert.match(dockerHub, /^server = "https:\/\/registry-1\.docker\.io"$/m);
      assert.match(dockerHub, /^\[host\."http:\/\/10\.96\.0\.50:5000"\]\n {2}capabilities = \["pull", "resolve"\]$/m);
      const ghcr = readFileSync(join(certs, 'ghcr.io', 'hosts.toml'), 'utf8');
      assert.match(ghcr, /^server = "https:\/\/ghcr\.io"$/m);
      assert.match(ghcr, /capabilities = \["pull", "resolve"\]/);
    });

    it('defaults the mirror to the Service DNS name and tells how to point every client at it', async () => {
      const dns = await helm.template({ nodeConfiguration: { enabled: true, registries: ['docker.io'] } });
      const toml = dns.get('ConfigMap', 'hc-hubcache-node-config').data['docker.io.toml'];
      assert.match(toml, /\[host\."http:\/\/hc-hubcache\.mirror\.svc\.cluster\.local:5000"\]/);
      assert.match(toml, /capabilities = \["pull", "resolve"\]/);
      const notes = await helm.notes({ nodeConfiguration: { enabled: true } });
      for (const s of ['hosts.toml', 'daemon.json', 'registry-mirrors', 'registries.conf', '[[registry.mirror]]', 'hc-hubcache.mirror.svc.cluster.local:5000', 'WARNING']) {
        assert.ok(notes.includes(s), `NOTES lacks ${s}`);
      }
    });
  });

  describe('several replicas (issue #15): the s3 driver and a Redis', () => {
    const replicated = {
      replicaCount: 3,
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
      config: {
        storage: { driver: 's3', bucket: 'hubcache', endpoint: 'http://rgw.storage:7480', region: 'eu-west-1', forcePathStyle: true, maxSize: '500GiB' },
        cluster: { redis: { url: 'redis://redis.cache:6379/0' } },
        metrics: { listen: '0.0.0.0:9090' },
      },
      s3Credentials: { existingSecret: 'rgw-user' },
      redisPassword: { password: 'redis-s3cr3t' },
    };
    let r: Rendered;
    before(async () => {
      r = await helm.template(replicated);
    });

    it('renders valid objects: no claim, a NetworkPolicy, the created Secret; passes helm lint --strict', async () => {
      await validateAll(r);
      assert.equal(r.all('PersistentVolumeClaim').length, 0, 'the store is the bucket: nothing to attach');
      assert.deepEqual(r.objects.map((o) => o.kind).sort(), ['ConfigMap', 'Deployment', 'NetworkPolicy', 'PodDisruptionBudget', 'Secret', 'Service', 'ServiceAccount'].sort());
      assert.match(await helm.lint(replicated), /0 chart\(s\) failed/);
    });

    it('runs replicaCount pods with RollingUpdate, spread across nodes (hard) and zones (soft), one at a time through drains', () => {
      const d = r.get('Deployment');
      assert.equal(d.spec.replicas, 3);
      assert.equal(d.spec.strategy.type, 'RollingUpdate');
      const spread = d.spec.template.spec.topologySpreadConstraints as Array<Record<string, any>>; // eslint-disable-line @typescript-eslint/no-explicit-any
      assert.deepEqual(
        spread.map((c) => [c.topologyKey, c.whenUnsatisfiable, c.maxSkew]),
        [
          ['kubernetes.io/hostname', 'DoNotSchedule', 1],
          ['topology.kubernetes.io/zone', 'ScheduleAnyway', 1],
        ],
      );
      for (const c of spread) assert.deepEqual(c.labelSelector.matchLabels, d.spec.selector.matchLabels);
      assert.equal(r.get('PodDisruptionBudget').spec.maxUnavailable, 1);
      // No claim: the content is in the bucket. The replica's own directory (spool of fills in
      // progress) is an emptyDir at the store's usual path, which the image's env names.
      assert.deepEqual(d.spec.template.spec.volumes.find((v: { name: string }) => v.name === 'store'), { name: 'store', emptyDir: {} });
      assert.equal(r.all('PersistentVolumeClaim').length, 0);
      assert.equal(container(d).env.find((e: { name: string }) => e.name === 'HUBCACHE_STORAGE_PATH').value, '/var/lib/hubcache');
    });

    it('renders the s3 and cluster keys as named; credentials and the Redis password are files from Secrets, never in the ConfigMap', () => {
      const config = configOf(r);
      const d = r.get('Deployment');
      assert.deepEqual(
        { ...config.storage, eviction: undefined },
        {
          driver: 's3',
          path: '/var/lib/hubcache',
          bucket: 'hubcache',
          endpoint: 'http://rgw.storage:7480',
          region: 'eu-west-1',
          forcePathStyle: true,
          maxSize: '500GiB',
          accessFlushInterval: '10s',
          accessKeyIdFile: '/etc/hubcache/replica-secrets/s3-access-key-id',
          secretAccessKeyFile: '/etc/hubcache/replica-secrets/s3-secret-access-key',
          eviction: undefined,
        },
      );
      assert.deepEqual(config.cluster, {
        peerListen: '0.0.0.0:5001',
        fillLeaseTtl: '10s',
        peerSecretFile: '/etc/hubcache/replica-secrets/peer-secret',
        redis: { url: 'redis://redis.cache:6379/0', passwordFile: '/etc/hubcache/replica-secrets/redis-password' },
      });
      const files = mountedSecretFiles(d);
      assert.deepEqual(files.get(config.storage.accessKeyIdFile), { secret: 'rgw-user', key: 'accessKeyId' });
      assert.deepEqual(files.get(config.storage.secretAccessKeyFile), { secret: 'rgw-user', key: 'secretAccessKey' });
      const created = r.get('Secret', 'hc-hubcache-replicas');
      assert.deepEqual(files.get(config.cluster.redis.passwordFile), { secret: created.metadata.name, key: 'redis-password' });
      assert.equal(Buffer.from(created.data['redis-password'], 'base64').toString(), 'redis-s3cr3t');
      assert.deepEqual(Object.keys(created.data), ['peer-secret', 'redis-password'], 'the S3 keys come from the existing Secret');
      assert.ok(!r.get('ConfigMap').data['config.yaml'].includes('redis-s3cr3t'));
    });

    it('advertises the pod IP on the follow port, which only the release own pods may reach (NetworkPolicy); no Service port for it', () => {
      const d = r.get('Deployment');
      const env = container(d).env as Array<{ name: string; value?: string; valueFrom?: { fieldRef: { fieldPath: string } } }>;
      const podIp = env.findIndex((e) => e.name === 'POD_IP');
      const advertise = env.findIndex((e) => e.name === 'HUBCACHE_CLUSTER_ADVERTISE_URL');
      assert.equal(env[podIp]!.valueFrom!.fieldRef.fieldPath, 'status.podIP');
      assert.ok(podIp >= 0 && podIp < advertise, 'POD_IP is defined before the variable that refers to it');
      assert.equal(env[advertise]!.value, 'http://$(POD_IP):5001');
      assert.deepEqual(
        container(d).ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]),
        [
          ['http', 5000],
          ['metrics', 9090],
          ['peer', 5001],
        ],
      );
      assert.ok(!r.get('Service').spec.ports.some((p: { port: number }) => p.port === 5001));
      const np = r.get('NetworkPolicy');
      assert.deepEqual(np.spec.podSelector.matchLabels, d.spec.selector.matchLabels);
      assert.deepEqual(np.spec.policyTypes, ['Ingress']);
      const rules = np.spec.ingress as Array<{ from?: Array<{ podSelector: { matchLabels: object } }>; ports: Array<{ port: number }> }>;
      const open = rules.filter((rule) => rule.from === undefined).flatMap((rule) => rule.ports.map((p) => p.port));
      assert.deepEqual(open.sort(), [5000, 9090], 'registry and metrics ports open to every client');
      const peer = rules.filter((rule) => rule.ports.some((p) => p.port === 5001));
      assert.equal(peer.length, 1);
      assert.deepEqual(peer[0]!.from, [{ podSelector: { matchLabels: d.spec.selector.matchLabels } }]);
    });

    it('autoscaling: an autoscaling/v2 HPA on CPU owns the replica count', async () => {
      const scaled = await helm.template({ ...replicated, autoscaling: { enabled: true, minReplicas: 3, maxReplicas: 9, targetCPUUtilizationPercentage: 60 } });
      await validateAll(scaled);
      const hpa = scaled.get('HorizontalPodAutoscaler');
      assert.equal(hpa.apiVersion, 'autoscaling/v2');
      assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: scaled.get('Deployment').metadata.name });
      assert.deepEqual([hpa.spec.minReplicas, hpa.spec.maxReplicas], [3, 9]);
      assert.deepEqual(hpa.spec.metrics, [{ type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 60 } } }]);
      assert.equal(scaled.get('Deployment').spec.replicas, undefined, 'the HPA sets it; a fixed value would fight it on every upgrade');
    });

    it('the hot cache: an emptyDir or a claim per pod (generic ephemeral volume) at storage.hotCache.path; S3 keys in a created Secret', async () => {
      const values = (volume: string) => ({
        ...replicated,
        config: { ...replicated.config, storage: { ...replicated.config.storage, hotCache: { maxSize: '8GiB' } } },
        hotCache: { enabled: true, volume, size: '20Gi', storageClass: 'local-ssd' },
        s3Credentials: { accessKeyId: 'AKIAEXAMPLE', secretAccessKey: 'shh' },
      });
      for (const volume of ['emptyDir', 'ephemeral']) {
        const hot = await helm.template(values(volume));
        await validateAll(hot);
        const d = hot.get('Deployment');
        const config = configOf(hot);
        assert.deepEqual(config.storage.hotCache, { path: '/var/cache/hubcache', maxSize: '8GiB' });
        assert.equal(container(d).volumeMounts.find((m: { name: string }) => m.name === 'hot-cache').mountPath, '/var/cache/hubcache');
        const v = d.spec.template.spec.volumes.find((x: { name: string }) => x.name === 'hot-cache');
        if (volume === 'emptyDir') assert.deepEqual(v.emptyDir, { sizeLimit: '20Gi' });
        else {
          assert.equal(v.ephemeral.volumeClaimTemplate.spec.resources.requests.storage, '20Gi');
          assert.equal(v.ephemeral.volumeClaimTemplate.spec.storageClassName, 'local-ssd');
        }
        const secret = hot.get('Secret', 'hc-hubcache-replicas');
        assert.deepEqual(Object.keys(secret.data).sort(), ['peer-secret', 'redis-password', 's3-access-key-id', 's3-secret-access-key']);
        assert.deepEqual(mountedSecretFiles(d).get(config.storage.secretAccessKeyFile), { secret: 'hc-hubcache-replicas', key: 's3-secret-access-key' });
        assert.ok(!hot.get('ConfigMap').data['config.yaml'].includes('AKIAEXAMPLE'));
      }
    });

    it('gives the replicas a shared peer secret: generated into the created Secret, or from an existing one; never in the ConfigMap', async () => {
      const config = configOf(r);
      const files = mountedSecretFiles(r.get('Deployment'));
      assert.deepEqual(files.get(config.cluster.peerSecretFile), { secret: 'hc-hubcache-replicas', key: 'peer-secret' });
      const generated = Buffer.from(r.get('Secret', 'hc-hubcache-replicas').data['peer-secret'], 'base64').toString();
      assert.match(generated, /^[A-Za-z0-9]{48}$/);
      assert.ok(!r.get('ConfigMap').data['config.yaml'].includes(generated));
      // An existing Secret: mounted under its key, nothing generated.
      const own = await helm.template({ ...replicated, peerSecret: { existingSecret: 'hubcache-peer', existingSecretKey: 'token' } });
      assert.deepEqual(mountedSecretFiles(own.get('Deployment')).get(configOf(own).cluster.peerSecretFile), { secret: 'hubcache-peer', key: 'token' });
      assert.deepEqual(Object.keys(own.get('Secret', 'hc-hubcache-replicas').data), ['redis-password']);
      // One pod, no cluster: no peer endpoint, no secret.
      const single = await helm.template({});
      assert.equal(configOf(single).cluster, undefined);
      assert.equal(single.all('Secret').length, 0);
    });

    it('rolls the pods when the Redis password or the S3 keys change (checksum/secret)', async () => {
      const annotations = async (values: object) => (await helm.template(values)).get('Deployment').spec.template.metadata.annotations;
      const a = await annotations(replicated);
      const b = await annotations({ ...replicated, redisPassword: { password: 'another' } });
      const c = await annotations({ ...replicated, s3Credentials: { existingSecret: 'rgw-user-2' } });
      assert.notEqual(a['checksum/secret'], b['checksum/secret']);
      assert.notEqual(a['checksum/secret'], c['checksum/secret']);
    });

    it('renders a config.yaml that hubcache config check accepts', async () => {
      const config = configOf(r);
      for (const [k, f] of [['storage', 'accessKeyIdFile'], ['storage', 'secretAccessKeyFile']] as const) {
        const local = join(tmp, `replicated-${f}`);
        writeFileSync(local, 'stand-in\n');
        config[k][f] = local;
      }
      const redisFile = join(tmp, 'replicated-redis-password');
      writeFileSync(redisFile, 'stand-in\n');
      config.cluster.redis.passwordFile = redisFile;
      const peerFile = join(tmp, 'replicated-peer-secret');
      writeFileSync(peerFile, 'stand-in\n');
      config.cluster.peerSecretFile = peerFile;
      const file = join(tmp, 'replicated.config.yaml');
      writeFileSync(file, stringify(config));
      const { stdout } = await run(process.execPath, [BIN, 'config', 'check', '--config', file], { env: { PATH: process.env.PATH, HOME: tmp, HUBCACHE_CLUSTER_ADVERTISE_URL: 'http://10.1.2.3:5001' }, encoding: 'utf8' });
      assert.match(stdout, /configuration OK/);
    });

    it('the filesystem shape is unchanged by the new values: no NetworkPolicy, no HPA, no s3 or cluster keys', async () => {
      const d = await helm.template({});
      assert.equal(d.all('NetworkPolicy').length + d.all('HorizontalPodAutoscaler').length, 0);
      const config = configOf(d);
      assert.equal(config.cluster, undefined);
      assert.deepEqual(Object.keys(config.storage).sort(), ['accessFlushInterval', 'eviction', 'path']);
      assert.equal(d.get('Deployment').spec.template.spec.topologySpreadConstraints, undefined);
    });
  });

  describe('wrong values', () => {
    const rejected = async (values: object, pattern: RegExp) => assert.match(await helm.templateError(values), pattern);

    it('are refused by values.schema.json', async () => {
      await rejected({ config: { listen: 5000 } }, /config\/listen/);
      await rejected({ config: { listen: 'localhost' } }, /config\/listen/);
      await rejected({ replicas: 2 }, /additional properties 'replicas' not allowed/);
      await rejected({ config: { cache: { fillTimeout: 30 } } }, /config\/cache\/fillTimeout/);
      await rejected({ config: { log: { level: 'verbose' } } }, /config\/log\/level/);
      // The chart sets storage.path (persistence.mountPath); the bounded store's keys are the user's.
      await rejected({ config: { storage: { path: '/data' } } }, /config\/storage': additional properties 'path' not allowed/);
      await rejected({ config: { storage: { maxSize: 'lots' } } }, /config\/storage\/maxSize/);
      await rejected({ config: { storage: { minFreeSpace: '10 percent' } } }, /config\/storage\/minFreeSpace/);
      await rejected({ config: { storage: { eviction: { highWatermark: 120 } } } }, /config\/storage\/eviction\/highWatermark/);
      await rejected({ config: { cache: { tagRetention: 90 } } }, /config\/cache\/tagRetention/);
      await rejected({ config: { upstreams: { 'docker.io': { password: 'plain' } } } }, /password/);
      await rejected({ upstreamCredentials: { 'docker.io': { password: 'x' } } }, /username/);
      await rejected({ service: { type: 'External' } }, /service\/type/);
      await rejected({ persistence: { size: '50 gigs' } }, /persistence\/size/);
      await rejected({ livenessProbe: { httpGet: { path: '/' } } }, /additional properties 'httpGet' not allowed/);
      await rejected({ config: { upstreams: { 'ghcr.io': { url: 'https://ghcr.io', repositories: { allow: ['My Org/*'] } } } } }, /config\/upstreams\/ghcr\.io\/repositories\/allow\/0/);
      await rejected({ config: { upstreams: { 'ghcr.io': { url: 'https://ghcr.io', repositories: { only: ['x'] } } } } }, /additional properties 'only' not allowed/);
      // A realm entry is an origin or host[:port], as hubcache's loader checks (issue #11).
      await rejected({ config: { upstreams: { 'ghcr.io': { url: 'https://ghcr.io', allowedRealmHosts: ['https://ghcr.io/token'] } } } }, /config\/upstreams\/ghcr\.io\/allowedRealmHosts\/0/);
    });

    it("refuse the registry names hubcache's loader refuses, as helm (Go RE2) reads the generated rule (issue #12)", async () => {
      const long = `${'a'.repeat(64)}.example.com`;
      for (const name of ['registry.local:05000', 'host.example:99999', long, 'myregistry', 'index.docker.io']) {
        const quoted = name.replace(/[.]/g, '\\.');
        await rejected({ config: { upstreams: { [name]: { url: 'https://x.example' } } } }, new RegExp(`invalid propertyName '${quoted}'`));
        await rejected({ nodeConfiguration: { enabled: true, registries: [name] } }, name === 'index.docker.io' ? /index\.docker\.io is not configured/ : /nodeConfiguration\/registries\/0/);
      }
      await rejected({ config: { defaultUpstream: 'registry.local:05000' } }, /config\/defaultUpstream/);
      const edge = { [`${'a'.repeat(63)}.example.com:65535`]: { url: 'https://x.example' }, 'localhost:5000': { url: 'http://localhost:5000' } };
      assert.deepEqual(Object.keys(configOf(await helm.template({ config: { upstreams: edge } })).upstreams).sort(), ['docker.io', ...Object.keys(edge)].sort());
    });

    it('refuse more than one replica, even on a ReadWriteMany volume or emptyDirs: one hubcache process per store', async () => {
      const schemaError = /values don't meet the specifications of the schema[\s\S]*at '\/replicaCount': maximum: got 2, want 1/;
      await rejected({ replicaCount: 2 }, schemaError);
      await rejected({ replicaCount: 2, persistence: { accessModes: ['ReadWriteMany'] } }, schemaError);
      await rejected({ replicaCount: 2, persistence: { existingClaim: 'shared-rwx' } }, schemaError);
      await rejected({ replicaCount: 2, persistence: { enabled: false } }, schemaError);
      await assert.rejects(helm.lint({ replicaCount: 2 }), (err: { stdout?: string }) => {
        assert.match(String(err.stdout), /at '\/replicaCount': maximum: got 2, want 1/);
        return true;
      });
      assert.equal((await helm.template({ replicaCount: 0 })).get('Deployment').spec.replicas, 0);
    });

    it('refuse more than one replica (or an autoscaler) unless the store is S3 and a Redis is named (issue #15)', async () => {
      const s3 = { driver: 's3', bucket: 'hubcache' };
      const redis = { redis: { url: 'redis://redis:6379' } };
      const schemaError = /at '\/replicaCount': maximum: got 2, want 1/;
      await rejected({ replicaCount: 2, config: { storage: s3 } }, schemaError);
      await rejected({ replicaCount: 2, config: { cluster: redis } }, schemaError);
      await rejected({ replicaCount: 2, config: { storage: s3, cluster: { redis: { url: '' } } } }, schemaError);
      await rejected({ autoscaling: { enabled: true }, config: { storage: s3 } }, /at '\/autoscaling\/enabled': value must be false/);
      // A Redis with a filesystem store is refused even for one replica: its store belongs to one process.
      await rejected({ config: { cluster: redis } }, /config\.cluster \(several replicas\) needs config\.storage\.driver: s3/);
      assert.equal((await helm.template({ replicaCount: 2, config: { storage: s3, cluster: redis } })).get('Deployment').spec.replicas, 2);
      assert.equal((await helm.template({ replicaCount: 2, config: { storage: s3, cluster: { redis: { sentinels: ['s1:26379'], sentinelName: 'mymaster' } } } })).get('Deployment').spec.replicas, 2);
      assert.equal((await helm.template({ replicaCount: 2, config: { storage: s3, cluster: { redis: { nodes: ['n1:6379', 'n2:6379'] } } } })).get('Deployment').spec.replicas, 2);
    });

    it('are refused by the templates when they combine badly', async () => {
      await rejected({ updateStrategy: { type: 'RollingUpdate' } }, /RollingUpdate would run the new pod next to the old one/);
      await rejected({ config: { upstreams: { 'ghcr.io': { tagTtl: '5m' } } } }, /config\.upstreams\.ghcr\.io\.url is required/);
      await rejected({ upstreamCredentials: { 'quay.io': { username: 'u', password: 'p' } } }, /quay\.io is not configured/);
      await rejected({ upstreamCredentials: { 'docker.io': { username: 'u', password: 'p', existingSecret: 's' } } }, /one of them/);
      await rejected({ nodeConfiguration: { enabled: true, registries: ['quay.io'] } }, /quay\.io is not configured/);
      await rejected({ podDisruptionBudget: { minAvailable: 1 } }, /not both/);
      const s3 = { driver: 's3', bucket: 'hubcache' };
      await rejected({ config: { storage: { driver: 's3' } } }, /config\.storage\.bucket is required/);
      await rejected({ config: { storage: s3, cluster: { redis: { url: 'redis://r:6379', nodes: ['n:6379'] } } } }, /set one of url, sentinels and nodes/);
      await rejected({ config: { storage: s3, cluster: { redis: { sentinels: ['s:26379'] } } } }, /sentinelName is required/);
      await rejected({ config: { storage: s3 }, s3Credentials: { accessKeyId: 'AKIA' } }, /set both accessKeyId and secretAccessKey/);
      await rejected({ config: { storage: s3 }, s3Credentials: { existingSecret: 's', accessKeyId: 'a', secretAccessKey: 'b' } }, /not both/);
    });
  });
});
