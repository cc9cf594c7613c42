import { z } from 'zod';
import { ACTIONS, cidrProblem } from '../auth/policy.js';
import { isPlatformName, parsePin } from '../domain/pin.js';
import { registryNameProblem } from '../domain/registry-name.js';
import { parseRealmEntry } from '../upstream/auth/realm-allowlist.js';
import { DOCKER_HUB, dockerHubAliasProblem } from '../upstream/docker-hub.js';
import { parseDuration, parseSize } from './duration.js';

/**
 * The one configuration schema: types, defaults and validation. Every key is strict (unknown keys
 * are errors, like zot's UnmarshalExact). Durations are strings with units (`5m`), sizes `4MiB`;
 * both are parsed once here into numbers (ms, bytes).
 */
const duration = (def: string, min?: string) =>
  z
    .string({ invalid_type_error: 'durations need a unit, e.g. 30s or 5m' })
    .default(def)
    .transform((v, ctx) => {
      const ms = parseDuration(v);
      if (ms === undefined) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: `invalid duration ${JSON.stringify(v)} (use e.g. 250ms, 30s, 5m, 1h)` });
        return z.NEVER;
      }
      if (min !== undefined && ms < parseDuration(min)!) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: `must be at least ${min}` });
        return z.NEVER;
      }
      return ms;
    });

const size = (def: string) =>
  z
    .union([z.string(), z.number().int().nonnegative()])
    .default(def)
    .transform((v, ctx) => {
      const n = typeof v === 'number' ? v : parseSize(v);
      if (n === undefined) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: `invalid size ${JSON.stringify(v)} (use e.g. 4MiB, 500MB)` });
        return z.NEVER;
      }
      return n;
    });

/** An optional size (no default: the feature is off without it). */
const optionalSize = () =>
  z
    .union([z.string(), z.number().int().positive()])
    .optional()
    .transform((v, ctx) => {
      if (v === undefined) return undefined;
      const n = typeof v === 'number' ? v : parseSize(v);
      if (n === undefined || n <= 0) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: `invalid size ${JSON.stringify(v)} (use e.g. 200GiB, 500GB)` });
        return z.NEVER;
      }
      return n;
    });

/** Free space to keep on the store's filesystem: bytes (`20GiB`) or a percentage of its size (`10%`). */
export type FreeSpaceFloor = { readonly bytes: number } | { readonly percent: number };

const freeSpaceFloor = z
  .union([z.string(), z.number().int().positive()])
  .optional()
  .transform((v, ctx): FreeSpaceFloor | undefined => {
    if (v === undefined) return undefined;
    const pct = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(v) : null;
    if (pct) {
      const percent = Number(pct[1]);
      if (percent > 0 && percent < 100) return { percent };
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `a percentage of the filesystem must be between 0% and 100% (exclusive), got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    const n = typeof v === 'number' ? v : parseSize(v);
    if (n === undefined || n <= 0) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `invalid size or percentage ${JSON.stringify(v)} (use e.g. 20GiB or 10%)` });
      return z.NEVER;
    }
    return { bytes: n };
  });

/** A percentage (0–100, exclusive of 0), as a number or a string with or without `%` (environment, flags). */
const percent = (def: number) =>
  z.preprocess(
    (v) => (typeof v === 'string' && /^\s*\d+(\.\d+)?\s*%?\s*$/.test(v) ? Number(v.replace('%', '').trim()) : v),
    z.number({ invalid_type_error: 'expected a percentage, e.g. 90' }).gt(0, 'must be above 0').max(100, 'must be at most 100').default(def),
  );

/** A whole number, also from the environment or a flag (strings there). */
const count = (def: number, min: number, max: number) =>
  z.preprocess((v) => (typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : v), z.number({ invalid_type_error: 'expected a whole number' }).int().min(min).max(max).default(def));

const hostPort = z.string().refine((s) => parseHostPort(s) !== undefined, { message: 'expected HOST:PORT, e.g. 0.0.0.0:5000' });

export function parseHostPort(s: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:\s]*)):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

// The refinements run after a failed `.url()` too: an unparsable URL is that check's to report.
const urlOrUndefined = (u: string): URL | undefined => (URL.canParse(u) ? new URL(u) : undefined);

const httpUrl = z
  .string()
  .url()
  .refine((u) => /^https?:$/.test(urlOrUndefined(u)?.protocol ?? 'http:'), { message: 'must be an http(s) URL' })
  // A `user:token@` would be neither used nor redacted (issue #11); the message never repeats it.
  .refine((u) => !urlOrUndefined(u)?.username && !urlOrUndefined(u)?.password, {
    message: 'must not contain credentials (user:password@): set username, and password or passwordFile, on the upstream instead',
  })
  .transform((u) => u.replace(/\/+$/, ''));

/** A list from YAML, or from one comma-separated string (environment variables, flags). */
const commaList = <T extends z.ZodTypeAny>(item: T) =>
  z.preprocess((v) => (typeof v === 'string' ? v.split(',').map((h) => h.trim()).filter(Boolean) : v), z.array(item));

const redisAddress = z.string().refine((s) => parseHostPort(s) !== undefined && parseHostPort(s)!.host !== '0.0.0.0', { message: 'expected HOST:PORT, e.g. redis-0.redis:26379' });

const redisUrl = z
  .string()
  .url()
  .refine((u) => /^rediss?:$/.test(urlOrUndefined(u)?.protocol ?? 'redis:'), { message: 'must be a redis:// or rediss:// URL' });

/** cluster.redis: one node (url), Sentinel (sentinels + sentinelName) or Redis Cluster (nodes): exactly one. */
const clusterRedisSchema = z
  .object({
    /** `redis://[user:pass@]host:port/db` or `rediss://` (TLS). */
    url: redisUrl.optional(),
    /** Redis Sentinel: `host:port` of the sentinels, with `sentinelName` (the monitored master's name). */
    sentinels: commaList(redisAddress).optional(),
    sentinelName: z.string().min(1).optional(),
    /** Redis Cluster: `host:port` of some of its nodes (the rest are discovered). */
    nodes: commaList(redisAddress).optional(),
    username: z.string().min(1).optional(),
    password: z.string().min(1).optional(),
    /** A file holding the password (a Kubernetes Secret); read once at start. */
    passwordFile: z.string().min(1).optional(),
    /** Every key hubcache writes starts with this: two installations can share one Redis. */
    keyPrefix: z.string().default('hubcache:'),
  })
  .strict()
  .refine((r) => [r.url, r.sentinels, r.nodes].filter((v) => v !== undefined).length === 1, { message: 'set exactly one of url, sentinels (with sentinelName) or nodes' })
  .refine((r) => r.sentinels === undefined || r.sentinelName !== undefined, { message: 'sentinels need sentinelName' })
  .refine((r) => !(r.password && r.passwordFile), { message: 'set password or passwordFile, not both' });

const clusterSchema = z
  .object({
    redis: clusterRedisSchema,
    /** HOST:PORT of the internal follow endpoint other replicas stream fills in flight from. */
    peerListen: hostPort.default('0.0.0.0:5001'),
    /** How the other replicas reach this one's follow endpoint, e.g. http://10.1.2.3:5001 (the pod IP). */
    advertiseUrl: z
      .string({ required_error: 'required with cluster: how other replicas reach this one, e.g. http://10.1.2.3:5001' })
      .url()
      .refine((u) => /^https?:$/.test(urlOrUndefined(u)?.protocol ?? 'http:'), { message: 'must be an http(s) URL' })
      .transform((u) => u.replace(/\/+$/, '')),
    /**
     * A blob download's lease in Redis lives this long unless its replica renews it (every third of
     * it while the download moves): a replica that dies holds a blob up for at most this long.
     */
    fillLeaseTtl: duration('10s', '100ms'),
    /** A file holding a shared secret the follow endpoint requires (header X-Hubcache-Peer-Secret); unset: none. */
    peerSecretFile: z.string().min(1).optional(),
  })
  .strict();

const realmEntry = z.string().superRefine((entry, ctx) => {
  const parsed = parseRealmEntry(entry);
  if ('error' in parsed) ctx.addIssue({ code: z.ZodIssueCode.custom, message: parsed.error });
});

// Repository glob patterns: name characters plus `*` and `?`.
const repoPattern = z.string().regex(/^[a-z0-9._\-/*?]{1,255}$/, 'repository patterns use lowercase name characters, `/`, `*`, `**` and `?`');

// An image to keep warm and never evict (domain/pin.ts has the syntax); kept as written, so that
// `config print` gives back a valid file. Whether its registry is configured is checked in load.ts.
const pinEntry = z.string().superRefine((entry, ctx) => {
  const pin = parsePin(entry);
  if ('error' in pin) ctx.addIssue({ code: z.ZodIssueCode.custom, message: pin.error });
});

const platformEntry = z.string().refine(isPlatformName, { message: 'platforms are os/architecture[/variant], e.g. linux/amd64 or linux/arm/v7' });

// Registry names (upstream keys, defaultUpstream): the rule every layer uses (domain/registry-name.ts),
// and Docker Hub under its one name, so that every configured upstream can be asked for by name.
const registryName = z.string().superRefine((name, ctx) => {
  const problem = registryNameProblem(name) ?? dockerHubAliasProblem(name);
  if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
});

/**
 * One `hosted.repositories` entry: a pattern (`myorg/**`, `ci/*`), or `{pattern, fallThrough}`.
 * Patterns are matched against the repository name exactly as the client sends it.
 */
const hostedEntry = z.preprocess(
  (v) => (typeof v === 'string' ? { pattern: v } : v),
  z
    .object({
      pattern: repoPattern,
      /**
       * What isn't pushed is pulled through from this configured upstream under the same name
       * ("pushed tags win, the rest from that upstream"). The risk: a name not pushed here is
       * looked up there, where whoever controls it can publish it (dependency confusion).
       */
      fallThrough: registryName.optional(),
    })
    .strict(),
);

const flag = (def: boolean) =>
  z.preprocess((v) => (typeof v === 'string' && /^(true|false)$/i.test(v.trim()) ? v.trim().toLowerCase() === 'true' : v), z.boolean({ invalid_type_error: 'expected true or false' }).default(def));

const upstreamSchema = z
  .object({
    /** Base URL of the registry API. */
    url: httpUrl,
    username: z.string().min(1).optional(),
    password: z.string().min(1).optional(),
    /** Read the password from this file (Kubernetes Secret mounts). */
    passwordFile: z.string().min(1).optional(),
    /** How long a tag's digest is trusted before a HEAD revalidates it. */
    tagTtl: duration('5m'),
    /**
     * Token realms (the `realm` of a `WWW-Authenticate` challenge) this upstream may send us to;
     * credentials go only there. Matched as origins: `https://auth.example[:port]`, or a bare
     * `host[:port]` taking the URL's scheme (an `http:` realm for an `https:` upstream needs an
     * `http://` entry). Replaces the default: the URL's origin, plus https://auth.docker.io for
     * Docker Hub. A comma-separated string is accepted (environment).
     */
    allowedRealmHosts: commaList(realmEntry).optional(),
    /**
     * Hosts (`host` or `host:port`) that redirects may point at even when they resolve to a
     * private, loopback or link-local address (e.g. an internal CDN). Public addresses and the
     * upstream's own host are always allowed. A comma-separated string is accepted (environment).
     */
    allowedRedirectHosts: commaList(z.string().min(1)).default([]),
    /**
     * Which repositories may be pulled through this upstream, as glob patterns over the repository
     * name (after Docker Hub's `library/` normalisation): `*` matches within one path component,
     * `**` across components. With `allow` set, a repository must match one of its patterns; a
     * match in `deny` always refuses.
     */
    repositories: z
      .object({
        allow: z.array(repoPattern).optional(),
        deny: z.array(repoPattern).default([]),
      })
      .strict()
      .optional(),
  })
  .strict()
  .refine((u) => !(u.password && u.passwordFile), { message: 'set password or passwordFile, not both' })
  .refine((u) => !((u.password || u.passwordFile) && !u.username), { message: 'a password needs a username' });

/** When the bounded store evicts (both drivers: `storage.eviction`). */
const evictionSchema = z
  .object({
    /** Percent of `maxSize` above which eviction starts. */
    highWatermark: percent(95),
    /** Percent of `maxSize` eviction brings the store down to; below highWatermark. */
    lowWatermark: percent(85),
    /** How often the store's size and free space are checked besides after every commit. At least 1s. */
    interval: duration('1m', '1s'),
    /** Deletions running at once during an eviction pass. */
    concurrency: count(4, 1, 64),
  })
  .strict()
  .default({})
  .refine((e) => e.highWatermark > e.lowWatermark, { message: 'highWatermark must be above lowWatermark' });

/**
 * Where and how blobs, manifests and metadata are stored: one object per driver, chosen by
 * `driver` (only `filesystem` for now; src/storage/open-storage.ts builds it). Without `driver`,
 * `filesystem`, so existing files keep working.
 */
const filesystemStorageSchema = z
  .object({
    driver: z.literal('filesystem'),
    /** Root of the filesystem content-addressable store. */
    path: z.string().min(1).default('./data'),
    /**
     * The store lock (`<path>/hubcache.lock`, docs/storage-layout.md) is stale, and taken over,
     * once its mtime is this old, or once a starting process has watched it not move for this
     * long; a holder on another host or in another PID namespace (a restarted container) is
     * waited for up to this long at start. The holder refreshes it every third of this. Every
     * process sharing a store must use the same value; the default suits production, shorter
     * values are for tests. At least 1s.
     */
    lockStaleAfter: duration('30s', '1s'),
    /**
     * The most committed blob bytes the store may hold (e.g. `200GiB`). Above `eviction.highWatermark`
     * percent of it, the least recently used blobs and manifests are evicted in the background
     * until the store is below `eviction.lowWatermark` percent. Unset: no cap (content is only
     * evicted for `minFreeSpace`, tag retention or a full disk).
     */
    maxSize: optionalSize(),
    /**
     * Free space to keep on the store's filesystem: bytes (`20GiB`) or a percentage of the
     * filesystem's size (`10%`). Below it, eviction runs as for the cap, until this much plus the
     * watermarks' gap (high − low, as a fraction of it) is free. Unset: not watched.
     */
    minFreeSpace: freeSpaceFloor,
    /**
     * How often the last-access record's changes are written to the store (one append and one fsync
     * per batch; never per request). A crash loses at most this window, which only makes content
     * look older than it is. At least 100ms.
     */
    accessFlushInterval: duration('10s', '100ms'),
    eviction: evictionSchema,
  })
  .strict();

/**
 * `driver: s3`: blobs, manifests and metadata as objects in an S3-compatible bucket (AWS S3, Ceph
 * RGW, MinIO, R2…), shared by every replica (src/storage/s3/, docs/storage-layout.md).
 * Credentials: `accessKeyId` + `secretAccessKey`, or the `…File` variants (Kubernetes Secrets),
 * else the AWS SDK's default chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, IRSA…).
 */
const s3StorageSchema = z
  .object({
    driver: z.literal('s3'),
    /**
     * A local directory for this replica's own files (its token signing key when no cluster
     * shares one); the content lives in the bucket. The container image sets it to its volume
     * (`HUBCACHE_STORAGE_PATH`), which an s3 config must therefore accept.
     */
    path: z.string().min(1).default('./data'),
    /** The bucket (it must exist). */
    bucket: z.string({ required_error: 'storage.bucket is required with driver s3' }).min(3, 'a bucket name has 3 to 63 characters').max(63, 'a bucket name has 3 to 63 characters'),
    /** The S3 endpoint URL (RGW, MinIO…); unset = AWS for `region`. */
    endpoint: httpUrl.optional(),
    region: z.string().min(1).default('us-east-1'),
    /** A key prefix inside the bucket (e.g. `hubcache/`); default none. */
    prefix: z.string().default('').refine((p) => p === '' || (!p.startsWith('/') && p.endsWith('/')), { message: 'a prefix ends with / and does not start with one (e.g. hubcache/)' }),
    /** Path-style addressing (`endpoint/bucket/key`): RGW and MinIO usually need it. */
    forcePathStyle: flag(false),
    accessKeyId: z.string().min(1).optional(),
    secretAccessKey: z.string().min(1).optional(),
    /** A file holding the access key id (a mounted Secret); trailing whitespace is ignored. */
    accessKeyIdFile: z.string().min(1).optional(),
    secretAccessKeyFile: z.string().min(1).optional(),
    /** A PEM bundle of CAs to trust for the endpoint's TLS certificate (besides the system's). */
    caFile: z.string().min(1).optional(),
    /** Size of each part of a fill's multipart upload; S3 needs at least 5MiB (except the last part). */
    partSize: size('16MiB').refine((n) => n >= 5 * 1024 * 1024 && n <= 5 * 1024 * 1024 * 1024, { message: 'partSize must be between 5MiB and 5GiB (S3 limits)' }),
    /** Parts of one fill uploading at once: a fill holds at most partSize × (partsInFlight + 1) bytes in memory. */
    partsInFlight: count(4, 1, 64),
    /**
     * A local directory in front of the bucket (optional, one per replica): blobs read from the
     * bucket are copied there, up to `maxSize` bytes, least recently read removed first, so warm
     * pulls are served at local-disk speed. Losing it loses nothing (the bucket has everything).
     */
    hotCache: z
      .object({
        path: z.string().min(1),
        maxSize: size('10GiB'),
      })
      .strict()
      .optional(),
    /** See the filesystem driver's `maxSize`: the most committed blob bytes the bucket may hold. */
    maxSize: optionalSize(),
    /** See the filesystem driver. Here: a per-replica record (docs/storage-layout.md). */
    accessFlushInterval: duration('10s', '100ms'),
    eviction: evictionSchema,
  })
  .strict();

/** Checks across the s3 driver's keys (a discriminated union's members can't carry refinements). */
function s3StorageProblems(s: z.output<typeof s3StorageSchema>, ctx: z.RefinementCtx): void {
  if ((s.accessKeyId && s.accessKeyIdFile) || (s.secretAccessKey && s.secretAccessKeyFile)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'set accessKeyId or accessKeyIdFile (secretAccessKey or secretAccessKeyFile), not both' });
  }
  if (Boolean(s.accessKeyId || s.accessKeyIdFile) !== Boolean(s.secretAccessKey || s.secretAccessKeyFile)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'an access key id needs a secret access key and the other way round (or set neither: the AWS SDK default chain)' });
  }
}

/** The storage drivers there are, for the error naming an unknown one. */
export const STORAGE_DRIVERS = ['filesystem', 's3'] as const;

export function unknownStorageDriver(driver: unknown): string {
  return `unknown storage driver ${JSON.stringify(driver)} (drivers: ${STORAGE_DRIVERS.join(', ')})`;
}

const storageSchema = z
  .preprocess(
    (v) => (typeof v === 'object' && v !== null && !Array.isArray(v) && (v as { driver?: unknown }).driver === undefined ? { ...v, driver: 'filesystem' } : v),
    z
      .discriminatedUnion('driver', [filesystemStorageSchema, s3StorageSchema], {
        errorMap: (issue, ctx) =>
          issue.code === z.ZodIssueCode.invalid_union_discriminator
            ? { message: unknownStorageDriver((ctx.data as { driver?: unknown } | undefined)?.driver) }
            : { message: ctx.defaultError },
      })
      .superRefine((s, ctx) => {
        if (s.driver === 's3') s3StorageProblems(s, ctx);
      }),
  )
  .default({});

const cidr = z.string().superRefine((c, ctx) => {
  const problem = cidrProblem(c);
  if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
});

const userName = z.string().min(1).regex(/^[^:\s]+$/, 'user names have no colon or space (htpasswd)');

/**
 * One grant: `actions` on the `repositories` (patterns over the name as the client sends it) for
 * the principals named: `users`, members of `groups`, every authenticated user (`authenticated`)
 * or clients without credentials (`anonymous`); only from `cidrs` when given. Rules only grant.
 */
const accessRule = z
  .object({
    repositories: z.array(repoPattern).min(1, 'name at least one repository pattern'),
    users: z.array(userName).optional(),
    groups: z.array(z.string().min(1)).optional(),
    authenticated: z.boolean().optional(),
    anonymous: z.boolean().optional(),
    actions: z.array(z.enum(ACTIONS, { errorMap: () => ({ message: `actions are ${ACTIONS.join(', ')}` }) })).min(1, 'name at least one action'),
    cidrs: commaList(cidr).optional(),
  })
  .strict()
  .refine((r) => (r.users?.length ?? 0) > 0 || (r.groups?.length ?? 0) > 0 || r.authenticated === true || r.anonymous === true, {
    message: 'a rule must name whom it grants to: users, groups, authenticated: true or anonymous: true',
  });

/**
 * Users, permissions and tokens of hubcache's own clients (issue #14). Off unless `htpasswd` is
 * set. docs/protocol.md ("Authentication") has the challenges and the token endpoint.
 */
const authSchema = z
  .object({
    /** An htpasswd file with bcrypt entries (`htpasswd -B`); reloaded when it changes. Setting it turns auth on. */
    htpasswd: z.string().min(1).optional(),
    /** The challenge of a 401: `bearer` (tokens from /auth/token, registry:2's token mode) or `basic` (registry:2's htpasswd mode). */
    challenge: z.enum(['bearer', 'basic']).default('bearer'),
    /** The token endpoint's URL in challenges (`https://registry.example/auth/token`); default: from the request's Host. */
    realm: httpUrl.optional(),
    /** The `service` of challenges and tokens. */
    service: z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/, 'a service name of letters, digits and ._:-').default('hubcache'),
    /** Groups of users, by name, for rules. */
    groups: z.record(z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'group names use letters, digits and ._-'), z.array(userName)).default({}),
    rules: z.array(accessRule).default([]),
    /** Anonymous pull of mirrored (not hosted) repositories: dockerd sends no credentials to a mirror. */
    anonymousPull: z.preprocess((v) => (v === 'true' ? true : v === 'false' ? false : v), z.boolean()).default(true),
    /** Limits anonymous pull to clients in these ranges (`10.0.0.0/8`, `fd00::/8`); a comma-separated string is accepted. */
    anonymousPullCidrs: commaList(cidr).optional(),
    /** Lifetime of bearer tokens. */
    tokenExpiry: duration('5m', '10s'),
    /** Lifetime of refresh tokens (docker/containerd logins with access_type=offline); a changed password revokes them. */
    refreshTokenExpiry: duration('7d', '1m'),
    /** Failed logins of one user name within failedLoginWindow; further attempts for it get 429 until the window passes. */
    maxFailedLogins: count(10, 1, 10_000),
    /** Failed logins from one client address (whatever the user names) within failedLoginWindow; further attempts from it get 429. Higher than per user: many users may share an address (NAT, a CI runner). */
    maxFailedLoginsPerAddress: count(50, 1, 100_000),
    failedLoginWindow: duration('5m', '1s'),
  })
  .strict()
  .superRefine((a, ctx) => {
    for (const [i, r] of a.rules.entries()) {
      for (const g of r.groups ?? []) if (!(g in a.groups)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['rules', i, 'groups'], message: `unknown group ${JSON.stringify(g)} (define it under auth.groups)` });
    }
  })
  .default({});

/**
 * TLS on the registry listener (issue #14), like registry:2's `http.tls`: with `certificate` and
 * `key` the listener speaks HTTPS only; reloaded when the files change (http/tls-files.ts). The
 * metrics/admin listener (`metrics.listen`) stays plain HTTP: it is internal.
 */
const tlsSchema = z
  .object({
    /** PEM file of the server certificate, the chain after it (intermediates) in the same file. */
    certificate: z.string().min(1).optional(),
    /** PEM file of the certificate's private key (unencrypted). */
    key: z.string().min(1).optional(),
    /**
     * A PEM bundle of CA certificates: a client must present a certificate issued by one of them,
     * or its handshake fails. It only gates the connection: who the client is for `auth` still
     * comes from its credentials (htpasswd users, tokens), never from the certificate.
     */
    clientCA: z.string().min(1).optional(),
    /** The oldest TLS version accepted. */
    minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
  })
  .strict()
  .refine((t) => (t.certificate === undefined) === (t.key === undefined), { message: 'set both certificate and key, or neither' })
  .refine((t) => t.clientCA === undefined || t.certificate !== undefined, { message: 'clientCA needs certificate and key (client certificates are a TLS feature)' })
  .default({});

export const configSchema = z
  .object({
    /** Address the registry API listens on. */
    listen: hostPort.default('0.0.0.0:5000'),
    /** A stable id for this instance (loop detection with the Via header); random per start when unset. */
    instanceId: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/).optional(),
    storage: storageSchema,
    /** Upstream registries by the name clients use (`docker.io`, `ghcr.io`, …). */
    upstreams: z
      .record(registryName, upstreamSchema)
      .default({}),
    /** The upstream used when a request names no registry (Docker Hub). */
    defaultUpstream: registryName.default(DOCKER_HUB.name),
    /**
     * The private registry (issue #14): repositories hubcache hosts itself. Pushes are accepted for
     * names matching `repositories` only, served from the store only and never looked up upstream.
     * Until authentication exists, anyone who can reach the port can push to these names.
     */
    hosted: z
      .object({
        /**
         * Hosted repository patterns, matched against the name as the client sends it, before
         * anything else (`*` within one path component, `**` across components, `?` one
         * character): a string, or `{pattern, fallThrough}`. A comma-separated string is accepted
         * (environment, flags). Empty (the default): nothing is hosted, pushes are refused.
         */
        repositories: commaList(hostedEntry).default([]),
        /** An upload session that receives nothing for this long is cancelled and its temp data removed. At least 1s. */
        uploadTimeout: duration('1h', '1s'),
        /** Upload sessions open at once (each holds a temp file and a file descriptor); beyond, 429. */
        maxUploadSessions: count(1000, 1, 1_000_000),
        /** Allow DELETE of hosted manifests, tags and blobs (405 UNSUPPORTED otherwise). */
        allowDelete: flag(false),
        /**
         * Garbage collection (after deletes) never removes a hosted blob linked (uploaded or
         * mounted) more recently than this, nor a manifest stored more recently: a push's blobs
         * are uploaded before the manifest that references them. Longer than the slowest push. At least 1m.
         */
        gcGracePeriod: duration('1h', '1m'),
      })
      .strict()
      .default({}),
    cache: z
      .object({
        /** A blob download that takes longer than this is abandoned (it doesn't belong to any client). */
        fillTimeout: duration('30m'),
        /** How often a broken blob download is resumed with a Range request before giving up. */
        resumeAttempts: z.number().int().min(0).max(20).default(3),
        /**
         * Blob downloads from upstreams running at once, at most; later ones wait in a queue, first
         * come, first served (each running download holds a temp file and a few MiB of buffers).
         */
        maxConcurrentFills: z
          .preprocess((v) => (typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v), z.number().int().min(1).max(1024))
          .default(32),
        /**
         * A blob download whose clients have all gone (queued ones are dropped at once, upstream never
         * asked) goes on only within this budget: if, after `grace`, at least `minProgressToFinish`
         * of it has arrived or at most `maxRemainingToFinish` bytes are still to come. Otherwise it is
         * cancelled and its temp data removed; the next request starts afresh.
         */
        abandonedFills: z
          .object({
            /** How long a download waits for a client to come back (a resumed connection, a retry) before the budget decides. */
            grace: duration('5s'),
            /** Fraction of the blob (0–1) from which an abandoned download is finished anyway (0: always finish). */
            minProgressToFinish: z.number().min(0).max(1).default(0.5),
            /** An abandoned download with at most this much left is finished anyway (small blobs, nearly done ones). */
            maxRemainingToFinish: size('16MiB'),
          })
          .strict()
          .default({}),
        /**
         * Memory for the tag lists kept for their upstream's tagTtl (a repository's list is fetched
         * once and every page served from it); the least recently used go first, and a list bigger
         * than this is served but not kept. 0 keeps none.
         */
        tagListCacheSize: size('64MiB'),
        /**
         * A cached tag not pulled for this long expires, with its manifest unless another tag or a
         * stored index references it (the eviction pass removes it; pulling the tag again fetches it
         * again). At least 1m.
         */
        tagRetention: duration('90d', '1m'),
        /**
         * Images kept warm and never evicted (issue #13): `nginx:1.27`, `ghcr.io/org/app:v1`, a digest
         * (`alpine@sha256:…`) or every tag of a repository matching a glob (`redis:7.*`, `myorg/base:*`;
         * `*` any run of tag characters, `?` one). A name without a registry is on Docker Hub
         * (`library/` added for official images); a tag pin follows its tag, revalidated every tag TTL of
         * its upstream, and everything it needs (index, child manifests, config, layers) is fetched ahead
         * of demand. A comma-separated string is accepted (environment).
         */
        pin: commaList(pinEntry).default([]),
        /** Downloads (manifests, blobs) the pin refresher runs at once, at most; fills also wait for maxConcurrentFills. */
        pinConcurrency: count(2, 1, 64),
        /**
         * The platforms of a pinned multi-platform image kept warm (`linux/amd64`; `linux/arm64` takes
         * its variants too). Empty: every platform the index lists. Comma-separated from the environment.
         */
        pinPlatforms: commaList(platformEntry).default([]),
        /** A tag pattern pin matching more tags than this fails (logged, counted) instead of pinning them all. */
        pinMaxTags: count(64, 1, 10_000),
      })
      .strict()
      .default({}),
    upstreamClient: z
      .object({
        connectTimeout: duration('10s'),
        headersTimeout: duration('30s'),
        /** Maximum silence while reading a body before the connection is considered dead. */
        bodyIdleTimeout: duration('60s'),
        /**
         * The longest a manifest, tag list, token or ping exchange with an upstream may take in
         * total, retries and redirects included: a body trickling in byte by byte can't hold it
         * (or the clients waiting for it, or a shutdown) open any longer. Blob downloads are
         * bounded by cache.fillTimeout instead.
         */
        requestTimeout: duration('60s', '100ms'),
        retries: z.number().int().min(1).max(10).default(3),
        retryBaseDelay: duration('200ms'),
        maxConcurrency: z.number().int().min(1).max(1024).default(64),
        maxManifestSize: size('4MiB'),
        /**
         * The largest tag list read from an upstream (its JSON, all pages together); a bigger one is
         * answered 502 UPSTREAM_ERROR. About 11 bytes a tag: 32MiB holds some 3 million tags.
         */
        maxTagListSize: size('32MiB'),
      })
      .strict()
      .default({}),
    log: z
      .object({
        level: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
        /** `json` for log collectors, `pretty` for terminals. */
        format: z.enum(['json', 'pretty']).default('json'),
      })
      .strict()
      .default({}),
    metrics: z
      .object({
        enabled: z.boolean().default(true),
        /** Serve /metrics on a separate HOST:PORT instead of the registry port. */
        listen: hostPort.optional(),
      })
      .strict()
      .default({}),
    /**
     * The client-facing HTTP server's bounds (issue #11): what one connection, one client address
     * and all clients together may hold. Downloads are never cut for taking long (there is no
     * request timeout), only for not moving: a head that doesn't arrive, a connection idle between
     * requests, a response the client stopped reading.
     */
    server: z
      .object({
        /**
         * Time for a request's head (request line and headers) to arrive, counted from the
         * connection's start or from the first byte of a kept-alive connection's next request. It
         * closes connections that never send a request and slowloris clients (408). At least 1s.
         */
        headersTimeout: duration('60s', '1s'),
        /**
         * A kept-alive connection idle between requests is closed after this long. Above the
         * 60 s idle timeout of common load balancers, so that they, not hubcache, end idle pooled
         * connections (no race on a connection the balancer is about to reuse). At least 1s.
         */
        keepAliveTimeout: duration('65s', '1s'),
        /**
         * A response with bytes waiting to be sent that makes no progress for this long is aborted
         * and its buffers are freed: the client stopped reading (or reads slower than the socket
         * buffers drain: about half a socket send buffer, ~1–2 MB, per sendTimeout). Waiting for an
         * upstream doesn't count: the timeout applies only while bytes are waiting for the
         * client. A stall is detected after between one and two times this value. At least 1s.
         */
        sendTimeout: duration('60s', '1s'),
        /**
         * Client connections open at once. Beyond it a connection's request is answered `503` with
         * `Retry-After` and the connection is closed. Every connection holds a file descriptor
         * (a download one more for its file), and tens of KB of memory when idle.
         */
        maxConnections: count(4096, 1, 1_000_000),
        /**
         * Client connections open at once from one address (IPv6: from one /64), answered like
         * `maxConnections` beyond. 0: no per-client limit. Behind a proxy or an ingress every client
         * has the proxy's address: raise it there, or set 0 and let the proxy limit clients.
         */
        maxConnectionsPerClient: count(256, 0, 1_000_000),
        /**
         * Memory for streaming stored blobs to clients, shared by all responses in 1 MiB buffers
         * (a response uses two at full speed). When it is all in use, responses stream through one
         * 64 KiB buffer of their own until pooled buffers are free again, so the total stays
         * bounded by this plus 64 KiB per connection (maxConnections).
         */
        blobBufferPool: size('64MiB'),
        /**
         * Proxies (CIDR ranges, `10.0.0.0/8`) whose `X-Forwarded-For`, `X-Forwarded-Proto` and
         * `X-Forwarded-Host` are believed: the client address of auth CIDR rules and failed-login
         * limits, and the scheme and host of the token realm in challenges, come from them. Empty
         * (the default): no forwarded header is believed, whoever sends it. A comma-separated
         * string is accepted (environment, flags). Connection limits count the proxy's address.
         */
        trustedProxies: commaList(cidr).default([]),
      })
      .strict()
      .default({}),
    auth: authSchema,
    /**
     * Several replicas sharing one store and one Redis (issue #15; docs/architecture.md#several-replicas).
     * Unset: one process, nothing shared. Set: blob downloads are leased cluster-wide in Redis (one
     * replica downloads a blob, the others stream it from that replica's follow endpoint).
     */
    cluster: clusterSchema.optional(),
    tls: tlsSchema,
    shutdown: z
      .object({
        /** On SIGTERM, wait this long for in-flight responses and fills before exiting. */
        timeout: duration('30s'),
        /**
         * Before that, keep serving this long with /readyz answering 503, so that load balancers and
         * Kubernetes endpoints stop sending new requests before the listener closes (0s: close at once).
         */
        delay: duration('0s'),
      })
      .strict()
      .default({}),
  })
  .strict();

/** Keys whose values are durations (printed back with a unit by `config print`). */
export const DURATION_KEYS: ReadonlySet<string> = new Set(['tagTtl', 'fillTimeout', 'connectTimeout', 'headersTimeout', 'bodyIdleTimeout', 'requestTimeout', 'retryBaseDelay', 'timeout', 'delay', 'lockStaleAfter', 'grace', 'keepAliveTimeout', 'sendTimeout', 'tagRetention', 'accessFlushInterval', 'interval', 'tokenExpiry', 'refreshTokenExpiry', 'failedLoginWindow', 'uploadTimeout', 'fillLeaseTtl', 'gcGracePeriod']);

/** Keys whose values are sizes (printed back with a unit by `config print`). */
export const SIZE_KEYS: ReadonlySet<string> = new Set(['maxManifestSize', 'maxTagListSize', 'tagListCacheSize', 'maxRemainingToFinish', 'blobBufferPool', 'maxSize', 'partSize']);

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.output<typeof configSchema>;
export type UpstreamConfig = z.output<typeof upstreamSchema>;
export type AuthConfig = z.output<typeof authSchema>;
export type TlsConfig = z.output<typeof tlsSchema>;
export type StorageConfig = z.output<typeof storageSchema>;
export type FilesystemStorageConfig = Extract<StorageConfig, { driver: 'filesystem' }>;
export type ClusterConfig = z.output<typeof clusterSchema>;
