/**
 * Repository glob patterns, the one syntax of every setting that names repositories
 * (`upstreams.<name>.repositories`, `auth.rules[].repositories`, `hosted.repositories`): `*`
 * matches within one path component, `**` across components (`**` followed by `/` also matches zero
 * components: `**` + `/app` matches `app` and `a/b/app`), `?` one character other than `/`.
 */
export function globToRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*' && pattern[i + 1] === '*') {
      if (pattern[i + 2] === '/') {
        re += '(?:.*/)?';
        i += 2;
      } else {
        re += '.*';
        i += 1;
      }
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.\\^$+(){}[\]|-]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** A predicate over repository names: true when one of `patterns` matches. */
export function matchesAny(patterns: readonly string[]): (name: string) => boolean {
  const res = patterns.map(globToRegExp);
  return (name) => res.some((re) => re.test(name));
}
