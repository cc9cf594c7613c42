import assert from 'node:assert/strict';
import { statSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadOrCreateSigningKey, tokenAllows, TokenSigner } from './token.js';

function signer(now: { ms: number }, service = 'hubcache') {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return new TokenSigner({ key: privateKey, service, now: () => now.ms });
}

describe('bearer tokens (ES256 JWT)', () => {
  it('issues a JWT whose claims verify, and whose access is checked per repository and action', () => {
    const now = { ms: Date.parse('2025-01-01T00:00:00Z') };
    const s = signer(now);
    const { token } = s.issueAccess('alice', [{ type: 'repository', name: 'myorg/app', actions: ['pull', 'push'] }], 300);
    const [h] = token.split('.');
    assert.deepEqual(JSON.parse(Buffer.from(h!, 'base64url').toString()).alg, 'ES256');
    const r = s.verifyAccess(token);
    assert.ok('claims' in r);
    assert.equal(r.claims.sub, 'alice');
    assert.equal(r.claims.aud, 'hubcache');
    assert.equal(r.claims.exp - r.claims.iat, 300);
    assert.ok(tokenAllows(r.claims, 'myorg/app', 'push'));
    assert.ok(!tokenAllows(r.claims, 'myorg/app', 'delete'));
    assert.ok(!tokenAllows(r.claims, 'myorg/other', 'pull'));
  });

  it('expires on the injected clock', () => {
    const now = { ms: 1_000_000_000_000 };
    const s = signer(now);
    const { token } = s.issueAccess('', [], 300);
    now.ms += 299_000;
    assert.ok('claims' in s.verifyAccess(token));
    now.ms += 1_000;
    assert.deepEqual(s.verifyAccess(token), { problem: 'expired' });
  });

  it('refuses tampered, foreign, malformed and refresh tokens as access tokens', () => {
    const now = { ms: 1_000_000_000_000 };
    const s = signer(now);
    const { token } = s.issueAccess('bob', [{ type: 'repository', name: 'a', actions: ['pull'] }], 300);
    const [h, b, sig] = token.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(b, 'base64url').toString());
    claims.sub = 'alice';
    assert.deepEqual(s.verifyAccess(`${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${sig}`), { problem: 'signature' });
    assert.deepEqual(signer(now).verifyAccess(token), { problem: 'signature' }, 'another key');
    const none = Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url');
    assert.deepEqual(s.verifyAccess(`${none}.${b}.`), { problem: 'malformed' });
    assert.deepEqual(s.verifyAccess('abc'), { problem: 'malformed' });
    const other = signer(now, 'other-service');
    assert.deepEqual(other.verifyAccess(token), { problem: 'signature' });
    const refresh = s.issueRefresh('bob', 'digest', 3600);
    assert.deepEqual(s.verifyAccess(refresh), { problem: 'type' });
    assert.ok('claims' in s.verifyRefresh(refresh));
    assert.deepEqual(s.verifyRefresh(token), { problem: 'type' });
  });
});

describe('the signing key in the store', () => {
  it('is created once, mode 0600, and read back on the next start', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hubcache-key-'));
    try {
      const first = loadOrCreateSigningKey(join(dir, 'auth'));
      assert.equal(first.created, true);
      const path = join(dir, 'auth', 'token-signing-key.pem');
      assert.equal(statSync(path).mode & 0o777, 0o600);
      assert.match(readFileSync(path, 'utf8'), /BEGIN PRIVATE KEY/);
      const second = loadOrCreateSigningKey(join(dir, 'auth'));
      assert.equal(second.created, false);
      // Tokens signed before the restart verify after it.
      const now = { ms: 1_000_000_000_000 };
      const { token } = new TokenSigner({ key: first.key, service: 's', now: () => now.ms }).issueAccess('u', [], 60);
      assert.ok('claims' in new TokenSigner({ key: second.key, service: 's', now: () => now.ms }).verifyAccess(token));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
