/**
 * The light in-process tier: `createApp` over a `PullThroughRegistry` with the memory stores, in
 * front of FakeRegistry upstreams on loopback — wired the way src/server.ts wires them (resolver,
 * Docker Hub name normalisation, repository filters, Via token), minus the filesystem, the config
 * loader and the shutdown drain (test/support/in-process.ts runs the whole server for those).
 *
 * Starts in milliseconds and never sleeps: time is a manual clock shared by the cache and the
 * upstream clients (tag TTLs, token expiry), retries wait 0 ms, and the counters tests need to
 * wait on (coalesced requests, log lines) are events, not polls.
 */
import { EventEmitter, once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import winston from 'winston';
import { Evictor, type EvictorOptions } from '../../src/cache/evictor.js';
import { PullThroughRegistry } from '../../src/cache/pull-through.js';
import type { FillCoordinator, TagCoordinator } from '../../src/cache/fill-coordinator.js';
import { createApp, type AppOptions } from '../../src/http/app.js';
import { setupAuth, type AuthSetup } from '../../src/http/auth/setup.js';
import { configSchema, type ConfigInput } from '../../src/config/schema.js';
import type { StoreHealth } from '../../src/storage/store-health.js';
import { viaChain, viaToken } from '../../src/http/middleware/anti-loop.js';
import { compileRepoFilter, type RepoFilter } from '../../src/http/resolve-repo.js';
import type { Logger } from '../../src/lib/logger.js';
import type { CacheKind } from '../../src/cache/cache-metrics.js';
import { Metrics } from '../../src/observability/metrics.js';
import { upstreamObserver } from '../../src/observability/upstream-observer.js';
import type { AccessRecord } from '../../src/storage/access-record.js';
import type { BlobStore } from '../../src/storage/blob-store.js';
import { MemoryAccessRecord } from '../../src/storage/memory/memory-access-record.js';
import type { ManifestStore, MetadataStore } from '../../src/storage/manifest-store.js';
import { MemoryBlobStore } from '../../src/storage/memory/memory-blob-store.js';
import { MemoryManifestStore, MemoryMetadataStore } from '../../src/storage/memory/memory-manifest-store.js';
import { DOCKER_HUB } from '../../src/upstream/docker-hub.js';
import { RegistryUpstream, type Credentials } from '../../src/upstream/registry-client.js';
import { FakeRegistry, LoopbackServer } from '../../src/upstream/testing/fake-registry.js';
import { ALL_MANIFESTS, holdUpstream } from './oci-fixtures.js';

export interface UpstreamSpec {
  /** The registry behind this upstream; a fresh FakeRegistry by default (a HostileRegistry works too). */
  readonly registry?: FakeRegistry;
  /** Point this upstream at hubcache itself (a mirror chain that loops); no fake is started. */
  readonly self?: boolean;
  /** Point this upstream at this address (another hubcache, a relay); no fake is started. */
  readonly url?: string;
  readonly tagTtlMs?: number;
  readonly credentials?: Credentials;
  readonly allowedRedirectHosts?: readonly string[];
  readonly maxManifestBytes?: number;
  /** The `upstreams.<name>.repositories` filter. */
  readonly repositories?: { readonly allow?: readonly string[]; readonly deny?: readonly string[] };
}

export interface AppHarnessOptions {
  /** Upstreams by registry name; default one Docker Hub (`docker.io`) with a FakeRegistry. */
  readonly upstreams?: Readonly<Record<string, UpstreamSpec>>;
  /** Default: the first upstream named. */
  readonly defaultUpstream?: string;
  /** Tag TTL of upstreams that don't set their own. Default 10 minutes. */
  readonly tagTtlMs?: number;
  /** Attempts per idempotent upstream request (the retries wait 0 ms). Default 2. */
  readonly retryAttempts?: number;
  readonly resumeAttempts?: number;
  /** Replace a memory store (e.g. with one that fails) — the others stay in memory. */
  readonly stores?: Partial<Stores>;
  readonly readiness?: AppOptions['readiness'];
  /** Passed to the cache: storage faults degrade it, and a degraded store answers blob misses 503. */
  readonly storeHealth?: StoreHealth;
  readonly instanceId?: string;
  /** Blob downloads at once (cache.maxConcurrentFills); default the cache's. */
  readonly maxConcurrentFills?: number;
  /**
   * An `Evictor` over the stores (`hc.evictor`), wired like the server's: the cache claims blobs
   * being downloaded or served, and every commit checks the cap. Defaults: watermarks 95/85, tag
   * retention 90 days, 4 deletions at once, the harness clock.
   */
  readonly eviction?: Partial<Omit<EvictorOptions, 'storage' | 'logger' | 'claimBlob'>>;
  /**
   * Auth on (the `auth` settings, `htpasswd` included), with the harness's clock, the signing key in
   * `keyDir`, and `isHosted` standing for `hosted.repositories`.
   */
  /** Several replicas (issue #15): the cache's cluster coordinator (cluster/redis-coordinator.ts). */
  readonly coordinator?: FillCoordinator;
  /** Several replicas: the cache's tag revalidation coordinator. */
  readonly tags?: TagCoordinator;
  readonly auth?: { readonly config: NonNullable<ConfigInput['auth']>; readonly keyDir: string; readonly isHosted?: (name: string) => boolean };
}

export interface Stores {
  readonly blobs: BlobStore;
  readonly manifests: ManifestStore;
  readonly metadata: MetadataStore;
  /** The last-access record the cache touches (a MemoryAccessRecord by default). */
  readonly access: AccessRecord;
}

export interface HarnessUpstream {
  readonly name: string;
  /** Absent for a `self` or `url` upstream. */
  readonly registry?: FakeRegistry;
  readonly server?: LoopbackServer;
  readonly client: RegistryUpstream;
}

/** Time for the cache and the upstream clients; moves only when a test says so. */
export interface ManualClock {
  now(): number;
  advance(ms: number): void;
}

export type LogLine = Record<string, unknown> & { message: string; level: string };

export interface AppHarness {
  readonly url: string;
  /** The default upstream's registry and server. */
  readonly registry: FakeRegistry;
  readonly upstreamServer: LoopbackServer;
  readonly upstreams: ReadonlyMap<string, HarnessUpstream>;
  readonly stores: Stores;
  readonly metrics: ObservedMetrics;
  readonly cache: PullThroughRegistry;
  /** Present with `eviction`. */
  readonly evictor: Evictor | undefined;
  readonly clock: ManualClock;
  readonly instanceId: string;
  /** The auth layer, when `auth` was given. */
  readonly auth?: AuthSetup;
  /** The logger the cache logs with (for parts a test wires itself, e.g. a PinSet). */
  readonly logger: Logger;
  /** Every log line so far (winston info objects, with the request's `requestId` where there is one). */
  readonly logs: readonly LogLine[];
  /** Requests hubcache's own listener received (the loop guard's hop count). */
  readonly served: () => number;
  /** `fetch` against hubcache: `path` starts with `/`. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  /** A request the way a pulling client sends it (Accept: every manifest type), body read. */
  pull(path: string, init?: { method?: string; headers?: Record<string, string> }): Promise<Pulled>;
  /** Resolves with the first log line, past or future, that matches. */
  waitForLog(pred: (line: LogLine) => boolean): Promise<LogLine>;
  /** Waits for every blob download in flight to commit or fail. */
  settle(): Promise<void>;
  close(): Promise<void>;
}

/** A response with its body read, and the two headers cache tests look at most. */
export interface Pulled {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Buffer;
  /** X-Hubcache-Cache: hit, miss, revalidated, stale. */
  readonly cache: string | null;
  readonly digest: string | null;
}

/** Starts a harness for one test and closes it whatever happens. */
export async function withApp<T>(opts: AppHarnessOptions, fn: (hc: AppHarness) => Promise<T>): Promise<T> {
  const hc = await startApp(opts);
  try {
    return await fn(hc);
  } finally {
    await hc.close();
  }
}

/**
 * `n` clients pulling `path` at once while the first one's upstream request (the one `upstream`
 * picks) is held: released only once the other `n - 1` joined its flight of `kind`, so the
 * single-flight is proven, not raced.
 */
export async function pullTogether(hc: AppHarness, path: string, n: number, kind: CacheKind, upstream: (req: IncomingMessage) => boolean): Promise<Pulled[]> {
  const held = holdUpstream(hc.registry, upstream);
  const joinedBefore = hc.metrics.joinedCount(kind);
  const pulls = Array.from({ length: n }, () => hc.pull(path));
  await held.parked(1);
  await hc.metrics.untilJoined(kind, joinedBefore + n - 1);
  held.release();
  return Promise.all(pulls);
}

/** Metrics that also tell tests, as events, what they would otherwise have to poll for. */
export class ObservedMetrics extends Metrics {
  readonly #events = new EventEmitter().setMaxListeners(0);
  readonly #joined = new Map<CacheKind, number>();

  constructor() {
    super({ collectDefault: false });
  }

  override joined(kind: CacheKind): void {
    super.joined(kind);
    this.#joined.set(kind, (this.#joined.get(kind) ?? 0) + 1);
    this.#events.emit('joined');
  }

  #tails = 0;

  override fillTail(seconds: number): void {
    super.fillTail(seconds);
    this.#tails++;
    this.#events.emit('tail');
  }

  /** Responses that followed a download to its last byte and reported the tail (hubcache_fill_tail_seconds). */
  get fillTails(): number {
    return this.#tails;
  }

  /** Resolves once `n` fill tails were reported in all. */
  async untilFillTails(n: number): Promise<void> {
    while (this.#tails < n) await once(this.#events, 'tail');
  }

  joinedCount(kind: CacheKind): number {
    return this.#joined.get(kind) ?? 0;
  }

  /** Resolves once `n` requests of `kind` joined a flight already running. */
  async untilJoined(kind: CacheKind, n: number): Promise<void> {
    while (this.joinedCount(kind) < n) await once(this.#events, 'joined');
  }

  /** The current value of one series (0 when it doesn't exist yet). */
  async value(name: string, labels: Record<string, string> = {}): Promise<number> {
    const metric = await this.registry.getSingleMetric(name)?.get();
    const match = metric?.values.find((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want));
    return match?.value ?? 0;
  }
}

export async function startApp(opts: AppHarnessOptions = {}): Promise<AppHarness> {
  const specs = opts.upstreams ?? { [DOCKER_HUB.name]: {} };
  const defaultUpstream = opts.defaultUpstream ?? Object.keys(specs)[0]!;
  const instanceId = opts.instanceId ?? 'itest';
  let nowMs = Date.parse('2025-01-01T00:00:00Z');
  const clock: ManualClock = {
    now: () => nowMs,
    advance: (ms) => void (nowMs += ms),
  };
  const logs: LogLine[] = [];
  const logEvents = new EventEmitter().setMaxListeners(0);
  const logger = recordingLogger((line) => {
    logs.push(line);
    logEvents.emit('line', line);
  });
  const metrics = new ObservedMetrics();

  // Listen first: a `self` upstream needs hubcache's own address before the app exists.
  let served = 0;
  let app: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  const server = createServer((req, res) => {
    served++;
    app!(req, res);
  });
  const url = await listen(server);

  const upstreams = new Map<string, HarnessUpstream>();
  const entries = new Map<string, { upstream: RegistryUpstream; tagTtlMs: number }>();
  const filters = new Map<string, RepoFilter>();
  for (const [name, spec] of Object.entries(specs)) {
    const registry = spec.self || spec.url ? undefined : (spec.registry ?? new FakeRegistry());
    const upstreamServer = registry ? await LoopbackServer.start(registry.handle) : undefined;
    const client = new RegistryUpstream({
      name,
      url: upstreamServer?.url ?? spec.url ?? url,
      credentials: spec.credentials,
      allowedRedirectHosts: spec.allowedRedirectHosts,
      // No test waits for these: they only bound a regression that would otherwise hang.
      timeouts: { connectMs: 5_000, headersMs: 10_000, bodyIdleMs: 10_000 },
      retries: { attempts: opts.retryAttempts ?? 2, baseDelayMs: 0 },
      maxManifestBytes: spec.maxManifestBytes,
      userAgent: 'hubcache/itest',
      via: () => viaChain(`1.1 ${viaToken(instanceId)}`),
      observer: upstreamObserver(metrics, logger, name),
      clock: clock.now,
    });
    upstreams.set(name, { name, registry, server: upstreamServer, client });
    entries.set(name, { upstream: client, tagTtlMs: spec.tagTtlMs ?? opts.tagTtlMs ?? 10 * 60_000 });
    if (spec.repositories) filters.set(name, compileRepoFilter(spec.repositories));
  }

  const stores: Stores = {
    blobs: opts.stores?.blobs ?? new MemoryBlobStore(),
    manifests: opts.stores?.manifests ?? new MemoryManifestStore(),
    metadata: opts.stores?.metadata ?? new MemoryMetadataStore(),
    access: opts.stores?.access ?? new MemoryAccessRecord(),
  };
  const cache = new PullThroughRegistry({
    blobs: stores.blobs,
    manifests: stores.manifests,
    metadata: stores.metadata,
    access: stores.access,
    upstreams: entries,
    fillTimeoutMs: 30_000,
    resumeAttempts: opts.resumeAttempts ?? 1,
    logger,
    metrics,
    clock: clock.now,
    ...(opts.storeHealth ? { storeHealth: opts.storeHealth } : {}),
    ...(opts.maxConcurrentFills ? { maxConcurrentFills: opts.maxConcurrentFills } : {}),
    ...(opts.coordinator ? { coordinator: opts.coordinator } : {}),
    ...(opts.tags ? { tags: opts.tags } : {}),
    onCommitted: () => evictor?.check(),
    admitFill: async () => evictor?.waitForRoom(),
  });
  const evictor: Evictor | undefined = opts.eviction
    ? new Evictor({
        storage: stores,
        highWatermark: 95,
        lowWatermark: 85,
        tagRetentionMs: 90 * 24 * 3_600_000,
        concurrency: 4,
        clock: clock.now,
        logger,
        metrics,
        ...opts.eviction,
        claimBlob: (d) => cache.claimForEviction(d),
      })
    : undefined;
  const auth = opts.auth
    ? setupAuth(configSchema.parse({ auth: opts.auth.config }).auth, { keyDir: opts.auth.keyDir, logger, metrics, isHosted: opts.auth.isHosted ?? (() => false), now: clock.now })
    : undefined;
  app = createApp({
    ...(auth ? { auth: auth.guard } : {}),
    reader: cache,
    sendTimeoutMs: 60_000,
    resolver: {
      upstreams: new Set(entries.keys()),
      defaultUpstream,
      filters,
    },
    logger,
    metrics,
    instanceId,
    readiness: opts.readiness ?? (async () => ({ checks: { config: true } })),
    serveMetrics: true,
  });

  const def = upstreams.get(defaultUpstream);
  if (!def) throw new Error(`default upstream ${defaultUpstream} is not among the upstreams`);
  const settle = async () => void (await Promise.all(cache.inFlightFills()));
  let closed: Promise<void> | undefined;
  return {
    url,
    get registry() {
      if (!def.registry) throw new Error('the default upstream has no FakeRegistry (self or url)');
      return def.registry;
    },
    get upstreamServer() {
      if (!def.server) throw new Error('the default upstream has no LoopbackServer (self or url)');
      return def.server;
    },
    upstreams,
    stores,
    metrics,
    cache,
    evictor,
    clock,
    instanceId,
    ...(auth ? { auth } : {}),
    logger,
    logs,
    served: () => served,
    fetch: (path, init) => fetch(`${url}${path}`, init),
    pull: async (path, init = {}) => {
      const res = await fetch(`${url}${path}`, { method: init.method, headers: { accept: ALL_MANIFESTS, ...init.headers } });
      const body = Buffer.from(await res.arrayBuffer());
      return { status: res.status, headers: res.headers, body, cache: res.headers.get('x-hubcache-cache'), digest: res.headers.get('docker-content-digest') };
    },
    waitForLog: (pred) => {
      const found = logs.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve) => {
        const onLine = (line: LogLine) => {
          if (!pred(line)) return;
          logEvents.off('line', onLine);
          resolve(line);
        };
        logEvents.on('line', onLine);
      });
    },
    settle,
    close: () =>
      (closed ??= (async () => {
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
        await Promise.all([...upstreams.values()].map((u) => u.client.close({ force: true })));
        await settle();
        await evictor?.stop();
        await Promise.all([...upstreams.values()].map((u) => u.server?.close()));
        await auth?.close();
      })()),
  };
}

/** A logger that hands every record to `sink` (as winston's info object) and writes nothing. */
function recordingLogger(sink: (line: LogLine) => void): Logger {
  const record = winston.format((info) => {
    sink({ ...info } as LogLine);
    return false;
  });
  return winston.createLogger({ level: 'debug', format: record(), transports: [new winston.transports.Console({ silent: true })] });
}

async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
