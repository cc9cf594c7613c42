import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNextLink } from './link-header.js';

test('the next page from a distribution-style Link header', () => {
  assert.deepEqual(parseNextLink('</v2/library/alpine/tags/list?last=3.20&n=100>; rel="next"'), { n: 100, last: '3.20' });
});

test('absolute targets, unquoted rel, several links and rel lists', () => {
  assert.deepEqual(parseNextLink('<https://r.example/v2/a/tags/list?n=2&last=b%2Bc>;rel=next'), { n: 2, last: 'b+c' });
  assert.deepEqual(parseNextLink('</v2/a/tags/list?last=x>; rel="prev", </v2/a/tags/list?last=y&n=5>; rel="foo next"'), { n: 5, last: 'y' });
});

test('no header, no next relation, or no last parameter: no next page', () => {
  assert.equal(parseNextLink(undefined), undefined);
  assert.equal(parseNextLink('</v2/a/tags/list?last=x>; rel="prev"'), undefined);
  assert.equal(parseNextLink('</v2/a/tags/list?n=5>; rel="next"'), undefined);
  assert.deepEqual(parseNextLink('</v2/a/tags/list?last=z&n=abc>; rel="next"'), { last: 'z' });
});
