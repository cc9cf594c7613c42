/**
 * The upload forwarder's answer timeout (issue #15): a replica passing an upload request on to the
 * replica holding its session waits for that owner's answer at most `answerTimeoutMs` once the
 * request's body has been passed on (`publishTimeoutMs` for the final PUT) — an owner that accepts
 * and never answers releases the client with BLOB_UPLOAD_UNKNOWN (start over), its record removed.
 * A client slow to send its body is not cut: the wait starts at the body's end. The timers are
 * fired by hand: nothing here is timed.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import winston from 'winston';
import { UploadForwarder, type UploadForwardOutcome } from '../../src/cluster/upload-forwarder.js';
import { isRegistryError } from '../../src/domain/errors.js';

const quiet = winston.createLogger({ transports: [new winston.transports.Console({ silent: true })] });

async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Timers the test fires by hand; `scheduled()` resolves at the next one set. */
function manualTimers() {
  const timers: Array<{ ms: number; fn: () => void; live: boolean }> = [];
  let onSet: (() => void) | undefined;
  return {
    schedule: (ms: number, fn: () => void) => {
      const t = { ms, fn, live: true };
      timers.push(t);
      onSet?.();
      return () => (t.live = false);
    },
    live: () => timers.filter((t) => t.live),
    scheduled: () => new Promise<void>((r) => (onSet = r)),
    fire: () => {
      for (const t of timers.splice(0)) if (t.live) t.fn();
    },
  };
}

describe('the upload forwarder gives up on an owner that accepts and never answers', () => {
  const timers = manualTimers();
  const forgotten: string[] = [];
  const outcomes: UploadForwardOutcome[] = [];
  /** What the owner does with each request: answer once the body is in, or never. */
  let ownerMode: 'answer' | 'hang' = 'hang';
  let ownerGot: ((req: IncomingMessage, bytes: number) => void) | undefined;
  const hung: IncomingMessage[] = [];
  const owner = createServer((req, res) => {
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      bytes += c.length;
      ownerGot?.(req, bytes);
    });
    req.on('end', () => {
      ownerGot?.(req, bytes);
      if (ownerMode === 'answer') res.writeHead(202, { range: `0-${bytes - 1}` }).end();
      else hung.push(req);
    });
  });
  let forwarder: UploadForwarder;
  const front = createServer((req, res) => {
    const ac = new AbortController();
    forwarder.forward('uuid-1', req.url!, req, res, ac.signal).catch((err: unknown) => {
      res.writeHead(isRegistryError(err) ? 404 : 500, { 'content-type': 'application/json' }).end(JSON.stringify({ code: isRegistryError(err) ? err.code : String(err) }));
    });
  });
  let frontUrl = '';

  before(async () => {
    const ownerUrl = await listen(owner);
    frontUrl = await listen(front);
    forwarder = new UploadForwarder({
      owners: { uploadOwner: () => Promise.resolve({ id: 'owner', url: ownerUrl, record: 'record-1' }), forgetUpload: (_id, record) => (forgotten.push(record), Promise.resolve()) },
      selfId: 'me',
      logger: quiet,
      metrics: { uploadForwarded: (o) => outcomes.push(o) },
      answerTimeoutMs: 60_000,
      publishTimeoutMs: 1_800_000,
      schedule: timers.schedule,
    });
  });
  after(async () => {
    owner.closeAllConnections();
    front.closeAllConnections();
    await forwarder.close();
    await Promise.all([new Promise((r) => owner.close(r)), new Promise((r) => front.close(r))]);
  });

  /** A request to the front whose body the test writes itself; resolves with status and parsed body. */
  function send(method: string, path: string) {
    const req = httpRequest(`${frontUrl}${path}`, { method, headers: { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' } });
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      req.on('response', (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('error', reject);
    });
    return { req, answer };
  }
  const ownerHas = (n: number) => new Promise<void>((r) => (ownerGot = (_req, bytes) => bytes >= n && r()));

  it('a PATCH: no wait while the client is still sending; once the body is passed on, a silent owner is given up on → 404 BLOB_UPLOAD_UNKNOWN, record removed', async () => {
    ownerMode = 'hang';
    const { req, answer } = send('PATCH', '/v2/team/app/blobs/uploads/uuid-1');
    const first = ownerHas(1000);
    req.write(Buffer.alloc(1000, 1));
    await first;
    assert.equal(timers.live().length, 0, 'no answer timeout while the body is still coming (the client takes its time)');
    const set = timers.scheduled();
    req.end(Buffer.alloc(500, 2));
    await set;
    assert.deepEqual(timers.live().map((t) => t.ms), [60_000], 'the answer timeout, from the end of the body');
    timers.fire();
    const res = await answer;
    assert.equal(res.status, 404);
    assert.deepEqual(JSON.parse(res.body), { code: 'BLOB_UPLOAD_UNKNOWN' });
    assert.deepEqual(forgotten, ['record-1'], 'the session record is removed: the others answer at once too');
    assert.deepEqual(outcomes, ['owner_gone']);
  });

  it('the final PUT waits publishTimeoutMs (the owner publishes the blob first), then the same', async () => {
    forgotten.length = 0;
    outcomes.length = 0;
    const { req, answer } = send('PUT', '/v2/team/app/blobs/uploads/uuid-1?digest=sha256:00');
    const set = timers.scheduled();
    req.end();
    await set;
    assert.deepEqual(timers.live().map((t) => t.ms), [1_800_000]);
    timers.fire();
    assert.equal((await answer).status, 404);
    assert.deepEqual(forgotten, ['record-1']);
    assert.deepEqual(outcomes, ['owner_gone']);
  });

  it('an owner that answers: its answer comes back and the timeout is cancelled', async () => {
    forgotten.length = 0;
    outcomes.length = 0;
    ownerMode = 'answer';
    const { req, answer } = send('PATCH', '/v2/team/app/blobs/uploads/uuid-1');
    req.end(Buffer.alloc(2000, 3));
    const res = await answer;
    assert.equal(res.status, 202);
    assert.equal(timers.live().length, 0, 'nothing left to fire');
    assert.deepEqual(forgotten, []);
    assert.deepEqual(outcomes, ['forwarded']);
  });
});
