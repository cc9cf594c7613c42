import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { text } from 'node:stream/consumers';
import type { RepoName } from '../domain/reference.js';
import { isPrivateAddress, RedirectGuard } from './redirect-guard.js';
import { RegistryUpstream } from './registry-client.js';
import { cdnHandler, FakeRegistry, LoopbackServer } from './testing/fake-registry.js';
import { UpstreamError } from './upstream.js';

const repo = 'library/alpine' as RepoName;
const bytes = Buffer.from('redirect guard bytes');
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(cleanup.splice(0).map((f) => f()));
});

// [address, refused, why]: every special-purpose range, and the IPv6 forms that embed an IPv4
// address in each notation a resolver or a URL may produce (issue #11).
const ADDRESSES: ReadonlyArray<readonly [string, boolean, string]> = [
  ['127.0.0.1', true, 'IPv4 loopback'],
  ['10.1.2.3', true, 'RFC 1918'],
  ['172.16.0.1', true, 'RFC 1918'],
  ['172.31.255.255', true, 'RFC 1918, last address'],
  ['192.168.1.1', true, 'RFC 1918'],
  ['169.254.169.254', true, 'link-local, instance metadata'],
  ['100.64.0.1', true, 'carrier-grade NAT'],
  ['0.0.0.0', true, 'this network'],
  ['224.0.0.1', true, 'multicast'],
  ['192.0.2.10', true, 'documentation TEST-NET-1'],
  ['198.51.100.7', true, 'documentation TEST-NET-2'],
  ['203.0.113.200', true, 'documentation TEST-NET-3'],
  ['192.88.99.1', true, '6to4 relay anycast'],
  ['192.88.100.1', false, 'just outside 192.88.99/24'],
  ['198.51.101.1', false, 'just outside 198.51.100/24'],
  ['8.8.8.8', false, 'public IPv4'],
  ['104.16.0.1', false, 'public IPv4 (a CDN)'],
  ['172.32.0.1', false, 'just outside 172.16/12'],
  ['::1', true, 'IPv6 loopback'],
  ['[::1]', true, 'IPv6 loopback in URL brackets'],
  ['::', true, 'unspecified'],
  ['::127.0.0.1', true, 'IPv4-compatible ::/96, dotted'],
  ['::7f00:1', true, 'IPv4-compatible ::/96, as URL parsing writes [::127.0.0.1]'],
  ['::a9fe:a9fe', true, 'IPv4-compatible metadata address'],
  ['::8.8.8.8', true, 'IPv4-compatible is deprecated: refused whole'],
  ['::ffff:127.0.0.1', true, 'IPv4-mapped loopback'],
  ['::ffff:7f00:1', true, 'IPv4-mapped loopback, hex'],
  ['0:0:0:0:0:ffff:a9fe:a9fe', true, 'IPv4-mapped metadata, uncompressed'],
  ['::FFFF:10.0.0.1', true, 'IPv4-mapped private, upper case'],
  ['::ffff:8.8.8.8', false, 'IPv4-mapped public'],
  ['::ffff:0:7f00:1', true, 'IPv4-translated (SIIT) ::ffff:0:0:0/96'],
  ['64:ff9b::7f00:1', true, 'well-known NAT64 prefix embedding loopback'],
  ['64:ff9b::10.0.0.1', true, 'well-known NAT64 prefix embedding RFC 1918'],
  ['64:ff9b::a9fe:a9fe', true, 'well-known NAT64 prefix embedding the metadata address'],
  ['64:ff9b::8.8.8.8', false, 'well-known NAT64 prefix embedding a public address (DNS64)'],
  ['64:ff9b:1::a00:1', true, 'local-use NAT64 64:ff9b:1::/48'],
  ['64:ff9b:1:ffff::1', true, 'local-use NAT64, another embedding format'],
  ['2002:7f00:1::1', true, '6to4 embedding 127.0.0.1'],
  ['2002:a00:1::', true, '6to4 embedding 10.0.0.1'],
  ['2002:808:808::1', true, '6to4 is deprecated: refused whole'],
  ['2001:0:4136:e378:8000:63bf:3fff:fdd2', true, 'Teredo'],
  ['100::1', true, 'discard-only'],
  ['2001:2::1', true, 'benchmarking'],
  ['2001:10::1', true, 'ORCHID'],
  ['2001:20::1', true, 'ORCHIDv2'],
  ['2001:db8::1', true, 'documentation'],
  ['3fff::1', true, 'documentation (RFC 9637)'],
  ['5f00::1', true, 'SRv6 SIDs'],
  ['fd00::1', true, 'unique local'],
  ['fe80::1', true, 'link-local'],
  ['fe80::1%eth0', true, 'link-local with a zone id'],
  ['fec0::1', true, 'site-local'],
  ['ff02::1', true, 'multicast'],
  ['2606:4700::1', false, 'public IPv6'],
  ['2001:4860:4860::8888', false, 'public IPv6 in 2001::/16 outside the special /32s'],
  ['registry.example', false, 'not an address'],
];

for (const [address, refused, why] of ADDRESSES) {
  test(`isPrivateAddress(${address}) is ${refused}: ${why}`, () => assert.equal(isPrivateAddress(address), refused));
}

test('guard: IPv6 literals embedding private IPv4 are refused in every URL spelling, without a DNS lookup', async () => {
  const asked: string[] = [];
  const guard = new RedirectGuard({ base: new URL('https://registry.example'), allowedHosts: [], lookup: async (h) => (asked.push(h), []) });
  for (const u of ['http://[::127.0.0.1]:5000/x', 'http://[::ffff:0:a9fe:a9fe]/', 'http://[64:ff9b:1::a9fe:a9fe]/', 'http://[2002:a9fe:a9fe::]/', 'http://[64:ff9b::169.254.169.254]/']) {
    await assert.rejects(guard.check(new URL(u)), (e: unknown) => e instanceof UpstreamError && e.kind === 'protocol' && /refused/.test(e.message), u);
  }
  await guard.check(new URL('https://[64:ff9b::808:808]/'));
  assert.deepEqual(asked, []);
});

test('guard: own host and listed hosts pass; private targets are refused; public names pass; DNS is consulted for names', async () => {
  const asked: string[] = [];
  const answers: Record<string, string[]> = { 'cdn.example': ['104.16.0.1'], 'rebind.example': ['104.16.0.2', '10.0.0.7'], 'internal.example': ['10.0.0.8'] };
  const guard = new RedirectGuard({
    base: new URL('http://127.0.0.1:5000'),
    allowedHosts: ['internal.example', '127.0.0.1:6000'],
    lookup: async (h) => (asked.push(h), (answers[h] ?? []).map((address) => ({ address, family: 4 }))),
  });
  const refused = (u: string) => assert.rejects(guard.check(new URL(u)), (e: unknown) => e instanceof UpstreamError && e.kind === 'protocol' && /allowedRedirectHosts/.test(e.message), u);
  await guard.check(new URL('http://127.0.0.1:5000/v2/x'));
  await guard.check(new URL('http://127.0.0.1:6000/cdn/x'));
  await guard.check(new URL('https://internal.example/x'));
  await guard.check(new URL('https://cdn.example/x'));
  await refused('http://127.0.0.1:5001/x');
  await refused('http://169.254.169.254/latest/meta-data/');
  await refused('http://[::1]:5000/x');
  await refused('http://[::ffff:169.254.169.254]/x');
  await refused('https://rebind.example/x');
  await refused('https://nothing.example/x');
  assert.deepEqual(asked, ['cdn.example', 'rebind.example', 'nothing.example']);
});

test('RegistryUpstream refuses a blob redirect to a loopback CDN that is not allowed, and never contacts it', async () => {
  const reg = new FakeRegistry();
  reg.auth = 'bearer';
  const digest = reg.putBlob(bytes);
  const cdn = await LoopbackServer.start(cdnHandler(reg.blobs), 'localhost');
  reg.blobRedirect = cdn.url;
  const srv = await LoopbackServer.start(reg.handle, '127.0.0.1');
  cleanup.push(() => cdn.close(), () => srv.close());
  const make = (allowedRedirectHosts?: string[]) => {
    const c = new RegistryUpstream({
      name: 'fake.test',
      url: srv.url,
      timeouts: { connectMs: 2000, headersMs: 5000, bodyIdleMs: 5000 },
      retries: { attempts: 3, baseDelayMs: 0 },
      userAgent: 'hubcache-test',
      ...(allowedRedirectHosts ? { allowedRedirectHosts } : {}),
    });
    cleanup.push(() => c.close());
    return c;
  };
  await assert.rejects(make().getBlob(repo, digest), (e: unknown) => e instanceof UpstreamError && e.kind === 'protocol' && e.message.includes(new URL(cdn.url).host));
  await assert.rejects(make(['localhost:1']).headBlob(repo, digest), (e: unknown) => e instanceof UpstreamError && e.kind === 'protocol');
  assert.equal(cdn.count(), 0, 'the refused CDN saw no request');
  assert.equal(await text((await make([new URL(cdn.url).host]).getBlob(repo, digest)).body), bytes.toString());
  assert.equal(cdn.count(), 1);
});
