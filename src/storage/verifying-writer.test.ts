import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sha256Digest, type Digest } from '../domain/digest.js';
import { rejectsWithCode } from './testing/helpers.js';
import { VerifyingBlobWriter, type RawBlobWriter } from './verifying-writer.js';

/** A backend's raw writer that records every call it gets. */
function recordingRaw(opts: { failPublish?: boolean; failWrite?: boolean } = {}) {
  const calls: string[] = [];
  const raw: RawBlobWriter = {
    async write(chunks, position) {
      calls.push(`write ${chunks.map((c) => c.length).join('+')} @${position}`);
      if (opts.failWrite) throw new Error('EIO');
    },
    async publish(digest: Digest, size: number) {
      calls.push(`publish ${digest.slice(7, 11)} ${size}`);
      if (opts.failPublish) throw new Error('fsync failed');
    },
    async discard() {
      calls.push('discard');
    },
  };
  return { raw, calls };
}

const data = Buffer.from('hello, blob');
const digest = sha256Digest(data);
const short = digest.slice(7, 11);

describe('VerifyingBlobWriter: verification at commit, written once for every backend', () => {
  it('hashes and counts what passes; commit checks, calls onVerified, then asks the backend to publish', async () => {
    const { raw, calls } = recordingRaw();
    const w = new VerifyingBlobWriter(raw);
    await w.write(data.subarray(0, 5));
    await w.write([data.subarray(5, 7), data.subarray(7)]);
    assert.equal(w.written, data.length);
    const info = await w.commit(digest, data.length, { onVerified: () => calls.push('verified') });
    assert.deepEqual(info, { digest, size: data.length });
    assert.deepEqual(calls, ['write 5 @0', 'write 2+4 @5', 'verified', `publish ${short} ${data.length}`]);
    await w.abort();
    assert.equal(calls.at(-1), `publish ${short} ${data.length}`, 'abort after a commit does not discard');
  });

  for (const c of [
    { why: 'the size', size: data.length + 1, expected: digest, code: 'SIZE_INVALID' as const },
    { why: 'the digest', size: data.length, expected: sha256Digest('other'), code: 'DIGEST_INVALID' as const },
    { why: 'both (the size is checked first)', size: 3, expected: sha256Digest('other'), code: 'SIZE_INVALID' as const },
  ]) {
    it(`a mismatch of ${c.why} is ${c.code}: the backend is never asked to publish, and abort discards`, async () => {
      const { raw, calls } = recordingRaw();
      const w = new VerifyingBlobWriter(raw);
      await w.write(data);
      await rejectsWithCode(w.commit(c.expected, c.size, { onVerified: () => calls.push('verified') }), c.code);
      await assert.rejects(w.commit(digest, data.length), /rejected/, 'no second try');
      await w.abort();
      await w.abort();
      assert.deepEqual(calls, [`write ${data.length} @0`, 'discard']);
    });
  }

  it('a failed publish leaves the writer unable to commit (no fsync retry); abort discards', async () => {
    const { raw, calls } = recordingRaw({ failPublish: true });
    const w = new VerifyingBlobWriter(raw);
    await w.write(data);
    await assert.rejects(w.commit(digest), /fsync failed/);
    await assert.rejects(w.commit(digest), /rejected/);
    await w.abort();
    assert.deepEqual(calls, [`write ${data.length} @0`, `publish ${short} ${data.length}`, 'discard']);
  });

  it('a failed write is not hashed or counted, and the writer cannot commit', async () => {
    const { raw } = recordingRaw({ failWrite: true });
    const w = new VerifyingBlobWriter(raw);
    await assert.rejects(w.write(data), /EIO/);
    assert.equal(w.written, 0);
    await assert.rejects(w.commit(sha256Digest('')), /rejected/);
  });

  it('hashAhead covers a write still in flight (runningHash does not); a write that fails takes its bytes out of both', async () => {
    const base = recordingRaw().raw;
    let finish!: (err?: Error) => void;
    const w = new VerifyingBlobWriter({ ...base, write: (c, p) => new Promise<void>((resolve, reject) => (finish = (err) => (err ? reject(err) : resolve(base.write(c, p))))) });
    const first = w.write(data.subarray(0, 5));
    const ahead = w.hashAhead();
    assert.equal(ahead.handed, 5);
    assert.equal(w.written, 0, 'not written yet');
    assert.equal(`sha256:${ahead.hash.update(data.subarray(5)).digest('hex')}`, digest, 'the bytes in flight are hashed already');
    assert.equal(`sha256:${w.runningHash().update(data).digest('hex')}`, digest, 'runningHash: the written bytes only');
    finish();
    await first;
    const second = w.write(data.subarray(5));
    assert.equal(w.hashAhead().handed, data.length);
    finish(new Error('ENOSPC'));
    await assert.rejects(second, /ENOSPC/);
    const after = w.hashAhead();
    assert.equal(after.handed, 5);
    assert.equal(`sha256:${after.hash.update(data.subarray(5)).digest('hex')}`, digest, 'the failed bytes are not in the hash');
  });

  it('runningHash: a copy of the hash over exactly the written bytes, usable after a failed write and an abort', async () => {
    let fail = false;
    const base = recordingRaw().raw;
    const w = new VerifyingBlobWriter({ ...base, write: async (c, p) => (fail ? Promise.reject(new Error('ENOSPC')) : base.write(c, p)) });
    await w.write(data.subarray(0, 5));
    fail = true;
    await assert.rejects(w.write(data.subarray(5)), /ENOSPC/);
    await w.abort();
    const hash = w.runningHash();
    hash.update(data.subarray(5));
    assert.equal(`sha256:${hash.digest('hex')}`, digest, 'the caller goes on from byte `written`');
    assert.equal(`sha256:${w.runningHash().update(data.subarray(5)).digest('hex')}`, digest, 'a fresh copy each time');
  });

  it('concurrent calls are refused (the hash must see bytes in order); calls after abort too', async () => {
    let landed!: () => void;
    const slow = { ...recordingRaw().raw, write: () => new Promise<void>((r) => (landed = r)) };
    const w = new VerifyingBlobWriter(slow);
    const first = w.write(data);
    await assert.rejects(w.write(data), /write during a write/);
    await assert.rejects(w.commit(digest), /commit during a write/);
    landed();
    await first;
    await w.abort();
    await assert.rejects(w.write(data), /aborted/);
  });

  it('passes on the backend writer’s localPath', () => {
    assert.equal(new VerifyingBlobWriter({ ...recordingRaw().raw, localPath: '/x/tmp/blob-1' }).localPath, '/x/tmp/blob-1');
    assert.equal(new VerifyingBlobWriter(recordingRaw().raw).localPath, undefined);
  });
});
