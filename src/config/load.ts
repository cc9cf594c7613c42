import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { formatDuration, formatSize } from './duration.js';
import { parsePin } from '../domain/pin.js';
import { readTlsPair } from '../lib/tls-files.js';
import { DOCKER_HUB, imageName } from '../upstream/docker-hub.js';
import { configSchema, DURATION_KEYS, SIZE_KEYS, type Config } from './schema.js';

/**
 * Settings that also exist as environment variables and command-line flags. Precedence:
 * defaults < config file < environment < flags. `path` is where the value lands in the config
 * document; `upstreams.docker.io.*` settings address the default (Docker Hub) upstream.
 */
export const SETTINGS = [
  { flag: 'listen', env: 'HUBCACHE_LISTEN', path: ['listen'], help: 'HOST:PORT for the registry API (default 0.0.0.0:5000)' },
  { flag: 'storage-driver', env: 'HUBCACHE_STORAGE_DRIVER', path: ['storage', 'driver'], help: 'where the store lives: filesystem (the default) or s3 (an S3-compatible bucket, shared by several replicas)' },
  { flag: 'storage-bucket', env: 'HUBCACHE_STORAGE_BUCKET', path: ['storage', 'bucket'], help: 's3: the bucket (required; it must exist)' },
  { flag: 'storage-endpoint', env: 'HUBCACHE_STORAGE_ENDPOINT', path: ['storage', 'endpoint'], help: 's3: endpoint URL of an S3-compatible store (Ceph RGW, MinIO…); unset = AWS' },
  { flag: 'storage-region', env: 'HUBCACHE_STORAGE_REGION', path: ['storage', 'region'], help: 's3: region (default us-east-1)' },
  { flag: 'storage-prefix', env: 'HUBCACHE_STORAGE_PREFIX', path: ['storage', 'prefix'], help: 's3: key prefix in the bucket, ending with / (default none)' },
  { flag: 'storage-force-path-style', env: 'HUBCACHE_STORAGE_FORCE_PATH_STYLE', path: ['storage', 'forcePathStyle'], help: 's3: true for path-style URLs (endpoint/bucket/key; RGW, MinIO) (default false)' },
  { flag: 'storage-access-key-id', env: 'HUBCACHE_STORAGE_ACCESS_KEY_ID', path: ['storage', 'accessKeyId'], help: 's3: access key id (default: the AWS SDK chain, AWS_ACCESS_KEY_ID…)' },
  { flag: 'storage-secret-access-key', env: 'HUBCACHE_STORAGE_SECRET_ACCESS_KEY', path: ['storage', 'secretAccessKey'], help: 's3: secret access key (prefer the file or AWS_SECRET_ACCESS_KEY)' },
  { flag: 'storage-access-key-id-file', env: 'HUBCACHE_STORAGE_ACCESS_KEY_ID_FILE', path: ['storage', 'accessKeyIdFile'], help: 's3: file holding the access key id (a mounted Secret)' },
  { flag: 'storage-secret-access-key-file', env: 'HUBCACHE_STORAGE_SECRET_ACCESS_KEY_FILE', path: ['storage', 'secretAccessKeyFile'], help: 's3: file holding the secret access key (a mounted Secret)' },
  { flag: 'storage-ca-file', env: 'HUBCACHE_STORAGE_CA_FILE', path: ['storage', 'caFile'], help: "s3: PEM bundle of CAs trusted for the endpoint's certificate (besides the system's)" },
  { flag: 'storage-part-size', env: 'HUBCACHE_STORAGE_PART_SIZE', path: ['storage', 'partSize'], help: 's3: part size of multipart uploads, 5MiB to 5GiB (default 16MiB)' },
  { flag: 'storage-parts-in-flight', env: 'HUBCACHE_STORAGE_PARTS_IN_FLIGHT', path: ['storage', 'partsInFlight'], help: 's3: parts of one fill uploading at once; a fill holds at most partSize × (this + 1) (default 4)' },
  { flag: 'storage-path', env: 'HUBCACHE_STORAGE_PATH', path: ['storage', 'path'], help: 'directory of the content-addressable store (default ./data)' },
  { flag: 'storage-lock-stale-after', env: 'HUBCACHE_STORAGE_LOCK_STALE_AFTER', path: ['storage', 'lockStaleAfter'], help: 'a storage lock not refreshed for this long is taken over; a start waits up to this long for one held from another host or PID namespace (default 30s; every process on a store must agree)' },
  { flag: 'storage-max-size', env: 'HUBCACHE_STORAGE_MAX_SIZE', path: ['storage', 'maxSize'], help: 'cap of the store (e.g. 200GiB); above the high watermark the least recently used content is evicted (default: no cap)' },
  { flag: 'storage-min-free-space', env: 'HUBCACHE_STORAGE_MIN_FREE_SPACE', path: ['storage', 'minFreeSpace'], help: 'free space to keep on the store\'s filesystem, bytes or percent (e.g. 20GiB, 10%); below it content is evicted (default: not watched)' },
  { flag: 'eviction-high-watermark', env: 'HUBCACHE_EVICTION_HIGH_WATERMARK', path: ['storage', 'eviction', 'highWatermark'], help: 'percent of --storage-max-size at which eviction starts (default 95)' },
  { flag: 'eviction-low-watermark', env: 'HUBCACHE_EVICTION_LOW_WATERMARK', path: ['storage', 'eviction', 'lowWatermark'], help: 'percent of --storage-max-size eviction brings the store down to (default 85)' },
  { flag: 'tag-retention', env: 'HUBCACHE_TAG_RETENTION', path: ['cache', 'tagRetention'], help: 'a cached tag not pulled for this long expires with its manifest unless still referenced (default 90d)' },
  { flag: 'default-upstream', env: 'HUBCACHE_DEFAULT_UPSTREAM', path: ['defaultUpstream'], help: `upstream for requests that name no registry, and the one the --upstream-* and --tag-ttl settings address (default ${DOCKER_HUB.name})` },
  { flag: 'upstream-url', env: 'HUBCACHE_UPSTREAM_URL', path: ['upstreams', '@default', 'url'], help: `Docker Hub registry URL (default ${DOCKER_HUB.url})` },
  { flag: 'upstream-username', env: 'HUBCACHE_UPSTREAM_USERNAME', path: ['upstreams', '@default', 'username'], help: 'Docker Hub username' },
  { flag: 'upstream-password', env: 'HUBCACHE_UPSTREAM_PASSWORD', path: ['upstreams', '@default', 'password'], help: 'Docker Hub password or access token (prefer --upstream-password-file)' },
  { flag: 'upstream-password-file', env: 'HUBCACHE_UPSTREAM_PASSWORD_FILE', path: ['upstreams', '@default', 'passwordFile'], help: 'file holding the Docker Hub password or access token' },
  { flag: 'upstream-allowed-redirect-hosts', env: 'HUBCACHE_UPSTREAM_ALLOWED_REDIRECT_HOSTS', path: ['upstreams', '@default', 'allowedRedirectHosts'], help: 'comma-separated hosts (host or host:port) Docker Hub may redirect to although they resolve to private addresses (an internal CDN)' },
  { flag: 'upstream-allowed-realm-hosts', env: 'HUBCACHE_UPSTREAM_ALLOWED_REALM_HOSTS', path: ['upstreams', '@default', 'allowedRealmHosts'], help: `comma-separated token realms Docker Hub's challenges may send credentials to: origins (https://auth.example, http://127.0.0.1:5001) or host[:port] taking the upstream URL's scheme; replaces the default (the upstream URL's origin, plus ${DOCKER_HUB.authRealmOrigin} for Docker Hub)` },
  { flag: 'tag-ttl', env: 'HUBCACHE_TAG_TTL', path: ['upstreams', '@default', 'tagTtl'], help: 'how long a tag is served without asking upstream (default 5m)' },
  { flag: 'instance-id', env: 'HUBCACHE_INSTANCE_ID', path: ['instanceId'], help: 'stable instance id for loop detection' },
  { flag: 'log-level', env: 'HUBCACHE_LOG_LEVEL', path: ['log', 'level'], help: 'error, warn, info or debug' },
  { flag: 'log-format', env: 'HUBCACHE_LOG_FORMAT', path: ['log', 'format'], help: 'json or pretty' },
  { flag: 'metrics-listen', env: 'HUBCACHE_METRICS_LISTEN', path: ['metrics', 'listen'], help: 'serve /metrics on a separate HOST:PORT' },
  { flag: 'fill-timeout', env: 'HUBCACHE_FILL_TIMEOUT', path: ['cache', 'fillTimeout'], help: 'maximum duration of one blob download (default 30m)' },
  { flag: 'headers-timeout', env: 'HUBCACHE_HEADERS_TIMEOUT', path: ['server', 'headersTimeout'], help: 'time for a request head to arrive; closes silent and slowloris connections (default 60s)' },
  { flag: 'keep-alive-timeout', env: 'HUBCACHE_KEEP_ALIVE_TIMEOUT', path: ['server', 'keepAliveTimeout'], help: 'a kept-alive client connection idle this long is closed (default 65s)' },
  { flag: 'send-timeout', env: 'HUBCACHE_SEND_TIMEOUT', path: ['server', 'sendTimeout'], help: 'a response the client stops reading for this long is aborted (default 60s)' },
  { flag: 'max-connections', env: 'HUBCACHE_MAX_CONNECTIONS', path: ['server', 'maxConnections'], help: 'client connections open at once; beyond, requests get 503 (default 4096)' },
  { flag: 'max-connections-per-client', env: 'HUBCACHE_MAX_CONNECTIONS_PER_CLIENT', path: ['server', 'maxConnectionsPerClient'], help: 'client connections open at once from one address (IPv6: /64); 0 = no limit; raise it behind a proxy (default 256)' },
  { flag: 'blob-buffer-pool', env: 'HUBCACHE_BLOB_BUFFER_POOL', path: ['server', 'blobBufferPool'], help: 'memory shared by all responses streaming stored blobs (default 64MiB)' },
  { flag: 'max-concurrent-fills', env: 'HUBCACHE_MAX_CONCURRENT_FILLS', path: ['cache', 'maxConcurrentFills'], help: 'blob downloads from upstreams running at once; more wait in a queue, first come, first served (default 32)' },
  { flag: 'hosted-repositories', env: 'HUBCACHE_HOSTED_REPOSITORIES', path: ['hosted', 'repositories'], help: 'comma-separated repository patterns hubcache hosts itself (myorg/**,ci/*): pushed to hubcache, never looked up upstream; empty (the default): nothing is hosted. Without --auth-htpasswd anyone who can reach the port can push to them' },
  { flag: 'hosted-upload-timeout', env: 'HUBCACHE_HOSTED_UPLOAD_TIMEOUT', path: ['hosted', 'uploadTimeout'], help: 'a blob upload idle this long is cancelled and its temp data removed (default 1h)' },
  { flag: 'hosted-allow-delete', env: 'HUBCACHE_HOSTED_ALLOW_DELETE', path: ['hosted', 'allowDelete'], help: 'true: allow DELETE of hosted manifests, tags and blobs (default false: 405)' },
  { flag: 'auth-htpasswd', env: 'HUBCACHE_AUTH_HTPASSWD', path: ['auth', 'htpasswd'], help: 'htpasswd file of users (bcrypt, htpasswd -B); turns authentication on (rules and groups: config file)' },
  { flag: 'auth-challenge', env: 'HUBCACHE_AUTH_CHALLENGE', path: ['auth', 'challenge'], help: 'bearer (tokens from /auth/token; the default) or basic (registry:2 htpasswd mode)' },
  { flag: 'auth-realm', env: 'HUBCACHE_AUTH_REALM', path: ['auth', 'realm'], help: "the token endpoint's external URL in challenges (default: from the request's Host)" },
  { flag: 'auth-service', env: 'HUBCACHE_AUTH_SERVICE', path: ['auth', 'service'], help: 'service name of challenges and tokens (default hubcache)' },
  { flag: 'auth-anonymous-pull', env: 'HUBCACHE_AUTH_ANONYMOUS_PULL', path: ['auth', 'anonymousPull'], help: 'true or false: anonymous pull of mirrored repositories (default true)' },
  { flag: 'auth-anonymous-pull-cidrs', env: 'HUBCACHE_AUTH_ANONYMOUS_PULL_CIDRS', path: ['auth', 'anonymousPullCidrs'], help: 'comma-separated client ranges anonymous pull is limited to (10.0.0.0/8,fd00::/8)' },
  { flag: 'auth-token-expiry', env: 'HUBCACHE_AUTH_TOKEN_EXPIRY', path: ['auth', 'tokenExpiry'], help: 'lifetime of bearer tokens (default 5m)' },
  { flag: 'tls-certificate', env: 'HUBCACHE_TLS_CERTIFICATE', path: ['tls', 'certificate'], help: 'PEM certificate (with its chain) of the registry listener: with --tls-key it serves HTTPS only; reloaded when the file changes' },
  { flag: 'tls-key', env: 'HUBCACHE_TLS_KEY', path: ['tls', 'key'], help: "PEM private key of --tls-certificate" },
  { flag: 'tls-client-ca', env: 'HUBCACHE_TLS_CLIENT_CA', path: ['tls', 'clientCA'], help: 'PEM CA bundle: clients must present a certificate it issued (gates the connection; users still log in)' },
  { flag: 'tls-min-version', env: 'HUBCACHE_TLS_MIN_VERSION', path: ['tls', 'minVersion'], help: 'TLSv1.2 (the default) or TLSv1.3' },
  { flag: 'trusted-proxies', env: 'HUBCACHE_TRUSTED_PROXIES', path: ['server', 'trustedProxies'], help: 'comma-separated CIDR ranges of proxies whose X-Forwarded-For/-Proto/-Host are believed (default: none)' },
  { flag: 'pin', env: 'HUBCACHE_PIN', path: ['cache', 'pin'], help: 'comma-separated images kept warm and never evicted: nginx:1.27, ghcr.io/org/app:v1, alpine@sha256:…, redis:7.* (a glob over the tags)' },
  { flag: 'pin-concurrency', env: 'HUBCACHE_PIN_CONCURRENCY', path: ['cache', 'pinConcurrency'], help: 'downloads the pin refresher runs at once (default 2)' },
  { flag: 'pin-platforms', env: 'HUBCACHE_PIN_PLATFORMS', path: ['cache', 'pinPlatforms'], help: 'comma-separated platforms of pinned multi-platform images kept warm (linux/amd64,linux/arm64; default all)' },
  { flag: 'shutdown-timeout', env: 'HUBCACHE_SHUTDOWN_TIMEOUT', path: ['shutdown', 'timeout'], help: 'graceful shutdown deadline (default 30s)' },
  { flag: 'shutdown-delay', env: 'HUBCACHE_SHUTDOWN_DELAY', path: ['shutdown', 'delay'], help: 'on SIGTERM, keep serving this long with /readyz failing before closing the listener (default 0s)' },
] as const;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export interface LoadOptions {
  /** A YAML file; falls back to HUBCACHE_CONFIG. */
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Flag values by flag name (`listen`, `storage-path`, …). */
  flags?: Record<string, string | undefined>;
}

/** File + environment + flags → a validated, deep-frozen Config, or a ConfigError listing every problem. */
export function loadConfig(opts: LoadOptions = {}): Readonly<Config> {
  const env = opts.env ?? process.env;
  const file = opts.file ?? env.HUBCACHE_CONFIG;
  let doc: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError([`cannot read config file ${file}: ${(err as Error).message}`]);
    }
    let parsed: unknown;
    try {
      parsed = parseYaml(text);
    } catch (err) {
      throw new ConfigError([`${file}: not valid YAML: ${(err as Error).message}`]);
    }
    if (parsed !== null && parsed !== undefined) {
      if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError([`${file}: the top level must be a mapping`]);
      doc = parsed as Record<string, unknown>;
    }
  }
  const defaultUpstream = firstString(opts.flags?.['default-upstream'], env.HUBCACHE_DEFAULT_UPSTREAM, doc.defaultUpstream) ?? DOCKER_HUB.name;
  applyUpstreamEnv(doc, env, defaultUpstream);
  for (const s of SETTINGS) {
    const value = opts.flags?.[s.flag] ?? env[s.env];
    if (value === undefined || value === '') continue;
    setPath(doc, s.path.map((p) => (p === '@default' ? defaultUpstream : p)), value);
  }
  // Docker Hub is always configured; its URL can be overridden (tests, chained mirrors).
  const upstreams = (doc.upstreams ??= {}) as Record<string, unknown>;
  if (typeof upstreams === 'object' && upstreams !== null && defaultUpstream === DOCKER_HUB.name) {
    const hub = (upstreams[DOCKER_HUB.name] ??= {}) as Record<string, unknown>;
    if (typeof hub === 'object' && hub !== null) hub.url ??= DOCKER_HUB.url;
  }
  const result = configSchema.safeParse(doc);
  if (!result.success) throw new ConfigError(formatIssues(result.error));
  const config = result.data;
  const problems: string[] = [];
  if (!config.upstreams[config.defaultUpstream]) problems.push(`defaultUpstream: ${config.defaultUpstream} is not configured under upstreams`);
  for (const [i, entry] of config.hosted.repositories.entries()) {
    if (entry.fallThrough !== undefined && !config.upstreams[entry.fallThrough]) {
      problems.push(`hosted.repositories.${i}.fallThrough: ${entry.fallThrough} is not configured under upstreams (configured: ${Object.keys(config.upstreams).join(', ')})`);
    }
  }
  for (const [name, up] of Object.entries(config.upstreams)) {
    if (up.passwordFile) {
      try {
        up.password = readFileSync(up.passwordFile, 'utf8').trim();
      } catch (err) {
        problems.push(`upstreams.${name}.passwordFile: cannot read ${up.passwordFile}: ${(err as Error).message}`);
      }
    }
  }
  config.cache.pin.forEach((entry, i) => {
    const pin = parsePin(entry);
    if ('error' in pin) return;
    const { upstream } = imageName(pin.registry, pin.path);
    if (!config.upstreams[upstream]) problems.push(`cache.pin.${i}: ${JSON.stringify(pin.source)}: registry ${upstream} is not configured under upstreams`);
  });
  // The TLS files are read and checked here (readable, PEM, the key the certificate's): a broken
  // pair is a configuration error at start, not a listener that fails every handshake.
  if (config.tls.certificate !== undefined && config.tls.key !== undefined) {
    try {
      readTlsPair({ certificate: config.tls.certificate, key: config.tls.key, clientCA: config.tls.clientCA });
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return deepFreeze(config);
}

/**
 * The environment prefix of one upstream's settings: `ghcr.io` → `HUBCACHE_UPSTREAMS_GHCR_IO_`,
 * `registry.example.com:5000` → `HUBCACHE_UPSTREAMS_REGISTRY_EXAMPLE_COM_5000_`.
 */
export function upstreamEnvPrefix(name: string): string {
  return `HUBCACHE_UPSTREAMS_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_`;
}

/** Per-upstream settings that the environment may supply (credentials belong in Secrets, not files). */
const UPSTREAM_ENV_KEYS = [
  ['USERNAME', 'username'],
  ['PASSWORD', 'password'],
  ['PASSWORD_FILE', 'passwordFile'],
  ['URL', 'url'],
  ['TAG_TTL', 'tagTtl'],
  ['ALLOWED_REDIRECT_HOSTS', 'allowedRedirectHosts'],
  ['ALLOWED_REALM_HOSTS', 'allowedRealmHosts'],
] as const;

/**
 * `HUBCACHE_UPSTREAMS_<NAME>_<KEY>` for every upstream named in the file (and the default one):
 * the name can't be recovered from the variable (`GHCR_IO` could be `ghcr.io` or `ghcr-io`), so
 * the environment completes upstreams, it doesn't create them. A password from the environment
 * replaces a passwordFile from the file, and the other way round.
 */
function applyUpstreamEnv(doc: Record<string, unknown>, env: NodeJS.ProcessEnv, defaultUpstream: string): void {
  const fromFile = typeof doc.upstreams === 'object' && doc.upstreams !== null && !Array.isArray(doc.upstreams) ? Object.keys(doc.upstreams) : [];
  for (const name of new Set([...fromFile, defaultUpstream])) {
    const prefix = upstreamEnvPrefix(name);
    for (const [suffix, key] of UPSTREAM_ENV_KEYS) {
      const value = env[prefix + suffix];
      if (value === undefined || value === '') continue;
      setPath(doc, ['upstreams', name, key], value);
      const up = (doc.upstreams as Record<string, Record<string, unknown>>)[name]!;
      if (key === 'password') delete up.passwordFile;
      if (key === 'passwordFile') delete up.password;
    }
  }
}

function firstString(...values: unknown[]): string | undefined {
  return values.find((v): v is string => typeof v === 'string' && v !== '');
}

function setPath(doc: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = doc;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
}

function formatIssues(error: z.ZodError): string[] {
  return error.issues.map((issue) => {
    const where = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
    if (issue.code === z.ZodIssueCode.unrecognized_keys) return `${where}: unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`;
    return `${where}: ${issue.message}`;
  });
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

/**
 * The effective configuration with secrets replaced, for `hubcache config print` and the startup log.
 * Durations and sizes are written as a person would (`5m`, `4MiB`), in forms loadConfig reads back
 * to the same numbers, so the output is a valid config file.
 */
export function redactConfig(config: Readonly<Config>): unknown {
  return JSON.parse(
    JSON.stringify(config, (key, value) => {
      if ((key === 'password' || key === 'secretAccessKey') && typeof value === 'string') return '<redacted>';
      if (DURATION_KEYS.has(key) && typeof value === 'number') return formatDuration(value);
      if (SIZE_KEYS.has(key) && typeof value === 'number') return formatSize(value);
      if (key === 'minFreeSpace' && typeof value === 'object' && value !== null) return 'percent' in value ? `${value.percent}%` : formatSize(value.bytes);
      return value;
    }),
  );
}
