import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { sha256Digest } from '../domain/digest.js';
import { verifiedBody } from './pass-through.js';
import { bytesArrived, collect } from './testing/fills.js';

describe('verifiedBody: a pass-through verified while it streams', () => {
  const data = randomBytes(100_000);
  const digest = sha256Digest(data);

  it('passes every byte and ends cleanly when they hash to the digest; reports bytes and a clean end', async () => {
    let bytes = 0;
    let ended: Error | undefined | 'not yet' = 'not yet';
    const body = verifiedBody(Readable.from([data.subarray(0, 40_000), data.subarray(40_000)]), { digest, size: data.length, onBytes: (n) => (bytes += n), onEnd: (e) => (ended = e) });
    assert.ok((await collect(body).done).equals(data));
    assert.equal(bytes, data.length);
    assert.equal(ended, undefined);
  });

  it('holds the last byte back until the digest is checked: wrong bytes end in an error after all but the last byte', async () => {
    const wrong = Buffer.from(data);
    wrong[10] ^= 1;
    const source = new PassThrough();
    let ended: Error | undefined;
    const c = collect(verifiedBody(source, { digest, size: data.length, onEnd: (e) => (ended = e) }));
    source.write(wrong);
    await bytesArrived(c, data.length - 1);
    assert.equal(Buffer.concat(c.got).length, data.length - 1, 'the last byte is not out before the end of the source');
    source.end();
    await assert.rejects(c.done, (err: Error & { code?: string }) => err.code === 'DIGEST_INVALID');
    assert.equal(Buffer.concat(c.got).length, data.length - 1);
    assert.equal((ended as Error | undefined)?.message, 'provided digest did not match uploaded content');
  });

  it('a short body or more bytes than announced is an error, never a clean end', async () => {
    await assert.rejects(collect(verifiedBody(Readable.from([data.subarray(0, 500)]), { digest, size: data.length })).done, /ended after 500 of 100000 bytes/);
    await assert.rejects(collect(verifiedBody(Readable.from([data, Buffer.from('x')]), { digest, size: data.length })).done, /more bytes than announced/);
  });

  it('destroying it destroys the source (the client left)', async () => {
    const source = new PassThrough();
    let ended: Error | undefined;
    const body = verifiedBody(source, { digest, size: data.length, onEnd: (e) => (ended = e) });
    const c = collect(body);
    source.write(data.subarray(0, 1000));
    await bytesArrived(c, 1000);
    body.destroy();
    await new Promise((r) => source.once('close', r));
    assert.ok(source.destroyed);
    assert.match(String(ended), /closed before its end/);
  });
});
