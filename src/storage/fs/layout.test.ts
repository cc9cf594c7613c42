import assert from 'node:assert/strict';
import { join, resolve, sep } from 'node:path';
import { describe, it } from 'node:test';
import { sha256Digest, type Digest } from '../../domain/digest.js';
import type { RepoName, Tag } from '../../domain/reference.js';
import { isRegistryName } from '../../domain/registry-name.js';
import { resolveInside, StorageLayout } from './layout.js';

const root = resolve('/srv/hubcache');
const layout = new StorageLayout({ root });
const digest = sha256Digest('x');
const hex = digest.slice('sha256:'.length);
const key = (upstream: string, repo: string) => ({ upstream, repo: repo as RepoName });

describe('StorageLayout', () => {
  it('maps typed values to the documented paths', () => {
    assert.equal(layout.blobPath(digest), join(root, 'blobs', 'sha256', hex.slice(0, 2), hex));
    assert.equal(layout.manifestPath(digest), join(root, 'manifests', 'sha256', hex.slice(0, 2), hex));
    assert.equal(layout.manifestMediaTypePath(digest), join(root, 'manifests', 'sha256', hex.slice(0, 2), `${hex}.json`));
    const k = key('registry.example.com:5000', 'org/team/app');
    const repoDir = join(root, 'repositories', 'registry.example.com:5000', 'org', 'team', 'app');
    assert.equal(layout.repositoryDir(k), repoDir);
    assert.equal(layout.tagPath(k, 'v1.0' as Tag), join(repoDir, '_tags', 'v1.0'));
    assert.equal(layout.manifestLinkPath(k, digest), join(repoDir, '_manifests', hex));
    assert.match(layout.tempPath('blob'), new RegExp(`^${escape(join(root, 'tmp', 'blob-'))}[0-9a-f-]{36}$`));
    assert.notEqual(layout.tempPath('blob'), layout.tempPath('blob'));
    assert.equal(layout.lockPath, join(root, 'hubcache.lock'), 'outside tmp/: the start-up sweep must not remove it');
  });

  it('accepts hostname[:port] upstream names and refuses everything else', () => {
    for (const ok of ['docker.io', 'ghcr.io', 'localhost', 'registry.example.com:5000', '10.0.0.1:5000', 'a-b.c', 'x:65535']) {
      assert.ok(isRegistryName(ok), ok);
      assert.ok(layout.upstreamDir(ok).startsWith(root + sep));
    }
    const bad = ['', '.', '..', '../etc', 'docker.io/..', 'docker.io/x', 'Docker.io', '-a.io', 'a-.io', 'a..b', '.io', 'io.',
      'host:', 'host:0', 'host:065', 'host:65536', 'host:5000:1', '[::1]:5000', 'host name', 'a\\b', 'a\0b', 'x'.repeat(64) + '.io', `${'a.'.repeat(127)}ab`,
      // domain/registry-name.ts (issue #12): a name clients read as a Docker Hub namespace; 254 characters with the port.
      'registry', `${'a.'.repeat(122)}abcd:65535`];
    for (const name of bad) {
      assert.equal(isRegistryName(name), false, JSON.stringify(name));
      assert.throws(() => layout.repositoryDir(key(name, 'library/alpine')), { code: 'NAME_INVALID' }, JSON.stringify(name));
    }
  });

  it('re-validates values that were cast instead of parsed', () => {
    assert.throws(() => layout.blobPath('sha256:../../etc/passwd' as Digest), { code: 'DIGEST_INVALID' });
    assert.throws(() => layout.blobPath(`sha256:${hex.toUpperCase()}` as Digest), { code: 'DIGEST_INVALID' });
    assert.throws(() => layout.manifestLinkPath(key('docker.io', 'a'), '../x' as Digest), { code: 'DIGEST_INVALID' });
    for (const repo of ['..', '../x', 'a/../../..', '/etc', 'a//b', '_tags', 'a/_manifests']) {
      assert.throws(() => layout.repositoryDir(key('docker.io', repo)), { code: 'NAME_INVALID' }, repo);
    }
    for (const tag of ['..', '.', '../x', 'a/b', '']) {
      assert.throws(() => layout.tagPath(key('docker.io', 'a'), tag as Tag), { code: 'TAG_INVALID' }, tag);
    }
  });

  it('every path it produces lies inside the root', () => {
    const k = key('docker.io', 'library/alpine');
    const paths = [layout.tmpDir, layout.blobsDir, layout.manifestsDir, layout.repositoriesDir, layout.tempPath('meta'), layout.blobPath(digest),
      layout.manifestPath(digest), layout.manifestMediaTypePath(digest), layout.upstreamDir('docker.io'), layout.repositoryDir(k),
      layout.tagsDir(k), layout.tagPath(k, 'latest' as Tag), layout.manifestLinksDir(k), layout.manifestLinkPath(k, digest)];
    for (const p of paths) assert.ok(p.startsWith(root + sep), p);
  });

  it('resolveInside refuses paths that leave (or are) the root, whatever the segments', () => {
    assert.equal(resolveInside(root, 'a', 'b'), join(root, 'a', 'b'));
    assert.equal(resolveInside(root, 'a/../b'), join(root, 'b'));
    for (const segs of [['..'], ['a', '..', '..', 'etc'], ['/etc/passwd'], [''], ['.'], ['a', '..'], ['..', 'hubcache-other']]) {
      assert.throws(() => resolveInside(root, ...segs), /escapes the root/, JSON.stringify(segs));
    }
    // A sibling directory sharing the root's name as a prefix is outside too.
    assert.throws(() => resolveInside(root, `../${'hubcache'}2/x`), /escapes the root/);
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
