import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sha256Digest } from '../domain/digest.js';
import { BlobLeases } from './blob-leases.js';

const d = sha256Digest('x');

describe('BlobLeases', () => {
  it('a leased blob cannot be claimed until every lease is released; releasing twice counts once', async () => {
    const leases = new BlobLeases();
    const a = leases.acquire(d) as () => void;
    const b = leases.acquire(d) as () => void;
    assert.equal(typeof a, 'function');
    assert.equal(leases.readers(d), 2);
    assert.equal(leases.tryClaim(d), undefined);
    a();
    a();
    assert.equal(leases.readers(d), 1);
    assert.equal(leases.tryClaim(d), undefined);
    b();
    const claim = leases.tryClaim(d);
    assert.ok(claim);
    assert.equal(leases.tryClaim(d), undefined, 'one claim at a time');
    claim();
  });

  it('a request arriving during a deletion waits for it, then gets its lease', async () => {
    const leases = new BlobLeases();
    const claim = leases.tryClaim(d)!;
    const pending = leases.acquire(d);
    assert.ok(pending instanceof Promise);
    let got = false;
    void pending.then(() => (got = true));
    await Promise.resolve();
    assert.equal(got, false);
    claim();
    const release = await pending;
    assert.equal(leases.readers(d), 1);
    release();
    assert.equal(leases.readers(d), 0);
  });
});
