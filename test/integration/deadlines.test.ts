/**
 * Issue #11 point 9, in process against the misbehaving upstream: a manifest or tag list trickling
 * in a byte at a time (never idle long enough for bodyIdleTimeout) is cut at the total deadline
 * (upstreamClient.requestTimeout); a fetch whose clients have all gone is aborted rather than left
 * running; a later client starts afresh instead of joining it; and shutting down is not held by one.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MediaTypes } from '../../src/domain/media-types.js';
import { startHostileUpstream, trickle, type HostileUpstream } from '../../src/upstream/testing/hostile-registry.js';
import { metricValue } from '../support/hubcache-process.js';
import { rawRequest, type RawResponse } from '../support/raw-http.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';

const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { digest: `sha256:${'c'.repeat(64)}`, size: 2 }, layers: [] }));
const errorBody = (r: RawResponse) => (JSON.parse(r.body.toString()) as { errors: Array<{ code: string; detail: { upstream?: string } }> }).errors[0]!;
/** Fails instead of hanging when the code under test has no deadline (what the old code did). */
const GIVE_UP_MS = 10_000;

/** Resolves once `n` manifest requests have joined a fetch in flight (checked once per event-loop turn). */
async function coalesced(hc: InProcessHubcache, n: number): Promise<void> {
  for (;;) {
    const text = await hc.hub.metrics.registry.metrics();
    if (metricValue(text, 'hubcache_coalesced_requests_total', { kind: 'manifest_tag' }) >= n) return;
    await new Promise((r) => setImmediate(r));
  }
}

describe('upstream deadlines and abandoned fetches (issue #11 point 9)', () => {
  let up: HostileUpstream;

  before(async () => {
    up = await startHostileUpstream((r) => {
      // Forever: a byte every 50 ms of a body announced as 1 MiB.
      r.behave('forever/', trickle({ intervalMs: 50 }));
      // Slow but complete: the whole manifest, a byte every 10 ms (about 1.5 s).
      r.behave('slow/', trickle({ what: 'manifests', intervalMs: 10, body: manifest }));
    });
  });

  after(async () => {
    await up?.close();
  });

  describe('with a 1 s requestTimeout', () => {
    let hc: InProcessHubcache;
    before(async () => {
      hc = await startInProcess({ config: { upstreamClient: { requestTimeout: '1s' } }, flags: { 'upstream-url': up.url } });
    });
    after(async () => {
      await hc?.close();
    });

    it('a trickling manifest ends at the deadline: 503 UNAVAILABLE, and the upstream connection is closed', async () => {
      const r = await rawRequest(`${hc.url}/v2/forever/manifest/manifests/1`, { timeoutMs: GIVE_UP_MS });
      assert.equal(r.status, 503, r.errorCode);
      assert.equal(errorBody(r).code, 'UNAVAILABLE');
      assert.match(errorBody(r).detail.upstream ?? '', /no complete answer within 1000 ms/);
      await up.registry.settled('forever/manifest');
      assert.equal(up.registry.hits.get('forever/manifest'), 1, 'a deadline is not retried');
    });

    it('a trickling tag list ends at the deadline too', async () => {
      const r = await rawRequest(`${hc.url}/v2/forever/tags/tags/list?n=10`, { timeoutMs: GIVE_UP_MS });
      assert.equal(r.status, 503, r.errorCode);
      await up.registry.settled('forever/tags');
    });

    it('closing hubcache is not held by a trickling fetch: the client gets its answer at the deadline and the drain completes', async () => {
      const hc2 = await startInProcess({ config: { upstreamClient: { requestTimeout: '1s' } }, flags: { 'upstream-url': up.url } });
      const pending = rawRequest(`${hc2.url}/v2/forever/shutdown/manifests/1`, { timeoutMs: GIVE_UP_MS });
      await up.registry.hitCount('forever/shutdown', 1);
      await hc2.close(GIVE_UP_MS);
      assert.equal((await pending).status, 503);
      const stopped = await hc2.waitForLog((l) => l.message === 'hubcache stopped');
      assert.equal(stopped.outcome, 'drained', 'not held until the shutdown deadline');
      await up.registry.settled('forever/shutdown');
    });
  });

  describe('with the default requestTimeout (60 s)', () => {
    let hc: InProcessHubcache;
    before(async () => {
      hc = await startInProcess({ flags: { 'upstream-url': up.url } });
    });
    after(async () => {
      await hc?.close();
    });

    /** A client that leaves as soon as the upstream has its request. */
    async function leavingClient(repo: string, hits: number): Promise<void> {
      const ac = new AbortController();
      const gone = fetch(`${hc.url}/v2/${repo}/manifests/1`, { signal: ac.signal }).catch((e: Error) => e.name);
      await up.registry.hitCount(repo, hits);
      ac.abort();
      assert.equal(await gone, 'AbortError');
    }

    it('the last client leaving aborts the upstream fetch; a later client starts a fresh one instead of joining it', async () => {
      await leavingClient('forever/abandoned', 1);
      // Without the abort the upstream would trickle on for as long as bodyIdleTimeout allows: forever.
      await up.registry.settled('forever/abandoned');
      await leavingClient('forever/abandoned', 2);
      await up.registry.settled('forever/abandoned');
      assert.equal(up.registry.hits.get('forever/abandoned'), 2, 'the second client did not join the abandoned fetch');
      // A client that left is not an error of hubcache's.
      assert.deepEqual(hc.logs.filter((l) => l.level === 'error'), []);
    });

    it('a client leaving does not cancel the fetch for one still waiting', async () => {
      const ac = new AbortController();
      const leaving = fetch(`${hc.url}/v2/slow/shared/manifests/1`, { signal: ac.signal }).catch((e: Error) => e.name);
      await up.registry.hitCount('slow/shared', 1);
      const staying = rawRequest(`${hc.url}/v2/slow/shared/manifests/1`, { timeoutMs: GIVE_UP_MS });
      await coalesced(hc, 1);
      ac.abort();
      assert.equal(await leaving, 'AbortError');
      const r = await staying;
      assert.equal(r.status, 200, r.body.toString());
      assert.ok(r.body.equals(manifest));
      assert.equal(up.registry.hits.get('slow/shared'), 1, 'one upstream fetch, shared');
    });
  });
});
