import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { createSecureContext, type SecureContextOptions } from 'node:tls';

/** Where the TLS material is (config `tls`): PEM files. */
export interface TlsPaths {
  readonly certificate: string;
  readonly key: string;
  /** A CA bundle: clients must present a certificate issued by one of them. */
  readonly clientCA?: string;
}

/** A certificate and key read, checked against each other and ready for `tls.createServer`/`setSecureContext`. */
export interface TlsPair {
  readonly context: SecureContextOptions;
  /** The leaf certificate's notAfter. */
  readonly notAfter: Date;
  readonly subject: string;
  /** SHA-256 fingerprint of the leaf certificate (for logs: which certificate is served). */
  readonly fingerprint: string;
  /** Identifies the files' contents: a reload with the same bytes changes nothing. */
  readonly contentHash: string;
}

/**
 * Reads and checks a certificate, its key and the optional client CA bundle: every file readable,
 * PEM that parses, the key the certificate's, a context OpenSSL accepts. Throws an Error whose
 * message names the file and the problem (for a configuration error or a reload's log line).
 */
export function readTlsPair(paths: TlsPaths): TlsPair {
  const read = (what: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`${what}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const cert = read('tls.certificate', paths.certificate);
  const key = read('tls.key', paths.key);
  const ca = paths.clientCA === undefined ? undefined : read('tls.clientCA', paths.clientCA);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new Error(`tls.certificate: ${paths.certificate} is not a PEM certificate (${(err as Error).message})`);
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new Error(`tls.key: ${paths.key} is not an unencrypted PEM private key (${(err as Error).message})`);
  }
  if (!leaf.checkPrivateKey(privateKey)) throw new Error(`tls.key: ${paths.key} is not the key of the certificate in ${paths.certificate} (subject ${leaf.subject.replace(/\n/g, ', ')})`);
  if (ca !== undefined) {
    try {
      new X509Certificate(ca);
    } catch (err) {
      throw new Error(`tls.clientCA: ${paths.clientCA} holds no PEM certificate (${(err as Error).message})`);
    }
  }
  const context: SecureContextOptions = { cert, key, ...(ca !== undefined ? { ca } : {}) };
  try {
    createSecureContext(context);
  } catch (err) {
    throw new Error(`tls: ${paths.certificate} and ${paths.key} are refused by OpenSSL: ${(err as Error).message}`);
  }
  const hash = createHash('sha256').update(cert).update('\0').update(key);
  if (ca !== undefined) hash.update('\0').update(ca);
  return {
    context,
    notAfter: new Date(leaf.validTo),
    subject: leaf.subject.replace(/\n/g, ', '),
    fingerprint: leaf.fingerprint256,
    contentHash: hash.digest('hex'),
  };
}

export interface TlsFilesOptions extends TlsPaths {
  /** How often the files are read and compared besides fs.watch (which misses some changes: NFS, Secret volume symlink swaps). */
  readonly pollMs?: number;
  /** A new, valid pair was loaded: give it to the server (`setSecureContext`). */
  readonly onReload: (pair: TlsPair) => void;
  /** The files changed but the new contents can't be used: the previous pair stays. Once per distinct contents. */
  readonly onError: (message: string) => void;
}

/**
 * The TLS certificate and key, kept current like the htpasswd file (auth/htpasswd.ts): fs.watch on
 * the files' directories (an atomic replace, a Kubernetes Secret's `..data` symlink swap) plus a
 * periodic read. New contents that don't make a valid pair (a key written after its certificate,
 * a truncated file) keep the previous pair and report an error once; the next change is tried again.
 */
export class TlsFiles {
  #current: TlsPair;
  #failedHash?: string;
  readonly #o: TlsFilesOptions;
  readonly #watchers: FSWatcher[] = [];
  #timer?: NodeJS.Timeout;

  /** Reads the pair once; throws (a configuration error) when it isn't valid. */
  constructor(opts: TlsFilesOptions) {
    this.#o = opts;
    this.#current = readTlsPair(opts);
  }

  get current(): TlsPair {
    return this.#current;
  }

  watch(): void {
    const files = [this.#o.certificate, this.#o.key, ...(this.#o.clientCA ? [this.#o.clientCA] : [])];
    for (const dir of new Set(files.map((f) => dirname(f)))) {
      const names = new Set(files.filter((f) => dirname(f) === dir).map((f) => basename(f)));
      try {
        const w = watch(dir, (_event, name) => {
          if (name === null || names.has(name) || name.startsWith('..')) this.check();
        });
        w.on('error', () => undefined);
        this.#watchers.push(w);
      } catch {
        // No inotify: the periodic check alone.
      }
    }
    this.#timer = setInterval(() => this.check(), this.#o.pollMs ?? 10_000);
    this.#timer.unref();
  }

  /** Reloads when the files' contents changed since the last load. */
  check(): void {
    let next: TlsPair;
    try {
      next = readTlsPair(this.#o);
    } catch (err) {
      const hash = contentsHash(this.#o);
      if (hash === this.#failedHash) return;
      this.#failedHash = hash;
      this.#o.onError(`${(err as Error).message}; still serving the certificate loaded before (${this.#current.subject}, expires ${this.#current.notAfter.toISOString()})`);
      return;
    }
    this.#failedHash = undefined;
    if (next.contentHash === this.#current.contentHash) return;
    this.#current = next;
    this.#o.onReload(next);
  }

  close(): void {
    for (const w of this.#watchers) w.close();
    if (this.#timer) clearInterval(this.#timer);
  }
}

/** The files' bytes as they are now (missing ones included), to report one bad state once. */
function contentsHash(paths: TlsPaths): string {
  const hash = createHash('sha256');
  for (const p of [paths.certificate, paths.key, paths.clientCA]) {
    if (p === undefined) continue;
    try {
      hash.update(readFileSync(p));
    } catch (err) {
      hash.update(`missing:${(err as NodeJS.ErrnoException).code}`);
    }
    hash.update('\0');
  }
  return hash.digest('hex');
}
