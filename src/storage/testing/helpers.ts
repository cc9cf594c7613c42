import assert from 'node:assert/strict';
import type { Readable } from 'node:stream';
import { it } from 'node:test';
import { sha256Digest } from '../../domain/digest.js';
import { isRegistryError, type ErrorCode } from '../../domain/errors.js';
import { MediaTypes } from '../../domain/media-types.js';
import type { RepoKey, RepoName, Tag } from '../../domain/reference.js';
import type { TagEntry } from '../tag-store.js';

/** Consumes a stream into one Buffer. */
export async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

/** Asserts that `p` rejects with a `RegistryError` of this code. */
export async function rejectsWithCode(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isRegistryError(err), `expected RegistryError(${code}), got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  });
}

/** What a backend's test hands the suite: a fresh, empty store per test. */
export interface StoreFixture<S> {
  readonly store: S;
  cleanup(): Promise<void>;
}

/** `it` over a fresh store from `makeStore`, cleaned up afterwards. */
export function fixtureTest<S>(makeStore: () => Promise<StoreFixture<S>>) {
  return (title: string, fn: (store: S) => Promise<void>) =>
    it(title, async () => {
      const fx = await makeStore();
      try {
        await fn(fx.store);
      } finally {
        await fx.cleanup();
      }
    });
}

/** Unvalidated on purpose: the suites hand stores bad names too. */
export const key = (upstream: string, repo: string): RepoKey => ({ upstream, repo: repo as RepoName });
export const tag = (t: string) => t as Tag;
export const tagEntry = (s: string, validatedAt = 1_700_000_000_000): TagEntry => ({
  digest: sha256Digest(s),
  mediaType: MediaTypes.ociIndex,
  size: s.length,
  validatedAt,
});

/** An OCI image manifest whose config is `blobs[0]` and whose layers are the rest. */
export function imageManifestOf(blobs: Buffer[]): Buffer {
  const [config, ...layers] = blobs;
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest(config!), size: config!.length },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256Digest(l), size: l.length })),
    }),
  );
}

/** `b` as a one-chunk body (what an upload's `append` takes). */
export async function* bodyOf(b: Buffer): AsyncIterable<Uint8Array> {
  yield b;
}

/** A Proxy of `target` whose `method` first awaits `gate(...args)`: a pause point for interleaving tests. */
export function gated<T extends object>(target: T, method: keyof T & string, gate: (...args: unknown[]) => Promise<void>): T {
  return new Proxy(target, {
    get(t, p) {
      const v = Reflect.get(t, p, t) as unknown;
      if (typeof v !== 'function') return v;
      if (p === method) {
        return async (...args: unknown[]) => {
          await gate(...args);
          return (v as (...a: unknown[]) => unknown).apply(t, args);
        };
      }
      return (v as (...a: unknown[]) => unknown).bind(t);
    },
  });
}
