import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sha256Digest } from '../domain/digest.js';
import { RegistryError } from '../domain/errors.js';
import { HOSTED_UPSTREAM, type RepoKey, type RepoName } from '../domain/reference.js';
import { MemoryBlobStore } from './memory/memory-blob-store.js';
import { UploadSessions, uploadRange } from './upload-sessions.js';

const KEY: RepoKey = { upstream: HOSTED_UPSTREAM, repo: 'myorg/app' as RepoName };
const OTHER: RepoKey = { upstream: HOSTED_UPSTREAM, repo: 'myorg/other' as RepoName };

async function* chunks(...parts: string[]): AsyncIterable<Uint8Array> {
  for (const p of parts) yield Buffer.from(p);
}

function setup(opts: { maxSessions?: number } = {}) {
  let now = 1_000_000;
  const blobs = new MemoryBlobStore();
  const expired: string[] = [];
  const sessions = new UploadSessions({ blobs, timeoutMs: 60_000, maxSessions: opts.maxSessions ?? 10, clock: () => now, onExpired: (r) => expired.push(r.id) });
  return { blobs, sessions, expired, advance: (ms: number) => void (now += ms) };
}

const code = (c: string) => (err: unknown) => err instanceof RegistryError && err.code === c;

describe('UploadSessions: the push protocol’s upload sessions over a blob store', () => {
  it('chunks in order, then the final PUT publishes the verified blob', async () => {
    const { blobs, sessions } = setup();
    const s = await sessions.start(KEY);
    assert.equal(s.offset, 0);
    assert.equal((await sessions.append(KEY, s.id, chunks('hello '), 0)).offset, 6);
    assert.equal((await sessions.append(KEY, s.id, chunks('wor', 'ld'))).offset, 11);
    assert.equal(sessions.get(KEY, s.id).offset, 11);
    const digest = sha256Digest('hello world!');
    assert.deepEqual(await sessions.finish(KEY, s.id, digest, chunks('!')), { digest, size: 12 });
    assert.deepEqual(await blobs.stat(digest), { digest, size: 12 });
    assert.throws(() => sessions.get(KEY, s.id), code('BLOB_UPLOAD_UNKNOWN'), 'a finished session is gone');
    await sessions.close();
  });

  it('an out-of-order chunk is RANGE_INVALID with the current Range, and writes nothing', async () => {
    const { sessions } = setup();
    const s = await sessions.start(KEY);
    await sessions.append(KEY, s.id, chunks('abc'), 0);
    await assert.rejects(sessions.append(KEY, s.id, chunks('zzz'), 5), (err) => code('RANGE_INVALID')(err) && (err as RegistryError).headers.Range === '0-2');
    await assert.rejects(sessions.append(KEY, s.id, chunks('zzz'), 0), code('RANGE_INVALID'));
    assert.equal(sessions.get(KEY, s.id).offset, 3);
    await sessions.close();
  });

  it('a wrong digest or size at the final PUT publishes nothing and ends the session', async () => {
    const { blobs, sessions } = setup();
    const a = await sessions.start(KEY);
    await sessions.append(KEY, a.id, chunks('abc'));
    await assert.rejects(sessions.finish(KEY, a.id, sha256Digest('abd')), code('DIGEST_INVALID'));
    assert.equal(await blobs.stat(sha256Digest('abc')), undefined);
    assert.throws(() => sessions.get(KEY, a.id), code('BLOB_UPLOAD_UNKNOWN'));
    const b = await sessions.start(KEY);
    await assert.rejects(sessions.finish(KEY, b.id, sha256Digest('abc'), chunks('abc'), 4), code('SIZE_INVALID'));
    assert.equal(await blobs.stat(sha256Digest('abc')), undefined);
    assert.equal(blobs.usage().objects, 0);
    await sessions.close();
  });

  it('a session answers only under its own repository; unknown ids are BLOB_UPLOAD_UNKNOWN', async () => {
    const { sessions } = setup();
    const s = await sessions.start(KEY);
    assert.throws(() => sessions.get(OTHER, s.id), code('BLOB_UPLOAD_UNKNOWN'));
    await assert.rejects(sessions.append(OTHER, s.id, chunks('x')), code('BLOB_UPLOAD_UNKNOWN'));
    assert.throws(() => sessions.get(KEY, 'nope'), code('BLOB_UPLOAD_UNKNOWN'));
    await sessions.close();
  });

  it('cancel removes the session; idle sessions expire after the timeout, busy ones wait', async () => {
    const { sessions, expired, advance } = setup();
    const a = await sessions.start(KEY);
    await sessions.cancel(KEY, a.id);
    assert.throws(() => sessions.get(KEY, a.id), code('BLOB_UPLOAD_UNKNOWN'));
    await assert.rejects(sessions.cancel(KEY, a.id), code('BLOB_UPLOAD_UNKNOWN'));

    const idle = await sessions.start(KEY);
    const active = await sessions.start(KEY);
    advance(50_000);
    await sessions.append(KEY, active.id, chunks('x'));
    advance(20_000);
    assert.equal(await sessions.sweep(), 1);
    assert.deepEqual(expired, [idle.id]);
    assert.throws(() => sessions.get(KEY, idle.id), code('BLOB_UPLOAD_UNKNOWN'));
    assert.equal(sessions.get(KEY, active.id).offset, 1);
    await sessions.close();
    assert.equal(sessions.size, 0);
  });

  it('a second request on a session while one writes is refused (BLOB_UPLOAD_INVALID)', async () => {
    const { sessions } = setup();
    const s = await sessions.start(KEY);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    async function* slow(): AsyncIterable<Uint8Array> {
      yield Buffer.from('a');
      await gate;
      yield Buffer.from('b');
    }
    const first = sessions.append(KEY, s.id, slow());
    await assert.rejects(sessions.append(KEY, s.id, chunks('c')), code('BLOB_UPLOAD_INVALID'));
    release();
    assert.equal((await first).offset, 2);
    await sessions.close();
  });

  it('at most maxSessions at once (TOOMANYREQUESTS)', async () => {
    const { sessions } = setup({ maxSessions: 2 });
    await sessions.start(KEY);
    await sessions.start(KEY);
    await assert.rejects(sessions.start(KEY), code('TOOMANYREQUESTS'));
    await sessions.close();
  });

  it('the status Range is 0-<last byte>, and 0-0 for an empty upload (as distribution)', () => {
    assert.equal(uploadRange(0), '0-0');
    assert.equal(uploadRange(1), '0-0');
    assert.equal(uploadRange(10), '0-9');
  });
  it('with a directory (several replicas): every session is published before its id is given out, progress at most every quarter of the timeout, and every end', async () => {
    let now = 1_000_000;
    const told: string[] = [];
    const sessions = new UploadSessions({
      blobs: new MemoryBlobStore(),
      timeoutMs: 60_000,
      maxSessions: 10,
      clock: () => now,
      directory: {
        started: async (r) => void told.push(`started ${r.id} ${r.key.repo}`),
        touched: async (r) => void told.push(`touched ${r.id} ${r.offset}`),
        ended: async (id) => void told.push(`ended ${id}`),
      },
    });
    const finished = await sessions.start(KEY);
    assert.deepEqual(told, [`started ${finished.id} myorg/app`]);
    assert.ok(sessions.has(finished.id) && !sessions.has('nope'));
    await sessions.append(KEY, finished.id, chunks('abc'));
    assert.equal(told.length, 1, 'progress within a quarter of the timeout: the record still lives long enough');
    now += 15_000;
    await sessions.append(KEY, finished.id, chunks('def'));
    assert.equal(told.at(-1), `touched ${finished.id} 6`);
    await sessions.finish(KEY, finished.id, sha256Digest('abcdef'));
    assert.equal(told.at(-1), `ended ${finished.id}`);

    const cancelled = await sessions.start(KEY);
    await sessions.cancel(KEY, cancelled.id);
    assert.equal(told.at(-1), `ended ${cancelled.id}`);

    const failed = await sessions.start(KEY);
    await assert.rejects(sessions.finish(KEY, failed.id, sha256Digest('other'), chunks('x')), code('DIGEST_INVALID'));
    assert.equal(told.at(-1), `ended ${failed.id}`);

    const idle = await sessions.start(KEY);
    now += 61_000;
    assert.equal(await sessions.sweep(), 1);
    assert.equal(told.at(-1), `ended ${idle.id}`);

    const open = await sessions.start(OTHER);
    await sessions.close();
    assert.equal(told.at(-1), `ended ${open.id}`);
    assert.equal(told.filter((t) => t.startsWith('ended')).length, 5, 'each session ended once');
  });
});
