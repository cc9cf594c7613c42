/**
 * The in-process tier's own smoke test: hubcache started in this process in front of the
 * misbehaving upstream serves a well-mannered repository, and a repository with a behaviour gets
 * that behaviour (here a 500 the cache turns into an OCI error), side by side on one upstream.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MediaTypes } from '../../src/domain/media-types.js';
import { startHostileUpstream, type HostileUpstream } from '../../src/upstream/testing/hostile-registry.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';

describe('in-process harness with the misbehaving upstream', () => {
  let up: HostileUpstream;
  let hc: InProcessHubcache;
  let digest: string;

  before(async () => {
    up = await startHostileUpstream((r) => {
      r.behave('broken/', ({ res }) => void res.writeHead(500).end('boom'));
    });
    digest = up.registry.putManifest('good/app', '1', { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: {}, layers: [] }, MediaTypes.ociManifest);
    hc = await startInProcess({ flags: { 'upstream-url': up.url } });
  });

  after(async () => {
    await hc?.close();
    await up?.close();
  });

  it('serves the well-mannered repository and maps the broken one to an OCI error', async () => {
    const ok = await fetch(`${hc.url}/v2/good/app/manifests/1`, { headers: { accept: MediaTypes.ociManifest } });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('docker-content-digest'), digest);
    await ok.arrayBuffer();
    const bad = await fetch(`${hc.url}/v2/broken/app/manifests/1`);
    assert.equal(bad.status, 503);
    const doc = (await bad.json()) as { errors: Array<{ code: string }> };
    assert.equal(doc.errors[0]!.code, 'UNAVAILABLE');
    assert.ok((up.registry.hits.get('broken/app') ?? 0) >= 1);
    assert.ok(hc.logs.some((l) => l.message === 'hubcache started'));
  });
});
