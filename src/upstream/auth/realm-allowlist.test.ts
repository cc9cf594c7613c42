import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRealmEntry, realmOrigins } from './realm-allowlist.js';

const https = new URL('https://registry.example');
const http = new URL('http://127.0.0.1:5000');

// [entry, upstream, origin it allows]
const RESOLVED: ReadonlyArray<readonly [string, URL, string]> = [
  ['https://auth.docker.io', https, 'https://auth.docker.io'],
  ['https://auth.docker.io/', https, 'https://auth.docker.io'],
  ['https://AUTH.docker.io:443', https, 'https://auth.docker.io'],
  ['https://auth.example:8443', https, 'https://auth.example:8443'],
  ['http://auth.example', https, 'http://auth.example'], // explicit: the only way to allow http for an https upstream
  ['auth.example', https, 'https://auth.example'],
  ['auth.example:8443', https, 'https://auth.example:8443'],
  ['Auth.Example', https, 'https://auth.example'],
  ['auth.example', http, 'http://auth.example'],
  ['127.0.0.1:5001', http, 'http://127.0.0.1:5001'],
  ['http://127.0.0.1:5001', http, 'http://127.0.0.1:5001'],
  ['[fd00::1]:8443', https, 'https://[fd00::1]:8443'],
  ['https://[FD00::1]', https, 'https://[fd00::1]'],
];

for (const [entry, upstream, origin] of RESOLVED) {
  test(`allowed realm ${entry} for ${upstream.origin} is ${origin}`, () => assert.deepEqual([...realmOrigins([entry], upstream)], [origin]));
}

test('a bare host never allows another scheme or port: http for an https upstream needs an http:// entry', () => {
  const origins = realmOrigins(['auth.example', 'registry.example'], https);
  for (const o of ['http://auth.example', 'https://auth.example:8443', 'http://registry.example', 'https://registry.example:444']) assert.equal(origins.has(o), false, o);
});

// [entry, what the message must say]
const REFUSED: ReadonlyArray<readonly [string, RegExp]> = [
  ['https://auth.docker.io/token', /no path/],
  ['https://auth.example?x=1', /no path/],
  ['https://auth.example#x', /no path/],
  ['https://user:secret@auth.example', /"https:\/\/…@auth\.example": no credentials/],
  ['ftp://user:secret@auth.example/x', /no credentials/],
  ['https://user:secret@', /not a URL/],
  ['ftp://auth.example', /http\(s\)/],
  ['file:///etc/passwd', /http\(s\)/],
  ['https://', /not a URL/],
  ['auth.example/token', /origin .* or a host\[:port\]/],
  ['user@auth.example', /host\[:port\]/],
  ['auth.example:99999', /host\[:port\]/],
  ['auth example', /host\[:port\]/],
  ['*.docker.io', /host\[:port\]/],
  ['', /host\[:port\]/],
];

for (const [entry, message] of REFUSED) {
  test(`allowed realm ${JSON.stringify(entry)} is refused`, () => {
    const r = parseRealmEntry(entry);
    assert.ok('error' in r, 'an error');
    assert.match(r.error, message);
    assert.doesNotMatch(r.error, /secret/, 'the message never repeats a password');
    assert.throws(() => realmOrigins([entry], https), TypeError);
  });
}
