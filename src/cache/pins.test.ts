import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sha256Digest, type Digest } from '../domain/digest.js';
import { MediaTypes } from '../domain/media-types.js';
import type { RepoKey } from '../domain/reference.js';
import { TagList } from '../domain/tag-list.js';
import { silentLogger } from '../lib/logger.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../storage/memory/memory-manifest-store.js';
import type { PinMetrics, PinRefreshResult, PinState } from './cache-metrics.js';
import { PinSet, type PinSource } from './pins.js';
import type { ManifestResult } from './registry-reader.js';

const turn = () => new Promise<void>((r) => setImmediate(r));

/** A source whose blob fetches finish only when the test says so. */
function heldSource(blobs: Digest[]) {
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { digest: blobs[0] }, layers: blobs.slice(1).map((digest) => ({ digest })) }));
  const manifest: ManifestResult = { descriptor: { digest: sha256Digest(body), size: body.length, mediaType: MediaTypes.ociManifest }, body, outcome: 'miss' };
  const pending: Array<() => void> = [];
  let active = 0;
  let max = 0;
  const source: PinSource = {
    getManifest: async () => manifest,
    listTags: async () => ({ name: 'x', tags: TagList.empty }),
    warmBlob: (_key: RepoKey, _digest: Digest) => {
      active++;
      max = Math.max(max, active);
      return new Promise((resolve) =>
        pending.push(() => {
          active--;
          resolve('fetched');
        }),
      );
    },
  };
  return { source, manifest, pending, active: () => active, max: () => max };
}

class RecordingMetrics implements PinMetrics {
  states: Record<PinState, number> | undefined;
  readonly results: PinRefreshResult[] = [];
  digests = 0;
  pinStates(counts: Readonly<Record<PinState, number>>): void {
    this.states = { ...counts };
  }
  pinRefreshed(result: PinRefreshResult): void {
    this.results.push(result);
  }
  pinnedDigests(n: number): void {
    this.digests = n;
  }
}

const blobDigests = (n: number) => Array.from({ length: n }, (_, i) => sha256Digest(`blob-${i}`));

function pinSet(source: PinSource, extra: Partial<ConstructorParameters<typeof PinSet>[0]> = {}) {
  const metrics = new RecordingMetrics();
  const pins = new PinSet({
    pins: ['alpine:3'],
    source,
    manifests: new MemoryManifestStore(),
    metadata: new MemoryMetadataStore(),
    tagTtls: new Map([['docker.io', 60_000]]),
    concurrency: 2,
    logger: silentLogger(),
    metrics,
    ...extra,
  });
  return { pins, metrics };
}

describe('PinSet', () => {
  it('runs at most `concurrency` fetches at once, and all of them', async () => {
    const blobs = blobDigests(6);
    const src = heldSource(blobs);
    const { pins, metrics } = pinSet(src.source);
    const refreshing = pins.refresh();
    for (let done = 0; done < blobs.length; done++) {
      await turn();
      assert.equal(src.active(), Math.min(2, blobs.length - done), `after ${done} done`);
      src.pending.shift()!();
    }
    assert.deepEqual((await refreshing).states, { warm: 1, cold: 0, failed: 0 });
    assert.equal(src.max(), 2);
    assert.deepEqual(metrics.results, ['updated']);
    assert.equal(metrics.digests, 7);
    for (const d of [src.manifest.descriptor.digest, ...blobs]) assert.ok(pins.protects(d));
  });

  it('start: refreshes at once, then every tag TTL from the end of a round; stop cancels the timer and aborts a round in flight', async () => {
    const blobs = blobDigests(1);
    const src = heldSource(blobs);
    const timers: Array<{ ms: number; fn: () => void; cancelled: boolean }> = [];
    const { pins, metrics } = pinSet(src.source, {
      schedule: (ms, fn) => {
        const t = { ms, fn, cancelled: false };
        timers.push(t);
        return () => void (t.cancelled = true);
      },
    });
    await pins.start();
    await turn();
    assert.equal(timers.length, 0, 'the next round is scheduled only once this one ended');
    src.pending.shift()!();
    while (timers.length === 0) await turn();
    assert.equal(timers[0]!.ms, 60_000, "the upstream's tag TTL");
    assert.deepEqual(metrics.results, ['updated']);
    timers[0]!.fn();
    await turn();
    assert.equal(src.active(), 1, 'the second round fetches again');
    const stopping = pins.stop();
    src.pending.shift()!();
    await stopping;
    assert.deepEqual(metrics.results, ['updated'], 'a round cut by stop is not counted');
    assert.ok(timers.slice(1).every((t) => t.cancelled), 'no timer left running');
  });

  it('an entry the config would refuse is a programming error here', () => {
    assert.throws(() => pinSet(heldSource([]).source, { pins: ['Bad:1'] }), /cache\.pin: "Bad:1": invalid repository name/);
  });
});
