// GET /admin/du (issue #13): `hubcache du` of a running server, on the metrics listener only.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { diskUsage, fetchDu, type DuResult } from '../../src/commands/du.js';
import type { RepoName, Tag } from '../../src/domain/reference.js';
import { subjectId } from '../../src/storage/access-record.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { createLogger } from '../../src/lib/logger.js';
import { loadConfig } from '../../src/config/load.js';
import { writeSyntheticStore } from '../../src/storage/fs/testing/synthetic-store.js';
import { startApp } from '../support/app-harness.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';
import { putImage } from '../support/oci-fixtures.js';

const T0 = Date.UTC(2025, 0, 1);
const HOUR = 3_600_000;

describe('GET /admin/du', () => {
  let root: string;
  let hc: InProcessHubcache;
  let expected: DuResult;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'hubcache-admin-du-'));
    const store = writeSyntheticStore({ root, blobs: 2100, blobSize: 32, validatedAt: T0 });
    // The record a previous server flushed: one tag of bench/r0001 pulled an hour after its validation.
    const accessLog = join(root, 'access.log');
    writeFileSync(accessLog, `${T0 + HOUR} ${subjectId({ kind: 'tag', key: { upstream: 'docker.io', repo: 'bench/r0001' as RepoName }, tag: store.images.find((i) => i.repository === 'bench/r0001')!.tags[0]! as Tag })}\n`);
    const logBefore = { text: readFileSync(accessLog, 'utf8'), mtimeMs: statSync(accessLog).mtimeMs };
    // What `hubcache du` reads from the stopped store: the server must answer the same.
    const config = loadConfig({ env: {}, flags: { 'storage-path': root } });
    expected = await diskUsage(await openStorage(config.storage, { logger: createLogger({ level: 'error', format: 'json' }) }));
    assert.deepEqual(
      expected.repositories.map((r) => [r.repository, r.lastAccessAt, r.tags - r.tagsWithoutAccess]),
      [
        ['bench/r0000', new Date(T0).toISOString(), 0],
        ['bench/r0001', new Date(T0 + HOUR).toISOString(), 1],
        ['bench/r0002', new Date(T0).toISOString(), 0],
      ],
    );
    assert.deepEqual({ text: readFileSync(accessLog, 'utf8'), mtimeMs: statSync(accessLog).mtimeMs }, logBefore, 'the reader wrote nothing to access.log');
    // The tags were validated at T0, a fixed date, and the server runs on the real clock: a
    // retention beyond any date keeps its retention pass at start from expiring them (the pass ran
    // too slowly to finish before these requests until it read the tag index; nothing here may
    // depend on today's date).
    hc = await startInProcess({ storagePath: root, flags: { 'metrics-listen': '127.0.0.1:0', 'tag-retention': '36500d' } });
  });
  after(async () => {
    await hc?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('on the metrics listener: the DuResult of the store, as JSON, with a request id in the header and the access log', async () => {
    const res = await fetch(`${hc.hub.metricsUrl}/admin/du`, { headers: { 'x-request-id': 'du-test-1' } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(res.headers.get('x-request-id'), 'du-test-1');
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    const body = (await res.json()) as DuResult;
    assert.deepEqual(body, expected);
    assert.equal(body.repositories.length, 3);
    const line = await hc.waitForLog((l) => l.message === 'request' && l.requestId === 'du-test-1');
    assert.deepEqual([line.route, line.status, line.method], ['admin_du', 200, 'GET']);
  });

  it('?repository= selects rows; the totals stay the whole store; `hubcache du --server` reads the same (fetchDu)', async () => {
    const only = await fetchDu(hc.hub.metricsUrl, 'bench/r0001');
    assert.deepEqual(only.repositories, [expected.repositories[1]]);
    assert.deepEqual(only.store, expected.store);
    assert.deepEqual(await fetchDu(hc.hub.metricsUrl, undefined), expected);
  });

  it('is not on the registry port: 404 there, and `du --server` pointed at it says where to look', async () => {
    const res = await fetch(`${hc.url}/admin/du`);
    assert.equal(res.status, 404);
    assert.deepEqual(((await res.json()) as { errors: Array<{ code: string }> }).errors.map((e) => e.code), ['NOT_FOUND']);
    await assert.rejects(fetchDu(hc.url, undefined), /404 NOT_FOUND: .*--server takes the address of the metrics listener/);
  });

  it('an unknown admin path or method: 404 with an OCI error body', async () => {
    for (const [method, path] of [['GET', '/admin/nothing'], ['POST', '/admin/du'], ['GET', '/admin']] as const) {
      const res = await fetch(`${hc.hub.metricsUrl}${path}`, { method });
      assert.equal(res.status, 404, `${method} ${path}`);
      const body = (await res.json()) as { errors: Array<{ code: string; message: string }> };
      assert.deepEqual(body.errors.map((e) => [e.code, e.message]), [['NOT_FOUND', 'no such admin endpoint']], `${method} ${path}`);
    }
  });

  it('a bad repository parameter: 400 NAME_INVALID', async () => {
    const res = await fetch(`${hc.hub.metricsUrl}/admin/du?repository=`);
    assert.equal(res.status, 400);
    assert.deepEqual(((await res.json()) as { errors: Array<{ code: string }> }).errors.map((e) => e.code), ['NAME_INVALID']);
  });
});

describe('LAST ACCESS follows pulls', () => {
  it('a hit within the TTL moves lastAccessAt forward while the tag keeps its older validatedAt', async () => {
    const hc = await startApp({ tagTtlMs: HOUR });
    try {
      putImage(hc.registry, 'library/app', 'v1', { seed: 'du-access', layerSizes: [1000] });
      const key = { upstream: 'docker.io', repo: 'library/app' as RepoName };
      const t0 = hc.clock.now();
      assert.equal((await hc.pull('/v2/library/app/manifests/v1')).cache, 'miss');
      await hc.settle();
      const row = async () => (await diskUsage(hc.stores)).repositories.map((r) => [r.repository, r.lastAccessAt, r.tagsWithoutAccess]);
      assert.deepEqual(await row(), [['library/app', new Date(t0).toISOString(), 0]]);

      hc.clock.advance(20 * 60_000);
      assert.equal((await hc.pull('/v2/library/app/manifests/v1')).cache, 'hit');
      assert.deepEqual(await row(), [['library/app', new Date(t0 + 20 * 60_000).toISOString(), 0]]);
      assert.equal((await hc.stores.metadata.getTag(key, 'v1' as Tag))?.validatedAt, t0, 'not revalidated: only the access moved');
    } finally {
      await hc.close();
    }
  });
});

describe('without a separate metrics listener', () => {
  it('there is no admin endpoint at all: /admin/du on the registry port is 404', async () => {
    const hc = await startInProcess();
    try {
      const res = await fetch(`${hc.url}/admin/du`);
      assert.equal(res.status, 404);
    } finally {
      await hc.close();
    }
  });
});
