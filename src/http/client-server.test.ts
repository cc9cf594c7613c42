import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import express from 'express';
import { Agent, request } from 'undici';
import { silentLogger } from '../lib/logger.js';
import { Metrics } from '../observability/metrics.js';
import { checkingInterval, clientKey, createClientServer } from './client-server.js';

describe('client connection limits: who is one client', () => {
  it('IPv4 addresses (also IPv4-mapped IPv6) are counted per address', () => {
    assert.equal(clientKey('10.1.2.3'), '10.1.2.3');
    assert.equal(clientKey('::ffff:10.1.2.3'), '10.1.2.3');
    assert.equal(clientKey('::FFFF:10.1.2.3'), '10.1.2.3');
  });

  it('IPv6 addresses are counted per /64, whatever their spelling', () => {
    const key = '2001:db8:aa:1::/64';
    assert.equal(clientKey('2001:db8:aa:1::1'), key);
    assert.equal(clientKey('2001:0db8:00aa:0001:ffff:1:2:3'), key);
    assert.equal(clientKey('2001:db8:aa:1:0:0:0:9%eth0'), key);
    assert.notEqual(clientKey('2001:db8:aa:2::1'), key);
    assert.equal(clientKey('::1'), '0:0:0:0::/64');
    assert.equal(clientKey('fe80::1'), 'fe80:0:0:0::/64');
    assert.equal(clientKey('64:ff9b::192.0.2.1'), '64:ff9b:0:0::/64');
    assert.equal(clientKey(undefined), '');
  });
});

describe('the headers-timeout check interval', () => {
  it('is a quarter of the timeout, between 50 ms and 5 s (Node checks every 30 s by default)', () => {
    assert.equal(checkingInterval(60_000), 5_000);
    assert.equal(checkingInterval(1_000), 250);
    assert.equal(checkingInterval(100), 50);
  });
});

describe('requests and responses born as express makes them', () => {
  it("Node creates each request and response with the app's prototypes, so express has none to change (a changed prototype gets every request promoted to V8's old generation)", async () => {
    const app = express();
    const seen: Array<{ request: boolean; response: boolean; after: boolean }> = [];
    app.get('/x', (req, res) => {
      seen[seen.length - 1]!.after = Object.getPrototypeOf(req) === app.request && Object.getPrototypeOf(res) === app.response;
      res.status(201).json({ path: req.path });
    });
    // What the server hands the app, before express touches it.
    const listener = Object.assign((req: IncomingMessage, res: ServerResponse) => {
      seen.push({ request: Object.getPrototypeOf(req) === app.request, response: Object.getPrototypeOf(res) === app.response, after: false });
      app(req, res);
    }, { request: app.request, response: app.response });
    const server = createClientServer(listener, { headersTimeout: 5_000, keepAliveTimeout: 5_000, maxConnections: 10, maxConnectionsPerClient: 0, logger: silentLogger(), metrics: new Metrics({ collectDefault: false }) });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const agent = new Agent({ connections: 1 });
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/x`;
      // Two requests on one kept-alive connection: the second message is made the same way.
      for (let i = 0; i < 2; i++) {
        const res = await request(url, { dispatcher: agent });
        assert.equal(res.statusCode, 201);
        assert.deepEqual(await res.body.json(), { path: '/x' });
      }
      assert.deepEqual(seen, [
        { request: true, response: true, after: true },
        { request: true, response: true, after: true },
      ]);
      assert.ok(Object.getPrototypeOf(app.request) === express.request && Object.getPrototypeOf(app.response) === express.response);
    } finally {
      await agent.close();
      server.closeAllConnections();
      server.close();
    }
  });
});
