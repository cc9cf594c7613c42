/**
 * Issue #11 points 4 and 5, in process against the misbehaving upstream: a manifest is stored only
 * when its bytes are a manifest hubcache knows, in the media type the bytes and the Content-Type
 * agree on, and that media type never changes once stored, whichever upstream repository serves
 * the same bytes later and however it labels them. Everything else is a 502, never stored, never
 * a 500. And every response tells browsers not to sniff.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sha256Digest } from '../../src/domain/digest.js';
import { MediaTypes } from '../../src/domain/media-types.js';
import { StorageLayout } from '../../src/storage/fs/layout.js';
import { manifestAs, startHostileUpstream, type HostileUpstream } from '../../src/upstream/testing/hostile-registry.js';
import { rawRequest, type RawResponse } from '../support/raw-http.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';

// What docker sends: it can't read text/html, so a manifest stored as such is MANIFEST_UNKNOWN to it.
const DOCKER_ACCEPT = [MediaTypes.dockerManifest, MediaTypes.dockerManifestList, MediaTypes.ociManifest, MediaTypes.ociIndex].join(', ');
const image = (seed: string) =>
  Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest(seed), size: 2 }, layers: [] }));

const errorCode = (r: RawResponse) => (JSON.parse(r.body.toString()) as { errors: Array<{ code: string }> }).errors[0]!.code;

describe('manifests: one media type per digest, and only manifests (issue #11 points 4, 5)', () => {
  let up: HostileUpstream;
  let hc: InProcessHubcache;
  const genuine = image('genuine');
  const digest = sha256Digest(genuine);
  const first = image('arrives-first-from-the-evil-upstream');
  const storagePath = mkdtempSync(join(tmpdir(), 'hubcache-manifests-'));

  before(async () => {
    up = await startHostileUpstream((r) => {
      // The genuine bytes under other Content-Types: one that isn't a manifest's, one the body contradicts.
      r.behave('evil/html-label', manifestAs('text/html', genuine));
      r.behave('evil/docker-label', manifestAs(MediaTypes.dockerManifest, genuine));
      r.behave('evil/first', manifestAs('text/html; charset=utf-8', first));
      // Content that is no manifest at all.
      r.behave('junk/html', manifestAs('text/html', '<html><body><script>alert(1)</script></body></html>'));
      r.behave('junk/html-as-oci', manifestAs(MediaTypes.ociManifest, '<html><body>sign in</body></html>'));
      r.behave('junk/bytes', manifestAs('application/octet-stream', Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 1, 2])));
      r.behave('junk/json', manifestAs('application/json', '{"hello":"world"}'));
      r.behave('junk/crlf', manifestAs('application/octet-stream', JSON.stringify({ schemaVersion: 2, mediaType: `${MediaTypes.ociManifest}\r\nX-Injected: 1`, config: {}, layers: [] })));
    });
    up.registry.putManifest('good/app', '1', genuine, MediaTypes.ociManifest);
    up.registry.putManifest('good/first', '1', first, MediaTypes.ociManifest);
    hc = await startInProcess({ flags: { 'upstream-url': up.url }, storagePath });
  });

  after(async () => {
    await hc?.close();
    await up?.close();
    rmSync(storagePath, { recursive: true, force: true });
  });

  const get = (path: string, method = 'GET') => rawRequest(`${hc.url}${path}`, { method, headers: { accept: DOCKER_ACCEPT } });

  it('another repository serving a cached manifest with another Content-Type is refused and changes nothing, also after a restart', async () => {
    const ok = await get('/v2/good/app/manifests/1');
    assert.equal(ok.status, 200);
    assert.equal(ok.headers['content-type'], MediaTypes.ociManifest);

    const evil = ['/v2/evil/html-label/manifests/1', `/v2/evil/html-label/manifests/${digest}`, '/v2/evil/docker-label/manifests/1'];
    const answers = [];
    for (const path of evil) answers.push(await get(path));

    // The genuine repository first: that is what the poisoning broke.
    for (const path of ['/v2/good/app/manifests/1', `/v2/good/app/manifests/${digest}`]) {
      for (const method of ['GET', 'HEAD']) {
        const r = await get(path, method);
        assert.equal(r.status, 200, `${method} ${path}`);
        assert.equal(r.headers['content-type'], MediaTypes.ociManifest, `${method} ${path}`);
        assert.equal(r.headers['docker-content-digest'], digest);
      }
    }
    for (const [i, refused] of answers.entries()) {
      assert.equal(refused.status, 502, evil[i]);
      assert.equal(errorCode(refused), 'UPSTREAM_ERROR');
    }
    await hc.close();
    hc = await startInProcess({ flags: { 'upstream-url': up.url }, storagePath });
    const r = await get(`/v2/good/app/manifests/${digest}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], MediaTypes.ociManifest);
    assert.ok(r.body.equals(genuine));
  });

  it('a mislabelled copy that arrives first is not stored: the genuine one is, in its own media type', async () => {
    const refused = await get('/v2/evil/first/manifests/1');
    assert.equal(refused.status, 502);
    assert.equal(existsSync(new StorageLayout({ root: hc.storagePath }).manifestPath(sha256Digest(first))), false, 'nothing stored');
    const ok = await get(`/v2/good/first/manifests/${sha256Digest(first)}`);
    assert.equal(ok.status, 200);
    assert.equal(ok.headers['content-type'], MediaTypes.ociManifest);
  });

  it('HTML, bytes, JSON that is no manifest and a mediaType with CR/LF are 502 UPSTREAM_ERROR every time, never stored, never a 500', async () => {
    const layout = new StorageLayout({ root: hc.storagePath });
    for (const repo of ['junk/html', 'junk/html-as-oci', 'junk/bytes', 'junk/json', 'junk/crlf']) {
      for (let attempt = 1; attempt <= 2; attempt++) {
        const r = await get(`/v2/${repo}/manifests/1`);
        assert.equal(r.status, 502, `${repo} #${attempt}: ${r.body.toString()}`);
        assert.equal(errorCode(r), 'UPSTREAM_ERROR');
        assert.equal(r.headers['content-type'], 'application/json; charset=utf-8');
      }
      assert.equal(up.registry.hits.get(repo), 2, `${repo}: asked upstream each time, nothing cached`);
      const served = up.registry.manifests.get(`${repo}@1`);
      if (served) assert.equal(existsSync(layout.manifestPath(sha256Digest(served.body))), false);
    }
    assert.deepEqual(hc.logs.filter((l) => l.message === 'unhandled error'), []);
  });

  it('X-Content-Type-Options: nosniff on every response: manifests, blobs, errors, health, readiness and metrics', async () => {
    const paths = [
      ['GET', '/v2/'],
      ['GET', '/v2/good/app/manifests/1'],
      ['HEAD', '/v2/good/app/manifests/1'],
      ['GET', '/v2/junk/html/manifests/1'],
      ['GET', `/v2/good/app/blobs/${sha256Digest('none')}`],
      ['GET', '/v2/good/app/manifests/-bad'],
      ['DELETE', '/v2/good/app/manifests/1'],
      ['GET', '/nothing-here'],
      ['GET', '/healthz'],
      ['GET', '/readyz'],
      ['GET', '/metrics'],
    ];
    for (const [method, path] of paths) {
      const r = await get(path!, method);
      assert.ok(r.status !== undefined, `${method} ${path}`);
      assert.equal(r.headers['x-content-type-options'], 'nosniff', `${method} ${path} (${r.status})`);
    }
    const separate = await startInProcess({ flags: { 'upstream-url': up.url, 'metrics-listen': '127.0.0.1:0' } });
    try {
      for (const path of ['/metrics', '/elsewhere']) {
        const r = await rawRequest(`${separate.hub.metricsUrl}${path}`);
        assert.equal(r.headers['x-content-type-options'], 'nosniff', path);
      }
    } finally {
      await separate.close();
    }
  });
});
