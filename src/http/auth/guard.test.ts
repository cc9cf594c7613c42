import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import express from 'express';
import { AuthGuard } from './guard.js';

/** The client address AuthGuard.address gives a request with `headers`, under express's `trust proxy` setting. */
async function addressSeen(trustProxy: false | string[], headers: Record<string, string>): Promise<string> {
  const app = express();
  app.set('trust proxy', trustProxy);
  app.get('/', (req, res) => {
    res.send(AuthGuard.address(req));
  });
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`, { headers });
    return await res.text();
  } finally {
    server.close();
  }
}

describe('AuthGuard.address (the client address of CIDR rules and failed-login limits)', () => {
  it('trusting no proxy: the socket address, whatever X-Forwarded-For claims', async () => {
    assert.equal(await addressSeen(false, {}), '127.0.0.1');
    assert.equal(await addressSeen(false, { 'X-Forwarded-For': '10.1.2.3' }), '127.0.0.1');
  });

  it('from a trusted proxy: the nearest untrusted hop of X-Forwarded-For (req.ip)', async () => {
    assert.equal(await addressSeen(['127.0.0.1/32'], { 'X-Forwarded-For': '10.1.2.3' }), '10.1.2.3');
    assert.equal(await addressSeen(['127.0.0.1/32'], { 'X-Forwarded-For': '10.1.2.3, 192.0.2.7' }), '192.0.2.7');
    assert.equal(await addressSeen(['127.0.0.1/32'], {}), '127.0.0.1');
  });
});
