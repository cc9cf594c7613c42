import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildTagList, TagList } from './tag-list.js';

const doc = (tags: unknown, name = 'org/app') => new TextEncoder().encode(JSON.stringify({ name, tags }));

describe('TagList', () => {
  it('sorts, deduplicates and drops what is not a tag', () => {
    const list = TagList.of(['b', 'a', 'b', '1.0', 'latest', '../x', '', 'a b', 'x\r\ny', '-x', 'A']);
    assert.deepEqual(list.toArray(), ['1.0', 'A', 'a', 'b', 'latest']);
    assert.equal(list.size, 5);
    assert.equal(list.jsonArray().toString(), '["1.0","A","a","b","latest"]');
  });

  it('paginates with n and last as the distribution spec does (last need not be a tag of the list)', () => {
    const list = TagList.of(['a', 'b', 'c', 'd', 'e']);
    const page = (n?: number, last?: string) => {
      const p = list.page({ ...(n !== undefined ? { n } : {}), ...(last !== undefined ? { last } : {}) });
      return { tags: p.tags.toArray(), next: p.next };
    };
    assert.deepEqual(page(), { tags: ['a', 'b', 'c', 'd', 'e'], next: undefined });
    assert.deepEqual(page(2), { tags: ['a', 'b'], next: { n: 2, last: 'b' } });
    assert.deepEqual(page(2, 'b'), { tags: ['c', 'd'], next: { n: 2, last: 'd' } });
    assert.deepEqual(page(2, 'd'), { tags: ['e'], next: undefined });
    assert.deepEqual(page(3, 'bb'), { tags: ['c', 'd', 'e'], next: undefined });
    assert.deepEqual(page(undefined, 'c'), { tags: ['d', 'e'], next: undefined });
    assert.deepEqual(page(10, 'z'), { tags: [], next: undefined });
    assert.deepEqual(page(0), { tags: [], next: undefined });
    assert.equal(list.page({ n: 2, last: 'b' }).tags.jsonArray().toString(), '["c","d"]');
    assert.equal(TagList.empty.jsonArray().toString(), '[]');
  });

  it('buildTagList reads tag-list documents, several pages, `tags: null`, and refuses what is not one', () => {
    const built = buildTagList([doc(['z', 'y']), doc(null), doc(['a', 'y', 'bad/tag'], 'other')]);
    assert.ok(built.ok);
    assert.equal(built.name, 'org/app');
    assert.equal(built.dropped, 1);
    assert.deepEqual(TagList.packed(built.json, built.starts).toArray(), ['a', 'y', 'z']);
    const refused = (pages: Uint8Array[]) => {
      const b = buildTagList(pages);
      return b.ok ? 'accepted' : b.error;
    };
    assert.equal(refused([new TextEncoder().encode('<html>')]), 'tag list is not JSON');
    assert.equal(refused([new TextEncoder().encode('[]')]), 'tag list is not a JSON object');
    assert.equal(refused([doc('x')]), 'tag list has no tags array');
    assert.equal(refused([doc([1])]), 'tag list has a tag that is not a string');
  });

  it('a big list pages by binary search, in the same order JavaScript compares strings', () => {
    const tags = Array.from({ length: 50_000 }, (_, i) => `v${(50_000 - i).toString(36)}`);
    const list = TagList.of(tags);
    const sorted = [...new Set(tags)].sort();
    assert.deepEqual(list.toArray(), sorted);
    const last = sorted[31_337]!;
    assert.deepEqual(list.page({ n: 3, last }).tags.toArray(), sorted.slice(31_338, 31_341));
  });
});

describe('buildTagList reads documents as JSON.parse would', () => {
  const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
  /** The reference: JSON.parse and plain checks. */
  function reference(page: Uint8Array): { error: string } | { tags: string[]; name: string | undefined } {
    let doc: unknown;
    try {
      doc = JSON.parse(new TextDecoder().decode(page));
    } catch {
      return { error: 'tag list is not JSON' };
    }
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return { error: 'tag list is not a JSON object' };
    const d = doc as { name?: unknown; tags?: unknown };
    const tags = d.tags ?? [];
    if (!Array.isArray(tags)) return { error: 'tag list has no tags array' };
    if (!tags.every((t) => typeof t === 'string')) return { error: 'tag list has a tag that is not a string' };
    return { tags: [...new Set(tags.filter((t) => TAG_RE.test(t)))].sort(), name: typeof d.name === 'string' ? d.name : undefined };
  }
  function same(text: string | Uint8Array): void {
    const page = typeof text === 'string' ? new TextEncoder().encode(text) : text;
    const want = reference(page);
    const got = buildTagList([page]);
    const shown = typeof text === 'string' ? text : Buffer.from(text).toString('latin1');
    if ('error' in want) {
      assert.deepEqual(got, { ok: false, error: want.error }, shown);
    } else {
      assert.ok(got.ok, `${shown}: ${got.ok ? '' : got.error}`);
      // A tag written with escapes is dropped by design; the reference can't tell, so skip those.
      if (!/\\/.test(Buffer.from(page).toString('latin1'))) assert.deepEqual(TagList.packed(got.json, got.starts).toArray(), want.tags, shown);
      assert.equal(got.name, want.name, shown);
    }
  }

  it('agrees on hand-picked documents', () => {
    for (const text of [
      '{"name":"a/b","tags":["1.0","latest"]}',
      ' \t\r\n{ "tags" : [ "b" , "a" ] , "name" : "x" } \n',
      '\uFEFF{"tags":["a"]}',
      '{"tags":null}',
      '{}',
      '{"tags":[]}',
      '{"tags":["a"],"tags":["b"]}',
      '{"t\\u0061gs":["a"],"n\\u0061me":"\\u00e9\\n"}',
      '{"extra":{"deep":[1,-2.5e+3,0,true,false,null,{"k":"v\\"\\\\\\/\\b\\f\\n\\r\\t"}]},"tags":["x"]}',
      `{"tags":["é","a b","","-x",".x","x/y","${'a'.repeat(128)}","${'a'.repeat(129)}"]}`,
      '{"tags":[1]}',
      '{"tags":["a",{}]}',
      '{"tags":"a"}',
      '{"tags":{}}',
      '[]',
      '"x"',
      'null',
      '',
      '{',
      '{"tags":["a"]',
      '{"tags":["a",]}',
      '{"tags":["a"]}}',
      '{"tags":["a"]} x',
      "{'tags':[]}",
      '{"tags":[01]}',
      '{"tags":[1.]}',
      '{"tags":[-]}',
      '{"tags":[1e]}',
      '{"tags":[tru]}',
      '{"tags":["\\x"]}',
      '{"tags":["\\u12G4"]}',
      '{"tags":["a\nb"]}',
      '{"name":1,"tags":["a"]}',
      '<html><body>rate limited</body></html>',
    ]) {
      same(text);
    }
    same(new Uint8Array([0x7b, 0x22, 0x74, 0x61, 0x67, 0x73, 0x22, 0x3a, 0x5b, 0x22, 0xff, 0xfe, 0x22, 0x5d, 0x7d])); // invalid UTF-8 in a string
    same(new Uint8Array([0x7b, 0xff, 0x7d]));
  });

  it('agrees on thousands of mutated documents (deterministic)', () => {
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000);
    const alphabet = '{}[]",:\\ 0123456789-+.eEtrufalsn"\'abcxyz/\n\t';
    const base = ['{"name":"org/app","tags":["1.0","0.9","latest","1.0"]}', '{"tags":null,"x":[1,2,{"y":"z"}]}', '{"tags":["a","b"],"name":"n","more":[true,false,null,-1.5e3]}'];
    for (let i = 0; i < 5000; i++) {
      const chars = [...base[i % base.length]!];
      for (let m = 0; m < 1 + Math.floor(random() * 3); m++) {
        const at = Math.floor(random() * (chars.length + 1));
        const op = random();
        const c = alphabet[Math.floor(random() * alphabet.length)]!;
        if (op < 0.4) chars.splice(at, 1);
        else if (op < 0.8) chars.splice(at, 0, c);
        else chars[at] = c;
      }
      same(chars.join(''));
    }
  });

  it('refuses nesting deeper than it follows instead of overflowing the stack', () => {
    const deep = `{"x":${'['.repeat(100_000)}${']'.repeat(100_000)},"tags":[]}`;
    assert.deepEqual(buildTagList([new TextEncoder().encode(deep)]), { ok: false, error: 'tag list is not JSON' });
  });
});
