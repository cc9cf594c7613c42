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

test('private, loopback, link-local and reserved addresses are recognised; public ones are not', () => {
  for (const a of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '224.0.0.1', '::1', '::', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:a9fe:a9fe', '[::1]']) {
    assert.equal(isPrivateAddress(a), true, a);
  }
  for (const a of ['8.8.8.8', '104.16.0.1', '172.32.0.1', '2606:4700::1', '::ffff:8.8.8.8']) assert.equal(isPrivateAddress(a), false, a);
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
