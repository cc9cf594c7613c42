/**
 * The last-access record (issue #13) as the cache feeds it: every blob, manifest and tag served —
 * misses, hits, HEADs — is touched at the cache's clock, with nothing awaited on the request path.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Digest } from '../../src/domain/digest.js';
import type { RepoName, Tag } from '../../src/domain/reference.js';
import { startApp, type AppHarness } from '../support/app-harness.js';
import { putImage } from '../support/oci-fixtures.js';

describe('last-access record', () => {
  let hc: AppHarness;
  before(async () => {
    hc = await startApp();
  });
  after(() => hc.close());

  const last = (subject: Parameters<AppHarness['stores']['access']['lastAccess']>[0]) => hc.stores.access.lastAccess(subject);

  it('a pull touches its tag, manifest and blobs; a later hit moves their times forward', async () => {
    const img = putImage(hc.registry, 'library/app', 'v1', { seed: 'access-1', layerSizes: [10_000] });
    const key = { upstream: 'docker.io', repo: 'library/app' as RepoName };
    const layer = img.layers[0]!.digest as Digest;
    const t0 = hc.clock.now();
    assert.equal((await hc.pull('/v2/library/app/manifests/v1')).status, 200);
    assert.equal((await hc.pull(`/v2/library/app/blobs/${layer}`)).status, 200);
    await hc.settle();
    assert.equal(await last({ kind: 'tag', key, tag: 'v1' as Tag }), t0);
    assert.equal(await last({ kind: 'manifest', digest: img.digest as Digest }), t0);
    assert.equal(await last({ kind: 'blob', digest: layer }), t0);
    assert.equal(await last({ kind: 'blob', digest: img.config.digest as Digest }), undefined, 'not served yet');

    hc.clock.advance(60_000);
    const hit = await hc.pull(`/v2/library/app/blobs/${layer}`);
    assert.equal(hit.cache, 'hit');
    assert.equal((await hc.pull(`/v2/library/app/manifests/${img.digest}`, { method: 'HEAD' })).status, 200);
    assert.equal(await last({ kind: 'blob', digest: layer }), t0 + 60_000);
    assert.equal(await last({ kind: 'manifest', digest: img.digest as Digest }), t0 + 60_000);
    assert.equal(await last({ kind: 'tag', key, tag: 'v1' as Tag }), t0, 'the tag was not asked for again');
  });

  it('a request that fails touches nothing', async () => {
    const missing = `sha256:${'0'.repeat(64)}` as Digest;
    assert.equal((await hc.pull(`/v2/library/app/blobs/${missing}`)).status, 404);
    assert.equal(await last({ kind: 'blob', digest: missing }), undefined);
  });
});
