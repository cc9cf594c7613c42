/**
 * A minimal registry client that pushes exact bytes: blobs by monolithic upload, manifests with
 * their exact bytes and Content-Type, so Docker-format manifests keep their digests (skopeo
 * would convert or re-serialise them).
 */
import { request, type Dispatcher } from 'undici';
import type { TestBlob, TestImage } from './images.js';

export interface Credentials {
  username: string;
  password: string;
}

/** A parsed `WWW-Authenticate` challenge. */
export interface AuthChallenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `Bearer realm="…",service="…",scope="…"` (quoted or bare values, any order). */
export function parseChallenge(header: string): AuthChallenge | undefined {
  const m = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  for (const p of m[2]!.matchAll(/([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/g)) {
    params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  }
  return { scheme: m[1]!, params };
}

export interface RegistryClientOptions {
  /** Registry base URL, e.g. http://127.0.0.1:PORT. */
  url: string;
  /** Basic credentials for the token server (needed for push). */
  credentials?: Credentials;
}

/** The response of RegistryClient.request, body already read. */
export interface ClientResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** Talks to a token-auth registry; one token per scope string, fetched on the first 401. */
export class RegistryClient {
  readonly url: string;
  readonly credentials?: Credentials;
  private readonly tokens = new Map<string, string>();

  constructor(opts: RegistryClientOptions) {
    this.url = opts.url.replace(/\/$/, '');
    this.credentials = opts.credentials;
  }

  /**
   * One request with the token dance: on 401 with a Bearer challenge, get a token for
   * `repository:REPO:ACTIONS` (not the challenge's own scope: a push needs pull,push up front)
   * and retry once. `body` may be a Buffer or a function returning a fresh stream (for the retry).
   */
  async request(
    method: Dispatcher.HttpMethod,
    pathOrUrl: string,
    opts: { repo?: string; actions?: string; headers?: Record<string, string>; body?: Buffer | (() => NodeJS.ReadableStream) } = {},
  ): Promise<ClientResponse> {
    const url = pathOrUrl.startsWith('http') ? pathOrUrl : `${this.url}${pathOrUrl}`;
    const scope = opts.repo ? `repository:${opts.repo}:${opts.actions ?? 'pull'}` : '';
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { ...opts.headers };
      const token = this.tokens.get(scope);
      if (token) headers.authorization = `Bearer ${token}`;
      const body = typeof opts.body === 'function' ? (opts.body() as unknown as import('node:stream').Readable) : opts.body;
      const res = await request(url, { method, headers, body });
      const buf = Buffer.from(await res.body.arrayBuffer());
      if (res.statusCode === 401 && attempt === 0) {
        const ch = parseChallenge(String(res.headers['www-authenticate'] ?? ''));
        if (ch?.scheme.toLowerCase() === 'bearer' && ch.params.realm) {
          this.tokens.set(scope, await this.fetchToken(ch, scope || ch.params.scope || ''));
          continue;
        }
      }
      return { status: res.statusCode, headers: res.headers, body: buf };
    }
  }

  /** GET realm?service=…&scope=… with Basic credentials when configured. */
  async fetchToken(ch: AuthChallenge, scope: string): Promise<string> {
    const u = new URL(ch.params.realm!);
    if (ch.params.service) u.searchParams.set('service', ch.params.service);
    if (scope) u.searchParams.set('scope', scope);
    const headers: Record<string, string> = {};
    if (this.credentials) {
      headers.authorization = `Basic ${Buffer.from(`${this.credentials.username}:${this.credentials.password}`).toString('base64')}`;
    }
    const res = await request(u, { headers });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`token request ${u} → ${res.statusCode}: ${text}`);
    const json = JSON.parse(text) as { token?: string; access_token?: string };
    const token = json.token ?? json.access_token;
    if (!token) throw new Error(`token response without token: ${text}`);
    return token;
  }

  /** Does the registry have this blob in `repo`? */
  async hasBlob(repo: string, digest: string): Promise<boolean> {
    const r = await this.request('HEAD', `/v2/${repo}/blobs/${digest}`, { repo, actions: 'pull,push' });
    return r.status === 200;
  }

  /** Monolithic upload: POST uploads/ → PUT Location?digest=… with the whole body. Skips blobs already there. */
  async pushBlob(repo: string, blob: TestBlob): Promise<void> {
    if (await this.hasBlob(repo, blob.digest)) return;
    const start = await this.request('POST', `/v2/${repo}/blobs/uploads/`, { repo, actions: 'pull,push' });
    if (start.status !== 202) throw new Error(`POST upload ${repo} → ${start.status}: ${start.body}`);
    const loc = new URL(String(start.headers.location), this.url);
    loc.searchParams.set('digest', blob.digest);
    const put = await this.request('PUT', loc.toString(), {
      repo,
      actions: 'pull,push',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
      body: blob.data ?? (() => blob.stream()),
    });
    if (put.status !== 201) throw new Error(`PUT blob ${blob.digest} → ${put.status}: ${put.body}`);
  }

  /** PUT a manifest's exact bytes under a tag or digest. Returns the Docker-Content-Digest the registry answered. */
  async pushManifest(repo: string, reference: string, bytes: Buffer, mediaType: string): Promise<string> {
    const r = await this.request('PUT', `/v2/${repo}/manifests/${reference}`, {
      repo,
      actions: 'pull,push',
      headers: { 'content-type': mediaType },
      body: bytes,
    });
    if (r.status !== 201) throw new Error(`PUT manifest ${repo}:${reference} → ${r.status}: ${r.body}`);
    return String(r.headers['docker-content-digest'] ?? '');
  }

  /**
   * Pushes an image (blobs, then children of an index by digest, then the manifest) to `repo`,
   * tagged `tag` (by digest only when no tag). Returns the manifest digest.
   */
  async pushImage(image: TestImage, repo: string, tag?: string): Promise<string> {
    for (const child of image.children) await this.pushImage(child, repo);
    if (image.children.length === 0) for (const blob of image.blobs.values()) await this.pushBlob(repo, blob);
    const got = await this.pushManifest(repo, tag ?? image.digest, image.manifest, image.mediaType);
    if (got !== image.digest) throw new Error(`registry computed ${got} for ${repo}:${tag}, expected ${image.digest}`);
    return image.digest;
  }
}

/** Convenience: push `image` to `registryUrl` as `repo:tag` with the given credentials. */
export async function pushImage(registryUrl: string, image: TestImage, repo: string, tag?: string, credentials?: Credentials): Promise<string> {
  return new RegistryClient({ url: registryUrl, credentials }).pushImage(image, repo, tag);
}
