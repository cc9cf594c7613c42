// deploy/compose: the compose file parses and wires hubcache, Prometheus (scrape + rules) and Grafana
// (datasource + dashboard) together; paths resolve the same in the repository and in the containers.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, posix, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { keyValues, parseDockerfile } from './support/dockerfile.js';
import { ROOT } from './support/metrics-catalog.js';

const DIR = join(ROOT, 'deploy', 'compose');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = Record<string, any>;
const compose = parse(readFileSync(join(DIR, 'docker-compose.yml'), 'utf8')) as Doc;
const services = compose.services as Record<string, Doc>;

/** Bind mounts of a service: host path (resolved from deploy/compose) → container path. */
function binds(service: string): Array<{ host: string; target: string }> {
  return (services[service]!.volumes as string[])
    .map((v) => v.split(':'))
    .filter(([src]) => src!.startsWith('.') || src!.startsWith('/'))
    .map(([src, target]) => ({ host: resolve(DIR, src!), target: target! }));
}

/** The host path behind a container path, through the service's bind mounts. */
function hostPathOf(service: string, containerPath: string): string | undefined {
  for (const b of binds(service)) {
    if (containerPath === b.target || containerPath.startsWith(`${b.target}/`)) return join(b.host, posix.relative(b.target, containerPath));
  }
  return undefined;
}

const runtime = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8')).stages.at(-1)!;
const imageEnv = Object.assign({}, ...runtime.instructions.filter((i) => i.keyword === 'ENV').map((i) => keyValues(i.raw))) as Record<string, string>;
const hubcachePort = imageEnv.HUBCACHE_LISTEN!.split(':').at(-1)!;

describe('deploy/compose', () => {
  it('runs hubcache, prometheus and grafana', () => {
    assert.deepEqual(Object.keys(services).sort(), ['grafana', 'hubcache', 'prometheus']);
    for (const [name, s] of Object.entries(services)) assert.ok(s.image, `${name}: no image`);
    assert.match(services.prometheus!.image, /^prom\/prometheus:v\d+\.\d+\.\d+$/);
    assert.match(services.grafana!.image, /^grafana\/grafana:\d+\.\d+\.\d+$/);
  });

  it('builds hubcache from the repository Dockerfile and keeps its store on a named volume', () => {
    const hub = services.hubcache!;
    assert.equal(resolve(DIR, hub.build.context), resolve(ROOT));
    assert.ok(existsSync(join(resolve(DIR, hub.build.context), hub.build.dockerfile)));
    assert.equal(hub.image, 'hubcache:latest');
    assert.ok(hub.ports.includes(`${hubcachePort}:${hubcachePort}`));
    const store = imageEnv.HUBCACHE_STORAGE_PATH!;
    const volume = (hub.volumes as string[]).find((v) => v.endsWith(`:${store}`));
    assert.ok(volume, `no volume at ${store}`);
    assert.ok(volume.split(':')[0]! in compose.volumes, 'the store should be a named volume');
    assert.ok(Number.parseInt(hub.stop_grace_period, 10) > 30, 'stop_grace_period must exceed the 30s shutdown timeout');
  });

  it('mounts only files that exist in the repository', () => {
    for (const name of Object.keys(services)) {
      for (const b of binds(name)) assert.ok(existsSync(b.host), `${name}: ${b.host} does not exist`);
    }
  });

  it('has a prometheus.yml that promtool accepts, rules included', () => {
    const out = execFileSync('promtool', ['check', 'config', 'deploy/compose/prometheus.yml'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    assert.match(out, /SUCCESS: 1 rule files found/);
    assert.match(out, /SUCCESS: \d+ rules found/);
  });

  it('loads the same prometheus.yml and alert rules in the container as in the repository', () => {
    const flag = (services.prometheus!.command as string[]).find((c) => c.startsWith('--config.file='))!;
    const configInContainer = flag.slice('--config.file='.length);
    assert.equal(hostPathOf('prometheus', configInContainer), join(DIR, 'prometheus.yml'));
    const prom = parse(readFileSync(join(DIR, 'prometheus.yml'), 'utf8')) as Doc;
    for (const rules of prom.rule_files as string[]) {
      // Prometheus resolves rule_files relative to the config file's directory.
      const inContainer = posix.join(posix.dirname(configInContainer), rules);
      assert.equal(hostPathOf('prometheus', inContainer), join(DIR, rules), `${rules} resolves elsewhere in the container`);
    }
    assert.ok((prom.rule_files as string[]).some((r) => resolve(DIR, r) === join(ROOT, 'deploy', 'prometheus', 'alerts.yaml')));
  });

  it('scrapes hubcache by its service name on the port it listens on', () => {
    const prom = parse(readFileSync(join(DIR, 'prometheus.yml'), 'utf8')) as Doc;
    const job = (prom.scrape_configs as Doc[]).find((j) => j.job_name === 'hubcache')!;
    assert.equal(job.metrics_path ?? '/metrics', '/metrics');
    assert.deepEqual(job.static_configs[0].targets, [`hubcache:${hubcachePort}`]);
    // The alerts' HubcacheDown matches the job name.
    assert.match(readFileSync(join(ROOT, 'deploy/prometheus/alerts.yaml'), 'utf8'), /up\{job=~"\.\*hubcache\.\*"\}/);
  });

  it('provisions Grafana with the Prometheus service as default datasource and the dashboard', () => {
    const provisioning = hostPathOf('grafana', '/etc/grafana/provisioning')!;
    assert.equal(provisioning, join(DIR, 'grafana', 'provisioning'));
    const ds = parse(readFileSync(join(provisioning, 'datasources', 'prometheus.yaml'), 'utf8')) as Doc;
    assert.equal(ds.datasources.length, 1);
    assert.equal(ds.datasources[0].type, 'prometheus');
    assert.equal(ds.datasources[0].isDefault, true);
    assert.equal(ds.datasources[0].url, 'http://prometheus:9090');
    assert.ok(services.prometheus!.ports.includes('9090:9090'));
    const dashboards = parse(readFileSync(join(provisioning, 'dashboards', 'hubcache.yaml'), 'utf8')) as Doc;
    const path = dashboards.providers[0].options.path as string;
    assert.equal(hostPathOf('grafana', path), join(ROOT, 'deploy', 'grafana'));
    assert.ok(existsSync(join(hostPathOf('grafana', path)!, 'hubcache.json')));
    const home = services.grafana!.environment.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH as string;
    assert.equal(hostPathOf('grafana', home), join(ROOT, 'deploy', 'grafana', 'hubcache.json'));
  });
});
