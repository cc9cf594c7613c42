/**
 * One call to get a complete fake Docker Hub: token server + distribution + recording/faulting
 * front (+ fake CDN). Point hubcache at `url`; seed images with `push()` (which goes straight to
 * the registry, so the front's counters only show hubcache's traffic).
 */
import { startDistribution, type Distribution } from './distribution.js';
import type { TestImage } from './images.js';
import { RegistryClient, type Credentials } from './push.js';
import { startTokenServer, type TokenServer, type TokenUser } from './token-server.js';
import { startUpstreamFront, type CdnServer, type RateLimitOptions, type UpstreamFront } from './upstream-front.js';

export interface StartUpstreamOptions {
  /** Anonymous token requests get pull access (Docker Hub public images). Default true. */
  anonymousPull?: boolean;
  /** Accounts. Default [{username:'pusher', password:'secret', canPush:true}]; the first push-capable one is used by push(). */
  users?: TokenUser[];
  /** Run a fake CDN and redirect blob GETs to it (307 → signed URL). Default false. `redirect: false` starts the CDN with redirects off (front.setCdnRedirect(true) later). */
  cdn?: boolean | { urlTtlSeconds?: number; redirect?: boolean };
  /** Docker Hub rate-limit headers on manifest responses. Default false. */
  rateLimit?: boolean | RateLimitOptions;
  /** Front answers 401 to bearer tokens past `exp` (distribution alone allows 60 s more). Default true. */
  strictTokenExpiry?: boolean;
  /** Token lifetime in seconds. Default 300. */
  tokenExpiresIn?: number;
  /** Token service name (the challenge's `service`). Default 'hubcache-test-registry'. */
  service?: string;
  /** Token signature algorithm. Default 'RS256'. */
  algorithm?: 'RS256' | 'ES256';
}

export interface Upstream {
  /** The front's URL: what hubcache uses as its upstream (e.g. --upstream-url). */
  readonly url: string;
  /** 127.0.0.1:PORT of the front, for image references (skopeo docker://HOST/repo:tag). */
  readonly host: string;
  /**
   * Origin of the token server the challenges name (`http://127.0.0.1:PORT`, another port than the
   * front's, as auth.docker.io is another host than Docker Hub's registry): hubcache sends it
   * nothing unless told (`--upstream-allowed-realm-hosts`, `allowedRealmHosts`).
   */
  readonly realmOrigin: string;
  /** Distribution directly, bypassing front, faults and counters. */
  readonly registryUrl: string;
  readonly tokenServer: TokenServer;
  readonly distribution: Distribution;
  readonly front: UpstreamFront;
  /** The fake CDN, when `cdn` was enabled. */
  readonly cdn?: CdnServer;
  /** Credentials of the pushing account (also valid for pull). */
  readonly credentials: Credentials;
  /** Client used by push(), talking to the registry directly. */
  readonly client: RegistryClient;
  /** Pushes `image` (blobs, children, manifest) as `repo:tag` (by digest when no tag); returns the digest. */
  push(image: TestImage, repo: string, tag?: string): Promise<string>;
  /** Stops everything and removes temp dirs. Safe to call twice. */
  close(): Promise<void>;
}

/** Starts token server, distribution and front (and CDN). */
export async function startUpstream(opts: StartUpstreamOptions = {}): Promise<Upstream> {
  const users = opts.users ?? [{ username: 'pusher', password: 'secret', canPush: true }];
  const pusher = users.find((u) => u.canPush !== false);
  if (!pusher) throw new Error('startUpstream: no user with canPush');
  const tokenServer = await startTokenServer({
    users,
    anonymousPull: opts.anonymousPull ?? true,
    expiresIn: opts.tokenExpiresIn,
    service: opts.service,
    algorithm: opts.algorithm,
  });
  let distribution: Distribution | undefined;
  let front: UpstreamFront | undefined;
  try {
    distribution = await startDistribution({
      auth: { realm: tokenServer.realm, service: tokenServer.service, issuer: tokenServer.issuer, rootCertBundle: tokenServer.certPath },
    });
    const dist = distribution;
    front = await startUpstreamFront({
      registryUrl: distribution.url,
      rateLimit: opts.rateLimit,
      strictTokenExpiry: opts.strictTokenExpiry,
      cdn: opts.cdn ? { blobPath: (d) => dist.blobPath(d), ...(typeof opts.cdn === 'object' ? opts.cdn : {}) } : undefined,
    });
  } catch (e) {
    await front?.close();
    await distribution?.close();
    await tokenServer.close();
    throw e;
  }
  const credentials = { username: pusher.username, password: pusher.password };
  const client = new RegistryClient({ url: distribution.url, credentials });
  const f = front;
  const d = distribution;
  let closed: Promise<void> | undefined;
  return {
    url: f.url,
    host: f.host,
    realmOrigin: new URL(tokenServer.url).origin,
    registryUrl: d.url,
    tokenServer,
    distribution: d,
    front: f,
    cdn: f.cdn,
    credentials,
    client,
    push: (image, repo, tag) => client.pushImage(image, repo, tag),
    close: () =>
      (closed ??= (async () => {
        await f.close();
        await d.close();
        await tokenServer.close();
      })()),
  };
}
