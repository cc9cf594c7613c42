import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatScope, parseScope, parseScopes, requestedActions } from './scope.js';

describe('token scopes', () => {
  it('parses repository scopes, names with a registry port included', () => {
    assert.deepEqual(parseScope('repository:library/alpine:pull'), { type: 'repository', name: 'library/alpine', actions: ['pull'] });
    assert.deepEqual(parseScope('repository:localhost:5000/org/app:pull,push'), { type: 'repository', name: 'localhost:5000/org/app', actions: ['pull', 'push'] });
    assert.deepEqual(parseScope('repository(plugin):vieux/sshfs:pull'), { type: 'repository', name: 'vieux/sshfs', actions: ['pull'] });
    assert.deepEqual(parseScope('registry:catalog:*'), { type: 'registry', name: 'catalog', actions: ['*'] });
  });

  it('refuses what is not a scope', () => {
    for (const bad of ['', 'repository', 'repository:pull', ':a:b', 'repository::pull']) assert.equal(parseScope(bad), undefined, bad);
  });

  it('takes repeated parameters and space-separated lists (the OAuth2 form)', () => {
    const scopes = parseScopes(['repository:a:pull repository:b:push', 'repository:c:delete', 'junk']);
    assert.deepEqual(scopes.map((s) => s.name), ['a', 'b', 'c']);
  });

  it('maps actions: * is all, unknown ones are dropped', () => {
    assert.deepEqual(requestedActions(parseScope('repository:a:*')!), ['pull', 'push', 'delete']);
    assert.deepEqual(requestedActions(parseScope('repository:a:push,pull,frobnicate')!), ['pull', 'push']);
    assert.equal(formatScope('a/b', ['pull', 'push']), 'repository:a/b:pull,push');
  });
});
