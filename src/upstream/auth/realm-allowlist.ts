/**
 * Which token realms an upstream may send us to. A registry's `WWW-Authenticate` challenge names
 * the realm, and hubcache sends the upstream's credentials there (Basic): the realm is matched as
 * an origin — scheme, host and port — against the operator's list, never by host name alone
 * (issue #11: another port of the same host, or `http:` for an `https:` upstream, got the
 * credentials, the second in clear text).
 *
 * An entry is one of
 *   - an origin, `https://auth.docker.io` or `http://127.0.0.1:5001`: that scheme, host and port
 *     (the scheme's default port when none is written); a trailing `/` is allowed, nothing else;
 *   - a bare `host` or `host:port` (`auth.example.com`, `[fd00::1]:8443`): the upstream URL's
 *     scheme, and that scheme's default port when none is written.
 * So an `http:` realm is allowed for an `https:` upstream only by an entry that says `http://`.
 */

export interface RealmEntry {
  /** `http:` or `https:` when the entry names a scheme; undefined for a bare host. */
  readonly scheme?: 'http:' | 'https:';
  /** `host` or `host:port`, lowercase (IPv6 in brackets). */
  readonly host: string;
}

// host[:port]: a DNS name or IPv4 address, or an IPv6 address in brackets.
const BARE = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(\d{1,5}))?$/;

/** One entry parsed, or a message saying what is wrong with it (for config errors). */
export function parseRealmEntry(entry: string): RealmEntry | { readonly error: string } {
  const hint = 'expected an origin (https://auth.example.com, http://127.0.0.1:5001) or a host[:port]';
  // Messages quote the entry with any `user:password@` masked: config errors are printed and logged.
  const shown = JSON.stringify(entry.replace(/\/\/[^/]*@/, '//…@'));
  if (entry.includes('://')) {
    let u: URL;
    try {
      u = new URL(entry);
    } catch {
      return { error: `${shown} is not a URL; ${hint}` };
    }
    if (u.username || u.password) return { error: `${shown}: no credentials in realm entries (they come from username and password/passwordFile)` };
    if (u.protocol !== 'https:' && u.protocol !== 'http:') return { error: `${shown}: a realm is http(s); ${hint}` };
    if (u.pathname !== '/' || u.search || u.hash || /[?#]/.test(entry)) return { error: `${shown}: only the origin, no path (write ${u.origin}, not the realm URL)` };
    return { scheme: u.protocol, host: u.host };
  }
  const m = BARE.exec(entry);
  if (!m || (m[1] !== undefined && Number(m[1]) > 65535) || !URL.canParse(`https://${entry}`)) return { error: `${shown}: ${hint}` };
  return { host: entry.toLowerCase() };
}

/**
 * The origins (`https://auth.docker.io`) a realm URL's `origin` must equal. Throws TypeError on an
 * invalid entry (the config loader has already refused those with a message).
 */
export function realmOrigins(entries: readonly string[], upstream: URL): ReadonlySet<string> {
  const out = new Set<string>();
  for (const entry of entries) {
    const e = parseRealmEntry(entry);
    if ('error' in e) throw new TypeError(`allowed realm: ${e.error}`);
    out.add(new URL(`${e.scheme ?? upstream.protocol}//${e.host}`).origin);
  }
  return out;
}
