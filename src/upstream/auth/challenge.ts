/**
 * `WWW-Authenticate` parsing (RFC 9110 §11.6.1, §11.2):
 *
 *   WWW-Authenticate = #challenge
 *   challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
 *   auth-param = token BWS "=" BWS ( token / quoted-string )
 *
 * Commas separate both challenges and parameters, so a comma followed by `token =` continues the
 * current challenge and a comma followed by a bare token starts a new one. Registries put the
 * Bearer `realm`, `service` and `scope` here (distribution spec/auth/token.md); we read whatever
 * parameters are present and never assume Docker Hub's values. Malformed input is parsed leniently
 * (an unterminated quote runs to the end): a challenge we can't use is refused by the caller.
 */
export interface Challenge {
  /** Lowercased: auth schemes are case-insensitive (`Bearer`, `bearer`). */
  readonly scheme: string;
  /** Parameter names lowercased; the first occurrence wins. No prototype, so `__proto__` is just a key. */
  readonly params: Readonly<Record<string, string>>;
  /** The token68 form (`Basic dXNlcg==`-style), when the challenge used it instead of parameters. */
  readonly token68?: string;
}

// RFC 9110 §5.6.2 tchar.
const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
const TOKEN68_CHAR = /[A-Za-z0-9\-._~+/]/;

class Cursor {
  pos = 0;
  constructor(readonly s: string) {}
  get done(): boolean {
    return this.pos >= this.s.length;
  }
  peek(): string {
    return this.s[this.pos] ?? '';
  }
  skipWhitespace(): void {
    while (this.peek() === ' ' || this.peek() === '\t') this.pos++;
  }
  skipSeparators(): void {
    while (this.peek() === ' ' || this.peek() === '\t' || this.peek() === ',') this.pos++;
  }
  token(): string {
    const start = this.pos;
    while (!this.done && TCHAR.test(this.peek())) this.pos++;
    return this.s.slice(start, this.pos);
  }
  quoted(): string {
    this.pos++; // opening quote
    let out = '';
    while (!this.done) {
      const c = this.s[this.pos++]!;
      if (c === '"') return out;
      if (c === '\\' && !this.done) out += this.s[this.pos++];
      else out += c;
    }
    return out;
  }
  /** Whether a `name =` parameter starts here (without consuming it). */
  atParam(): boolean {
    const save = this.pos;
    const name = this.token();
    this.skipWhitespace();
    const isParam = name.length > 0 && this.peek() === '=';
    this.pos = save;
    return isParam;
  }
  /** A token68 here: its characters, then only `=` padding, then the end of the challenge. */
  token68(): string | undefined {
    const save = this.pos;
    while (!this.done && TOKEN68_CHAR.test(this.peek())) this.pos++;
    while (this.peek() === '=') this.pos++;
    const value = this.s.slice(save, this.pos);
    this.skipWhitespace();
    if (value.length > 0 && (this.done || this.peek() === ',')) return value;
    this.pos = save;
    return undefined;
  }
}

function parseOne(header: string, out: Challenge[]): void {
  const c = new Cursor(header);
  for (;;) {
    c.skipSeparators();
    if (c.done) return;
    const scheme = c.token();
    if (scheme === '') {
      c.pos++; // not a challenge: skip the offending character and resynchronise
      continue;
    }
    const params: Record<string, string> = Object.create(null);
    let token68: string | undefined;
    c.skipWhitespace();
    if (!c.atParam()) token68 = c.token68();
    while (token68 === undefined) {
      c.skipSeparators();
      if (c.done || !c.atParam()) break;
      const name = c.token().toLowerCase();
      c.skipWhitespace();
      c.pos++; // '='
      c.skipWhitespace();
      const value = c.peek() === '"' ? c.quoted() : c.token();
      if (!(name in params)) params[name] = value;
    }
    out.push(token68 === undefined ? { scheme: scheme.toLowerCase(), params } : { scheme: scheme.toLowerCase(), params, token68 });
  }
}

/** All challenges in one or more `WWW-Authenticate` header values, in order. */
export function parseWwwAuthenticate(header: string | readonly string[] | undefined): Challenge[] {
  const out: Challenge[] = [];
  for (const h of typeof header === 'string' ? [header] : (header ?? [])) parseOne(h, out);
  return out;
}

/** The first challenge of a scheme (`bearer`, `basic`), case-insensitively. */
export function findChallenge(challenges: readonly Challenge[], scheme: string): Challenge | undefined {
  const want = scheme.toLowerCase();
  return challenges.find((ch) => ch.scheme === want);
}
