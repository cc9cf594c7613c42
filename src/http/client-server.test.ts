import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkingInterval, clientKey } from './client-server.js';

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
