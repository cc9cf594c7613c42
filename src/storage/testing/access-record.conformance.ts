import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sha256Digest } from '../../domain/digest.js';
import type { AccessEntry, AccessRecord, AccessSubject } from '../access-record.js';
import { subjectId } from '../access-record.js';
import { key, tag } from './helpers.js';

/** What a backend's test hands the suite: one fresh, empty record, which `open` opens (again, like a restarted process). */
export interface AccessRecordFixture {
  open(): AccessRecord;
  /** Whether what was flushed survives `open` again (a persistent backend). */
  readonly persistent: boolean;
  cleanup(): Promise<void>;
}

const blob = (s: string): AccessSubject => ({ kind: 'blob', digest: sha256Digest(s) });
const manifest = (s: string): AccessSubject => ({ kind: 'manifest', digest: sha256Digest(s) });
const alpineTag = (t: string): AccessSubject => ({ kind: 'tag', key: key('docker.io', 'library/alpine'), tag: tag(t) });

async function all(record: AccessRecord): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const e of record.entries() as AsyncIterable<AccessEntry>) out.set(subjectId(e.subject), e.at);
  return out;
}

/** The behaviour every `AccessRecord` (storage/access-record.ts) must have. */
export function describeAccessRecord(name: string, makeFixture: () => Promise<AccessRecordFixture>): void {
  const test = (title: string, fn: (fx: AccessRecordFixture) => Promise<void>) =>
    it(title, async () => {
      const fx = await makeFixture();
      try {
        await fn(fx);
      } finally {
        await fx.cleanup();
      }
    });

  describe(`AccessRecord conformance: ${name}`, () => {
    test('touch records blobs, manifests and tags; an unknown subject has no entry', async (fx) => {
      const r = fx.open();
      assert.equal(await r.lastAccess(blob('a')), undefined);
      r.touch(blob('a'), 1_000);
      r.touch(manifest('a'), 2_000);
      r.touch(alpineTag('3.20'), 3_000);
      assert.equal(await r.lastAccess(blob('a')), 1_000);
      assert.equal(await r.lastAccess(manifest('a')), 2_000);
      assert.equal(await r.lastAccess(alpineTag('3.20')), 3_000);
      assert.equal(await r.lastAccess(alpineTag('3.21')), undefined);
      assert.equal(await r.lastAccess(manifest('b')), undefined);
      assert.deepEqual(await all(r), new Map([[subjectId(blob('a')), 1_000], [subjectId(manifest('a')), 2_000], [subjectId(alpineTag('3.20')), 3_000]]));
    });

    test('times only move forward; one entry per subject however often it is touched', async (fx) => {
      const r = fx.open();
      for (let i = 0; i < 1_000; i++) r.touch(blob('a'), 10_000 + i);
      r.touch(blob('a'), 5_000);
      assert.equal(await r.lastAccess(blob('a')), 10_999);
      assert.equal((await all(r)).size, 1);
    });

    test('forget removes the entry; a later touch records it again', async (fx) => {
      const r = fx.open();
      r.touch(blob('a'), 1_000);
      r.touch(blob('b'), 1_000);
      r.forget(blob('a'));
      assert.equal(await r.lastAccess(blob('a')), undefined);
      assert.deepEqual([...(await all(r)).keys()], [subjectId(blob('b'))]);
      r.touch(blob('a'), 500);
      assert.equal(await r.lastAccess(blob('a')), 500);
    });

    test('what was flushed survives a reopen (persistent backends), forgotten entries included', async (fx) => {
      const r = fx.open();
      r.touch(blob('a'), 1_000);
      r.touch(blob('b'), 2_000);
      r.touch(alpineTag('latest'), 3_000);
      await r.flush();
      r.forget(blob('b'));
      r.touch(blob('a'), 4_000);
      await r.flush();
      await r.flush(); // nothing pending: a no-op
      if (!fx.persistent) return;
      const again = fx.open();
      assert.deepEqual(await all(again), new Map([[subjectId(blob('a')), 4_000], [subjectId(alpineTag('latest')), 3_000]]));
    });

    test('touches made before the persisted record is read are kept, and win over older persisted times', async (fx) => {
      const r = fx.open();
      r.touch(blob('a'), 1_000);
      r.touch(blob('b'), 9_000);
      await r.flush();
      const again = fx.open();
      again.touch(blob('a'), 2_000);
      again.forget(blob('b'));
      assert.equal(await again.lastAccess(blob('a')), 2_000);
      assert.equal(await again.lastAccess(blob('b')), undefined);
    });
  });
}
