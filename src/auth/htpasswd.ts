import { createHash } from 'node:crypto';
import { statSync, readFileSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';

/**
 * Users from an htpasswd file with bcrypt hashes, as `htpasswd -B` writes them (`user:$2y$05$…`).
 * Only bcrypt is accepted (`$2a$`, `$2b$`, `$2y$`): MD5 (`$apr1$`), SHA-1 (`{SHA}`), crypt(3) and
 * plain entries are refused, like registry:2 does, each with a problem naming the line and the
 * user, never the hash.
 */
export interface Htpasswd {
  /** user → bcrypt hash. */
  readonly users: ReadonlyMap<string, string>;
  /** One line per refused entry, for the log. */
  readonly problems: readonly string[];
}

const BCRYPT = /^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$/;

export function parseHtpasswd(text: string): Htpasswd {
  const users = new Map<string, string>();
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon <= 0) {
      problems.push(`line ${i + 1}: not "user:hash"`);
      return;
    }
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (!BCRYPT.test(hash)) {
      problems.push(`line ${i + 1}: user ${JSON.stringify(user)} ignored: only bcrypt hashes ($2y$, $2b$, $2a$; htpasswd -B) are accepted, found ${hashKind(hash)}`);
      return;
    }
    if (users.has(user)) problems.push(`line ${i + 1}: user ${JSON.stringify(user)} appears again; the later entry wins`);
    users.set(user, hash);
  });
  return { users, problems };
}

function hashKind(hash: string): string {
  if (hash.startsWith('$apr1$')) return 'an MD5 hash ($apr1$)';
  if (hash.startsWith('{SHA}')) return 'a SHA-1 hash ({SHA})';
  if (hash.startsWith('$2')) return 'a malformed bcrypt hash';
  if (/^\$\d\$/.test(hash)) return `a crypt(3) hash (${hash.slice(0, 3)})`;
  return 'something else (plain text or crypt)';
}

/** A digest of a user's entry: changes when the password does (refresh tokens carry it). */
export function entryDigest(hash: string): string {
  return createHash('sha256').update(hash).digest('base64url').slice(0, 22);
}

export interface HtpasswdFileOptions {
  readonly path: string;
  /** How often the file's mtime and size are checked besides fs.watch (which misses some changes: NFS, Secret volume symlink swaps). */
  readonly pollMs?: number;
  readonly onLoad?: (info: { users: number; problems: readonly string[] }) => void;
  /** A reload failed (unreadable, or no valid entry where there were some): the last good users stay. */
  readonly onError?: (message: string) => void;
}

/**
 * The htpasswd file, kept current: reloaded when it changes (fs.watch on its directory, so an
 * atomic replace or a Kubernetes Secret update is seen, plus a periodic mtime/size check). A file
 * that can't be read keeps the last good users and reports an error. `generation` moves on every
 * reload, so caches of verified credentials can drop what they know.
 */
export class HtpasswdFile {
  #current: Htpasswd;
  #generation = 0;
  #stamp: string;
  readonly #opts: HtpasswdFileOptions;
  #watcher?: FSWatcher;
  #timer?: NodeJS.Timeout;
  readonly #listeners = new Set<() => void>();

  /** Reads the file once; throws when it can't be read (at start, a missing file is a configuration error). */
  constructor(opts: HtpasswdFileOptions) {
    this.#opts = opts;
    this.#stamp = stampOf(opts.path);
    let text: string;
    try {
      text = readFileSync(opts.path, 'utf8');
    } catch (err) {
      throw new Error(`auth.htpasswd: cannot read ${opts.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    this.#current = parseHtpasswd(text);
    opts.onLoad?.({ users: this.#current.users.size, problems: this.#current.problems });
  }

  get users(): ReadonlyMap<string, string> {
    return this.#current.users;
  }

  get generation(): number {
    return this.#generation;
  }

  /** Called after every successful reload. */
  onChange(listener: () => void): void {
    this.#listeners.add(listener);
  }

  /** Starts watching; `close()` stops. */
  watch(): void {
    try {
      this.#watcher = watch(dirname(this.#opts.path), (_event, name) => {
        if (name === null || name === basename(this.#opts.path) || name.startsWith('..')) this.check();
      });
      this.#watcher.on('error', () => undefined);
    } catch {
      // No inotify (some network filesystems): the periodic check alone.
    }
    this.#timer = setInterval(() => this.check(), this.#opts.pollMs ?? 10_000);
    this.#timer.unref();
  }

  /** Reloads when the file's mtime or size moved since the last load. */
  check(): void {
    const stamp = stampOf(this.#opts.path);
    if (stamp === this.#stamp) return;
    this.reload(stamp);
  }

  reload(stamp = stampOf(this.#opts.path)): void {
    let next: Htpasswd;
    try {
      next = parseHtpasswd(readFileSync(this.#opts.path, 'utf8'));
    } catch (err) {
      this.#opts.onError?.(`cannot read ${this.#opts.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}; keeping the ${this.#current.users.size} users loaded before`);
      return;
    }
    this.#stamp = stamp;
    if (next.users.size === 0 && next.problems.length > 0) {
      this.#opts.onError?.(`${this.#opts.path} has no valid entry (${next.problems.join('; ')}); keeping the ${this.#current.users.size} users loaded before`);
      return;
    }
    this.#current = next;
    this.#generation++;
    this.#opts.onLoad?.({ users: next.users.size, problems: next.problems });
    for (const l of this.#listeners) l();
  }

  close(): void {
    this.#watcher?.close();
    if (this.#timer) clearInterval(this.#timer);
  }
}

function stampOf(path: string): string {
  try {
    const st = statSync(path);
    return `${st.mtimeMs}:${st.size}:${st.ino}`;
  } catch {
    return 'missing';
  }
}
