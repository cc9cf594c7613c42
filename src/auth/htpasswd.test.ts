import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { entryDigest, HtpasswdFile, parseHtpasswd } from './htpasswd.js';

const hash = (pw: string, prefix: '$2y$' | '$2b$' | '$2a$') => prefix + bcrypt.hashSync(pw, 4).slice(4);

describe('parseHtpasswd', () => {
  it('accepts the bcrypt variants htpasswd -B and others write ($2y$, $2b$, $2a$)', () => {
    const text = `alice:${hash('a', '$2y$')}\nbob:${hash('b', '$2b$')}\r\n# a comment\n\ncarol:${hash('c', '$2a$')}\n`;
    const { users, problems } = parseHtpasswd(text);
    assert.deepEqual([...users.keys()], ['alice', 'bob', 'carol']);
    assert.deepEqual(problems, []);
    assert.ok(bcrypt.compareSync('a', users.get('alice')!), 'bcryptjs verifies $2y$');
  });

  it('refuses non-bcrypt entries, naming the line, the user and the kind, never the hash', () => {
    const text = [
      'md5:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/',
      'sha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=',
      'crypt:$6$saltsalt$abcdefghijklmnopqrstuvwxyz',
      'plain:secret-password',
      'broken:$2y$05$tooShort',
      'nocolon',
      `ok:${hash('x', '$2y$')}`,
    ].join('\n');
    const { users, problems } = parseHtpasswd(text);
    assert.deepEqual([...users.keys()], ['ok']);
    assert.equal(problems.length, 6);
    assert.match(problems[0]!, /^line 1: user "md5" ignored: only bcrypt .* found an MD5 hash/);
    assert.match(problems[1]!, /SHA-1/);
    assert.match(problems[2]!, /crypt\(3\) hash \(\$6\$\)/);
    assert.match(problems[3]!, /plain text/);
    assert.match(problems[4]!, /malformed bcrypt/);
    assert.match(problems[5]!, /^line 6: not "user:hash"/);
    assert.ok(!problems.join().includes('secret-password') && !problems.join().includes('W6ph5'), 'no hash or password in the problems');
  });

  it('entryDigest changes with the entry', () => {
    assert.notEqual(entryDigest(hash('a', '$2y$')), entryDigest(hash('a', '$2y$')));
  });
});

describe('HtpasswdFile', () => {
  it('reloads on change (fs.watch), moving the generation; a bad file keeps the last good users', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hubcache-htpasswd-'));
    const path = join(dir, 'htpasswd');
    writeFileSync(path, `alice:${hash('a', '$2y$')}\n`);
    const errors: string[] = [];
    const file = new HtpasswdFile({ path, pollMs: 3_600_000, onError: (m) => errors.push(m) });
    try {
      assert.deepEqual([...file.users.keys()], ['alice']);
      file.watch();
      const changed = new Promise<void>((r) => file.onChange(r));
      // Replaced atomically, as an editor or a Secret update does.
      writeFileSync(`${path}.new`, `alice:${hash('a', '$2y$')}\nbob:${hash('b', '$2y$')}\n`);
      renameSync(`${path}.new`, path);
      await changed;
      assert.deepEqual([...file.users.keys()].sort(), ['alice', 'bob']);
      assert.equal(file.generation, 1);

      writeFileSync(path, 'alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n');
      file.reload();
      assert.deepEqual([...file.users.keys()].sort(), ['alice', 'bob'], 'kept');
      assert.match(errors.at(-1)!, /has no valid entry .* keeping the 2 users loaded before/);
      rmSync(path);
      file.reload();
      assert.match(errors.at(-1)!, /cannot read .*ENOENT.*keeping the 2 users/);
      assert.equal(file.generation, 1);
    } finally {
      file.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a missing file at start is a clear error', () => {
    assert.throws(() => new HtpasswdFile({ path: '/nonexistent/htpasswd' }), /auth\.htpasswd: cannot read \/nonexistent\/htpasswd: ENOENT/);
  });
});
