import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findChallenge, parseWwwAuthenticate } from './challenge.js';

const plain = (r: Record<string, string>) => ({ ...r });

test("Docker Hub's Bearer challenge", () => {
  const [ch, ...rest] = parseWwwAuthenticate('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"');
  assert.equal(rest.length, 0);
  assert.equal(ch!.scheme, 'bearer');
  assert.deepEqual(plain(ch!.params), { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' });
});

test('commas inside quoted values do not split parameters (multiple actions in a scope)', () => {
  const [ch] = parseWwwAuthenticate('Bearer realm="https://r.example/token", scope="repository:a/b:pull,push", service="r"');
  assert.equal(ch!.params.scope, 'repository:a/b:pull,push');
  assert.equal(ch!.params.service, 'r');
});

test('quoted-pair escapes and arbitrary parameters (error, error_description)', () => {
  const [ch] = parseWwwAuthenticate('Bearer realm="https://r.example/t\\"x\\\\y",error="insufficient_scope",error_description="need \\"pull\\""');
  assert.equal(ch!.params.realm, 'https://r.example/t"x\\y');
  assert.equal(ch!.params.error, 'insufficient_scope');
  assert.equal(ch!.params.error_description, 'need "pull"');
});

test('case-insensitive scheme and parameter names, whitespace around "=", unquoted tokens', () => {
  const [ch] = parseWwwAuthenticate('BEARER   Realm = "https://r.example/token" ,  SERVICE=registry.example');
  assert.equal(ch!.scheme, 'bearer');
  assert.equal(ch!.params.realm, 'https://r.example/token');
  assert.equal(ch!.params.service, 'registry.example');
});

test('several challenges in one header, told apart from parameters', () => {
  const chs = parseWwwAuthenticate('Basic realm="Registry Realm", charset="UTF-8", Bearer realm="https://a/token",service="s", Negotiate');
  assert.deepEqual(chs.map((c) => c.scheme), ['basic', 'bearer', 'negotiate']);
  assert.deepEqual(plain(chs[0]!.params), { realm: 'Registry Realm', charset: 'UTF-8' });
  assert.deepEqual(plain(chs[1]!.params), { realm: 'https://a/token', service: 's' });
  assert.equal(findChallenge(chs, 'Bearer'), chs[1]);
  assert.equal(findChallenge(chs, 'digest'), undefined);
});

test('several header values (undici gives repeated headers as an array)', () => {
  const chs = parseWwwAuthenticate(['Basic realm="x"', 'Bearer realm="https://a/token"']);
  assert.deepEqual(chs.map((c) => c.scheme), ['basic', 'bearer']);
});

test('token68 form, including "=" padding, followed by another challenge', () => {
  const chs = parseWwwAuthenticate('Custom abc+/def==, Bearer realm="https://a/t"');
  assert.equal(chs[0]!.token68, 'abc+/def==');
  assert.deepEqual(plain(chs[0]!.params), {});
  assert.equal(chs[1]!.params.realm, 'https://a/t');
});

test('empty quoted value, empty list elements and a bare scheme', () => {
  const chs = parseWwwAuthenticate(' , Bearer realm="",, scope="" ,,Basic');
  assert.equal(chs.length, 2);
  assert.deepEqual(plain(chs[0]!.params), { realm: '', scope: '' });
  assert.equal(chs[1]!.scheme, 'basic');
});

test('unterminated quote runs to the end instead of throwing', () => {
  const [ch] = parseWwwAuthenticate('Bearer realm="https://a/t, service=x');
  assert.equal(ch!.params.realm, 'https://a/t, service=x');
});

test('the first occurrence of a repeated parameter wins; __proto__ is just a key', () => {
  const [ch] = parseWwwAuthenticate('Bearer realm="first", realm="second", __proto__="p"');
  assert.equal(ch!.params.realm, 'first');
  assert.equal(ch!.params.__proto__, 'p');
  assert.equal(Object.getPrototypeOf(ch!.params), null);
});

test('garbage and empty input give no challenges or are skipped', () => {
  assert.deepEqual(parseWwwAuthenticate(undefined), []);
  assert.deepEqual(parseWwwAuthenticate(''), []);
  assert.deepEqual(parseWwwAuthenticate('"???" Bearer realm="r"').map((c) => c.scheme).includes('bearer'), true);
});
