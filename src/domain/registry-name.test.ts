import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RegistryError } from './errors.js';
import { isRegistryName, namesRegistry, parseRegistryName, REGISTRY_NAME_PATTERN, registryNameProblem, splitRegistry } from './registry-name.js';
import { INVALID_REGISTRY_NAMES, registryNameCorpus, VALID_REGISTRY_NAMES } from './testing/registry-name-corpus.js';

/** The rule written out a second way, clause by clause, to check the regular expression against. */
function oracle(s: string): boolean {
  if (s.length === 0 || s.length > 253) return false;
  const parts = s.split(':');
  if (parts.length > 2) return false;
  const [host, port] = parts as [string, string | undefined];
  if (port !== undefined) {
    if (!/^[0-9]+$/.test(port) || String(Number(port)) !== port || Number(port) < 1 || Number(port) > 65535) return false;
  }
  const labels = host.split('.');
  const labelOk = (l: string) => l.length >= 1 && l.length <= 63 && /^[a-z0-9-]+$/.test(l) && !l.startsWith('-') && !l.endsWith('-');
  if (!labels.every(labelOk)) return false;
  return labels.length > 1 || port !== undefined || host === 'localhost';
}

describe('registry names (issue #12: one rule)', () => {
  it('accepts hostnames with a dot, a port or localhost', () => {
    for (const name of VALID_REGISTRY_NAMES) {
      assert.ok(isRegistryName(name), JSON.stringify(name));
      assert.equal(parseRegistryName(name), name);
      assert.equal(registryNameProblem(name), undefined);
    }
  });

  it('refuses everything else with NAME_INVALID', () => {
    for (const name of INVALID_REGISTRY_NAMES) {
      assert.equal(isRegistryName(name), false, JSON.stringify(name));
      assert.throws(() => parseRegistryName(name), (err: unknown) => err instanceof RegistryError && err.code === 'NAME_INVALID', JSON.stringify(name));
    }
  });

  it('agrees with the rule written clause by clause, over a generated corpus', () => {
    const corpus = registryNameCorpus();
    let valid = 0;
    for (const name of corpus) {
      const want = oracle(name);
      assert.equal(isRegistryName(name), want, JSON.stringify(name));
      assert.equal(registryNameProblem(name) === undefined, want, JSON.stringify(name));
      if (want) valid++;
    }
    // The corpus is worth something only if it has plenty on both sides.
    assert.ok(valid > corpus.length / 5 && valid < (corpus.length * 4) / 5, `${valid} of ${corpus.length} valid`);
  });

  it('says what is wrong', () => {
    const says = (name: string, re: RegExp) => assert.match(registryNameProblem(name) ?? 'accepted', re, name);
    says('registry.local:05000', /port 05000 has a leading zero \(write 5000\)/);
    says('host:99999', /port 99999 is out of range \(1–65535\)/);
    says('host:0', /port 0 is out of range/);
    says(`${'a'.repeat(64)}.example.com`, /is 64 characters long, at most 63/);
    says(`${'a.'.repeat(127)}ab`, /256 characters long, at most 253/);
    says('Docker.io', /lowercase/);
    says('myregistry', /no dot and no port .*\(docker pull myregistry\/app pulls docker\.io\/myregistry\/app/);
    says('http://x', /hostnames with an optional port/);
    says('a..b', /hostnames with an optional port/);
  });

  it('the pattern uses only what Go RE2 (helm) reads too: no lookaround, no backreferences', () => {
    assert.doesNotMatch(REGISTRY_NAME_PATTERN, /\(\?[=!<]|\\[1-9]/);
  });

  it("splits a registry off an image name by docker's rule", () => {
    assert.deepEqual(splitRegistry('ghcr.io/org/app'), { registry: 'ghcr.io', rest: 'org/app' });
    assert.deepEqual(splitRegistry('localhost/app'), { registry: 'localhost', rest: 'app' });
    assert.deepEqual(splitRegistry('registry:5000/app'), { registry: 'registry:5000', rest: 'app' });
    assert.deepEqual(splitRegistry('Evil.Example/app'), { registry: 'Evil.Example', rest: 'app' }, 'recognised, not validated');
    for (const name of ['alpine', 'org/app', 'my.org', '/x', 'library/alpine']) assert.equal(splitRegistry(name), undefined, name);
    assert.ok(namesRegistry('a.b') && namesRegistry('a:1') && namesRegistry('localhost'));
    assert.ok(!namesRegistry('bitnami') && !namesRegistry('localhost2'));
  });

  it('every registry name reads as a registry in an image name', () => {
    for (const name of registryNameCorpus().filter(isRegistryName)) assert.deepEqual(splitRegistry(`${name}/x`), { registry: name, rest: 'x' }, name);
  });
});
