/**
 * The follow endpoint (cluster/peer-server.ts) writes a followed fill with the reader's `writeTo`
 * when it has one (the fill reader's corked batches, as for a replica's own clients): the bytes
 * arrive whole with their Content-Length, and a fill that fails mid-way aborts the connection,
 * never a clean end of a short body.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { Readable, type Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import winston from 'winston';
import type { FollowedFill } from '../../src/cache/fill-coordinator.js';
import { createPeerServer, peerFillPath } from '../../src/cluster/peer-server.js';
import { sha256Digest } from '../../src/domain/digest.js';
import { rawRequest } from '../support/raw-http.js';

const quiet = winston.createLogger({ transports: [new winston.transports.Console({ silent: true })] });

/** A followed fill whose bytes go out only through `writeTo` (its stream half is never read). */
function directFill(parts: Buffer[], failAfter?: number): FollowedFill & { writes: number } {
  const size = parts.reduce((n, p) => n + p.length, 0);
  const fill = {
    size,
    writes: 0,
    body: Object.assign(new Readable({ read() {} }), {
      async writeTo(dest: Writable): Promise<void> {
        fill.writes++;
        for (const [i, p] of parts.entries()) {
          if (i === failAfter) throw new Error('the fill failed');
          if (!dest.write(p)) await once(dest, 'drain');
        }
      },
    }),
  };
  return fill;
}

describe('the follow endpoint streams a fill through its reader’s writeTo', () => {
  const parts = [Buffer.alloc(100_000, 1), Buffer.alloc(200_000, 2), Buffer.alloc(3, 3)];
  const bytes = Buffer.concat(parts);
  const digest = sha256Digest(bytes);
  let fills: Array<ReturnType<typeof directFill>> = [];
  let failAfter: number | undefined;
  const server = createPeerServer({
    source: {
      followFill: () => {
        const f = directFill(parts, failAfter);
        fills.push(f);
        return Promise.resolve(f);
      },
    },
    logger: quiet,
  });
  let url = '';
  before(async () => {
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}${peerFillPath(digest)}`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  it('whole body, its Content-Length, written by writeTo', async () => {
    fills = [];
    failAfter = undefined;
    const res = await rawRequest(url);
    assert.equal(res.status, 200);
    assert.equal(res.outcome, 'complete');
    assert.equal(res.headers['content-length'], String(bytes.length));
    assert.ok(res.body.equals(bytes));
    assert.equal(fills[0]!.writes, 1, 'the reader wrote the bytes itself');
  });

  it('a fill failing mid-way: the connection is aborted after the bytes that went out, never a clean end', async () => {
    fills = [];
    failAfter = 2;
    const res = await rawRequest(url);
    assert.equal(res.status, 200);
    assert.equal(res.outcome, 'error');
    assert.ok(res.body.length < bytes.length, 'short of the announced length');
    assert.equal(fills[0]!.writes, 1);
  });
});
