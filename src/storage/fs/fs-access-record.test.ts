import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { sha256Digest } from '../../domain/digest.js';
import { describeAccessRecord } from '../testing/access-record.conformance.js';
import { FsAccessRecord } from './fs-access-record.js';

async function fixtureRoot() {
  const root = await mkdtemp(join(tmpdir(), 'hubcache-access-'));
  let n = 0;
  const open = () => new FsAccessRecord({ path: join(root, 'access.log'), tempPath: () => join(root, `tmp-${n++}`) });
  return { root, open, log: join(root, 'access.log'), cleanup: () => rm(root, { recursive: true, force: true }) };
}

describeAccessRecord('FsAccessRecord', async () => {
  const fx = await fixtureRoot();
  return { open: fx.open, persistent: true, cleanup: fx.cleanup };
});

const blob = (s: string) => ({ kind: 'blob' as const, digest: sha256Digest(s) });

describe('FsAccessRecord', () => {
  it('touches do no I/O: nothing is written before a flush, and a flush writes one batch', async () => {
    const fx = await fixtureRoot();
    try {
      const r = fx.open();
      for (let i = 0; i < 500; i++) r.touch(blob(String(i % 50)), 1_000 + i);
      await assert.rejects(stat(fx.log), { code: 'ENOENT' });
      await r.flush();
      const lines = (await readFile(fx.log, 'utf8')).trim().split('\n');
      assert.equal(lines.length, 50, 'one line per subject changed in the batch');
      assert.match(lines[0]!, /^\d+ b sha256:[0-9a-f]{64}$/);
    } finally {
      await fx.cleanup();
    }
  });

  it('a torn last line (crash during an append) is skipped, and the next batch is not glued to it', async () => {
    const fx = await fixtureRoot();
    try {
      const r = fx.open();
      r.touch(blob('a'), 1_000);
      await r.flush();
      await appendFile(fx.log, `2000 b ${sha256Digest('b').slice(0, 30)}`);
      const again = fx.open();
      assert.equal(await again.lastAccess(blob('a')), 1_000);
      assert.equal(await again.lastAccess(blob('b')), undefined);
      again.touch(blob('c'), 3_000);
      await again.flush();
      const third = fx.open();
      assert.equal(await third.lastAccess(blob('a')), 1_000);
      assert.equal(await third.lastAccess(blob('c')), 3_000);
    } finally {
      await fx.cleanup();
    }
  });

  it('garbage and unknown subjects in the log are ignored', async () => {
    const fx = await fixtureRoot();
    try {
      await writeFile(fx.log, `nonsense\n12 x y\n5 b sha256:zz\n7 t docker.io ../etc latest\n9 b ${sha256Digest('ok')}\n`);
      const r = fx.open();
      assert.equal(await r.lastAccess(blob('ok')), 9);
      let n = 0;
      for await (const _ of r.entries()) n++;
      assert.equal(n, 1);
    } finally {
      await fx.cleanup();
    }
  });

  it('the log is compacted once superseded lines outnumber the live entries: it stays proportional to the store', async () => {
    const fx = await fixtureRoot();
    try {
      const r = fx.open();
      for (let round = 0; round < 40; round++) {
        for (let i = 0; i < 100; i++) r.touch(blob(String(i)), round * 1_000 + i);
        await r.flush();
      }
      const lines = (await readFile(fx.log, 'utf8')).trim().split('\n').length;
      assert.ok(lines <= 2 * 100 + 1024 + 100, `${lines} lines for 100 live entries`);
      const again = fx.open();
      assert.equal(await again.lastAccess(blob('7')), 39_007);
      let n = 0;
      for await (const _ of again.entries()) n++;
      assert.equal(n, 100);
    } finally {
      await fx.cleanup();
    }
  });

  it('a failed flush keeps its batch: the next flush writes it', async () => {
    const fx = await fixtureRoot();
    try {
      // The log's path is a directory: appends fail (EISDIR) until it is removed.
      const { mkdir } = await import('node:fs/promises');
      await mkdir(fx.log);
      const r = fx.open();
      r.touch(blob('a'), 1_000);
      await assert.rejects(r.flush());
      await rm(fx.log, { recursive: true });
      await r.flush();
      assert.equal(await fx.open().lastAccess(blob('a')), 1_000);
    } finally {
      await fx.cleanup();
    }
  });
});
