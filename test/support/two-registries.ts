/**
 * Two fake registries with token auth and a CDN each (distribution 2.8 behind the recording
 * front), one standing for `docker.io` and one for a second registry (`ghcr.io`), and one real
 * hubcache process configured for both by a YAML file, as an operator would write it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startHubcacheProcess, type HubcacheProcess } from './hubcache-process.js';
import { startUpstream, type Upstream } from './upstream-harness.js';

export interface TwoRegistries {
  /** Stands for Docker Hub (`docker.io`). */
  readonly hub: Upstream;
  /** Stands for the second registry (`SECOND` = ghcr.io). */
  readonly second: Upstream;
  readonly hubcache: HubcacheProcess;
  readonly instanceId: string;
  /** Scratch directory removed by close(). */
  readonly dir: string;
  close(): Promise<void>;
}

export const SECOND = 'ghcr.io';

export interface TwoRegistriesOptions {
  /** Seeds images before hubcache starts. */
  seed?: (hub: Upstream, second: Upstream) => Promise<void>;
  /**
   * Extra upstream entries (name → config) merged into the file; `$SECOND_URL`, `$SECOND_REALM` and
   * `$SECOND_CDN` in strings become the second front's URL, its token server's origin and its CDN's
   * host:port.
   */
  extraUpstreams?: Record<string, Record<string, unknown>>;
  /** Extra settings for the second registry's entry (e.g. `repositories`). */
  secondSettings?: Record<string, unknown>;
  instanceId?: string;
}

export async function startTwoRegistries(opts: TwoRegistriesOptions = {}): Promise<TwoRegistries> {
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-two-'));
  const instanceId = opts.instanceId ?? 'e2e-registries';
  const started: Array<{ close(): Promise<void> }> = [];
  try {
    const [hub, second] = await Promise.all([startUpstream({ cdn: true, service: 'hub.test' }), startUpstream({ cdn: true, service: 'second.test' })]);
    started.push(hub, second);
    await opts.seed?.(hub, second);
    // Both fake CDNs listen on loopback, which hubcache refuses as a redirect target unless listed;
    // both token servers on another port than their registry, which hubcache refuses as a realm unless listed.
    const config = {
      instanceId,
      upstreams: {
        'docker.io': { url: hub.url, tagTtl: '10m', allowedRealmHosts: [hub.realmOrigin], allowedRedirectHosts: [new URL(hub.cdn!.url).host] },
        [SECOND]: { url: second.url, tagTtl: '10m', allowedRealmHosts: [second.realmOrigin], allowedRedirectHosts: [new URL(second.cdn!.url).host], ...opts.secondSettings },
        ...(JSON.parse(
          JSON.stringify(opts.extraUpstreams ?? {})
            .replaceAll('$SECOND_URL', second.url)
            .replaceAll('$SECOND_REALM', second.realmOrigin)
            .replaceAll('$SECOND_CDN', new URL(second.cdn!.url).host),
        ) as Record<string, unknown>),
      },
    };
    const configPath = join(dir, 'hubcache.yaml');
    writeFileSync(configPath, stringify(config));
    const hubcache = await startHubcacheProcess({ config: configPath });
    started.push(hubcache);
    let closed: Promise<void> | undefined;
    return {
      hub,
      second,
      hubcache,
      instanceId,
      dir,
      close: () =>
        (closed ??= (async () => {
          await Promise.all(started.map((s) => s.close()));
          rmSync(dir, { recursive: true, force: true });
        })()),
    };
  } catch (err) {
    await Promise.all(started.map((s) => s.close()));
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** A client config template from deploy/clients with `hubcache.example:5000` replaced by hubcache's address. */
export function renderClientConfig(template: string, hubcacheHost: string): string {
  return template.replaceAll('hubcache.example:5000', hubcacheHost);
}
