/**
 * `GET /v2/<name>/tags/list`: the upstream's list under the client's spelling of the name, `n` /
 * `last` pagination with a `Link` to the next page that a client can follow to the end, the same
 * pages from an upstream that ignores pagination, and the tags this cache knows when the
 * upstream is down.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { FakeRegistry } from '../../src/upstream/testing/fake-registry.js';
import { startApp, withApp, type AppHarness } from '../support/app-harness.js';
import { ociError, putImage } from '../support/oci-fixtures.js';

const TAGS = ['1.0', '1.1', '2.0', 'latest', 'stable'];

/** Follows `Link: <…>; rel="next"` from `path` to the last page; returns every page's tags. */
async function allPages(hc: AppHarness, path: string): Promise<{ pages: string[][]; links: string[] }> {
  const pages: string[][] = [];
  const links: string[] = [];
  let next: string | undefined = path;
  while (next !== undefined) {
    const res = await hc.fetch(next);
    assert.equal(res.status, 200, next);
    pages.push(((await res.json()) as { tags: string[] }).tags);
    const link = res.headers.get('link');
    if (link) links.push(link);
    next = link ? /^<([^>]+)>; rel="next"$/.exec(link)?.[1] : undefined;
    assert.ok(pages.length <= TAGS.length + 1, 'pagination ends');
  }
  return { pages, links };
}

describe('tags/list', () => {
  let hc: AppHarness;

  before(async () => {
    hc = await startApp({ upstreams: { 'docker.io': {}, 'ghcr.io': { registry: new FakeRegistry() } } });
    hc.registry.tags.set('library/app', [...TAGS].reverse());
    hc.upstreams.get('ghcr.io')!.registry!.tags.set('org/app', TAGS);
  });
  afterEach(() => {
    hc.registry.hook = undefined;
  });
  after(() => hc.close());

  it('lists the upstream’s tags, sorted, under the normalised name', async () => {
    const res = await hc.fetch('/v2/app/tags/list');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    assert.deepEqual(await res.json(), { name: 'library/app', tags: TAGS });
    assert.equal(res.headers.get('link'), null);
  });

  it('n and last page through the list; the Link names the client’s path and is followed to the end', async () => {
    const { pages, links } = await allPages(hc, '/v2/app/tags/list?n=2');
    assert.deepEqual(pages, [['1.0', '1.1'], ['2.0', 'latest'], ['stable']]);
    assert.equal(links[0], '</v2/app/tags/list?n=2&last=1.1>; rel="next"');
    const after = await hc.fetch('/v2/library/app/tags/list?last=2.0');
    assert.deepEqual(((await after.json()) as { tags: string[] }).tags, ['latest', 'stable']);
  });

  it('the same pages for a registry named in the path', async () => {
    const { pages, links } = await allPages(hc, '/v2/ghcr.io/org/app/tags/list?n=3');
    assert.deepEqual(pages, [['1.0', '1.1', '2.0'], ['latest', 'stable']]);
    assert.equal(links[0], '</v2/ghcr.io/org/app/tags/list?n=3&last=2.0>; rel="next"');
  });

  it('the same pages for a registry named by ?ns=: the Link keeps the ns so the next page comes from the same registry', async () => {
    const { pages, links } = await allPages(hc, '/v2/org/app/tags/list?n=3&ns=ghcr.io');
    assert.deepEqual(pages, [['1.0', '1.1', '2.0'], ['latest', 'stable']]);
    assert.equal(links[0], '</v2/org/app/tags/list?n=3&last=2.0&ns=ghcr.io>; rel="next"');
  });

  it('an upstream that ignores n and last (as distribution 2.8 does) is paginated here', async () => {
    hc.registry.hook = (req, res) => {
      if (!req.url?.includes('/tags/list')) return false;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ name: 'library/app', tags: TAGS }));
      return true;
    };
    const { pages } = await allPages(hc, '/v2/library/app/tags/list?n=2&last=1.0');
    assert.deepEqual(pages, [['1.1', '2.0'], ['latest', 'stable']]);
  });

  it('a repository without tags (distribution answers "tags": null) lists none', async () => {
    hc.registry.hook = (req, res) => {
      if (!req.url?.includes('/tags/list')) return false;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"name":"library/empty","tags":null}');
      return true;
    };
    const res = await hc.fetch('/v2/library/empty/tags/list');
    assert.deepEqual(await res.json(), { name: 'library/empty', tags: [] });
  });

  it('an unknown repository is 404 NAME_UNKNOWN; a bad n is 400 PAGINATION_NUMBER_INVALID before anything goes upstream', async () => {
    const unknown = await hc.fetch('/v2/library/nope/tags/list');
    assert.equal(unknown.status, 404);
    assert.equal((await ociError(unknown)).code, 'NAME_UNKNOWN');
    const before = hc.upstreamServer.requests.length;
    for (const n of ['abc', '-1', '1.5', '10001', '9999999']) {
      const res = await hc.fetch(`/v2/library/app/tags/list?n=${n}`);
      assert.equal(res.status, 400, n);
      assert.equal((await ociError(res)).code, 'PAGINATION_NUMBER_INVALID', n);
    }
    assert.equal(hc.upstreamServer.requests.length, before);
  });
});

describe('tags/list while the upstream is down', () => {
  it('lists the tags this cache knows, paginated and marked stale; none known is 503', async () => {
    await withApp({}, async (hc) => {
      for (const tag of ['b', 'a', 'c']) {
        putImage(hc.registry, 'library/known', tag, { seed: `known-${tag}` });
        assert.equal((await hc.pull(`/v2/library/known/manifests/${tag}`)).status, 200);
      }
      hc.registry.hook = (_req, res) => (res.writeHead(503).end(), true);
      const res = await hc.fetch('/v2/library/known/tags/list?n=2');
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-hubcache-stale'), 'unavailable');
      assert.deepEqual(await res.json(), { name: 'library/known', tags: ['a', 'b'] });
      assert.equal(res.headers.get('link'), '</v2/library/known/tags/list?n=2&last=b>; rel="next"');
      const unknown = await hc.fetch('/v2/library/never/tags/list');
      assert.equal(unknown.status, 503);
      assert.equal((await ociError(unknown)).code, 'UNAVAILABLE');
    });
  });
});
