/**
 * Issue #11 point 11: blob redirects to IPv6 literals that embed or reach a private IPv4 address
 * (IPv4-compatible `[::127.0.0.1]`, local-use NAT64, 6to4, …) are refused before any connection,
 * as 502 UPSTREAM_ERROR; the upstream's other repositories are unaffected. The full range table
 * is in src/upstream/redirect-guard.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sha256Digest } from '../../src/domain/digest.js';
import { redirectBlobsTo, startHostileUpstream, type HostileUpstream } from '../../src/upstream/testing/hostile-registry.js';
import { startInProcess, type InProcessHubcache } from '../support/in-process.js';

// [repository, redirect target host]: each embeds 127.0.0.1 or 169.254.169.254.
const TARGETS: ReadonlyArray<readonly [string, string]> = [
  ['evil/compatible', '[::127.0.0.1]'],
  ['evil/compatible-metadata', '[::169.254.169.254]'],
  ['evil/translated', '[::ffff:0:127.0.0.1]'],
  ['evil/nat64-local', '[64:ff9b:1::a9fe:a9fe]'],
  ['evil/nat64-wkp', '[64:ff9b::127.0.0.1]'],
  ['evil/6to4', '[2002:a9fe:a9fe::1]'],
  ['evil/teredo', '[2001:0:a9fe:a9fe::1]'],
];

describe('issue #11 point 11: redirects to IPv6 forms of private IPv4 addresses', () => {
  let up: HostileUpstream;
  let hc: InProcessHubcache;
  const bytes = Buffer.from('layer behind a hostile redirect');
  const digest = sha256Digest(bytes);

  before(async () => {
    up = await startHostileUpstream((r) => {
      r.putBlob(bytes);
      for (const [repo, host] of TARGETS) r.behave(repo, redirectBlobsTo(`http://${host}:80/cdn/${digest}`));
    });
    hc = await startInProcess({ config: { upstreamClient: { retries: 1 } }, flags: { 'upstream-url': up.url } });
  });
  after(async () => {
    await hc?.close();
    await up?.close();
  });

  for (const [repo, host] of TARGETS) {
    it(`${host}: refused as 502 UPSTREAM_ERROR, naming the address`, async () => {
      const res = await fetch(`${hc.url}/v2/${repo}/blobs/${digest}`);
      const doc = (await res.json()) as { errors: Array<{ code: string; detail?: { upstream?: string } }> };
      assert.equal(res.status, 502);
      assert.equal(doc.errors[0]!.code, 'UPSTREAM_ERROR');
      assert.match(String(doc.errors[0]!.detail?.upstream), /refused: it resolves to the non-public address/);
    });
  }

  it('the same blob from a repository without a hostile redirect is served', async () => {
    const res = await fetch(`${hc.url}/v2/good/app/blobs/${digest}`);
    assert.equal(res.status, 200);
    assert.equal(Buffer.from(await res.arrayBuffer()).toString(), bytes.toString());
  });
});
