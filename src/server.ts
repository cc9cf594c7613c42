import { createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { accessSync, constants as fsConstants, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from './config/load.js';
import { createServer, type Server } from 'node:http';
import { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { evictionPolicy, Evictor, type PassOptions, type PassReport } from './cache/evictor.js';
import { PinSet } from './cache/pins.js';
import { PullThroughRegistry } from './cache/pull-through.js';
import { createPeerServer } from './cluster/peer-server.js';
import type { RedisCoordinator } from './cluster/redis-coordinator.js';
import { UploadForwarder } from './cluster/upload-forwarder.js';
import { createPeerUploadsApp } from './http/peer-uploads.js';
import type { Digest } from './domain/digest.js';
import { diskUsage, type DuResult } from './commands/du.js';
import { matchesFilter } from './commands/ls.js';
import { parseHostPort, type Config, type TlsConfig } from './config/schema.js';
import { adminRouter, type AdminOperations } from './http/admin.js';
import { createApp, metricsHandler } from './http/app.js';
import { setupAuth } from './http/auth/setup.js';
import { TlsFiles } from './lib/tls-files.js';
import { bornAsExpressMessages, createClientServer, type ClientServer } from './http/client-server.js';
import { compileHostedRules, compileRepoFilter } from './http/resolve-repo.js';
import { RegistryError } from './domain/errors.js';
import { HostedContent } from './hosted/hosted-content.js';
import { HostedGc } from './hosted/hosted-gc.js';
import { HostedRegistry } from './hosted/hosted-registry.js';
import { UploadSessions } from './storage/upload-sessions.js';
import { viaChain, viaToken } from './http/middleware/anti-loop.js';
import { noSniff } from './http/middleware/no-sniff.js';
import { createLogger, type Logger } from './lib/logger.js';
import { SingleFlight } from './lib/single-flight.js';
import { Metrics } from './observability/metrics.js';
import { upstreamObserver } from './observability/upstream-observer.js';
import { BufferPool } from './storage/buffer-pool.js';
import { FILE_READ_CHUNK } from './storage/fs/file-range-stream.js';
import { StoreHealth } from './storage/store-health.js';
import { openStorage } from './storage/open-storage.js';
import type { Storage } from './storage/storage.js';
import { RegistryUpstream } from './upstream/registry-client.js';
import type { Upstream } from './upstream/upstream.js';

export interface Hubcache {
  /** The registry API's bound address (port 0 in config → the chosen port). */
  readonly url: string;
  readonly metricsUrl: string;
  readonly instanceId: string;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Runs one retention and eviction pass now (`hubcache gc`, the admin endpoint). */
  gc(opts?: PassOptions): Promise<PassReport>;
  /**
   * The pins (cache.pin): `pins.protects` is what the evictor must never remove (its
   * `isProtected`); `pins.loaded()` resolves once the stored pins are protected.
   */
  readonly pins: PinSet;
  /**
   * Hosted content (issue #14): true for every blob and manifest linked to a hosted repository,
   * and for everything until the start-up walk of the hosted repositories has finished. The
   * evictor must never remove what it protects either: `isProtected = (d) => pins.protects(d) ||
   * isHostedContent(d)`.
   */
  readonly isHostedContent: (digest: Digest) => boolean;
  /** Stop accepting, let in-flight responses and fills finish within `deadlineMs`, then close. */
  close(deadlineMs?: number): Promise<void>;
}

/** The composition root: config → logger → metrics → stores → upstreams → cache → HTTP → listen. */
export interface StartOptions {
  logger?: Logger;
  version?: string;
  /**
   * When the store is owned by a process whose liveness can't be checked from here (another host,
   * or another PID namespace), fail at once instead of waiting for its claim to lapse (up to
   * `storage.lockStaleAfter` for the filesystem lock). For `prefetch`, which must not block.
   */
  lockFailFast?: boolean;
  /** Aborts a start that is waiting for ownership of the store (a signal while starting). */
  signal?: AbortSignal;
  /** Content eviction must never remove (pinned images, pushed content), by digest: see `EvictorOptions.isProtected`. */
  isProtected?: (digest: Digest) => boolean;
  /** Ms since epoch for garbage collection's grace period (hosted.gcGracePeriod); tests inject one. */
  clock?: () => number;
}

export async function startHubcache(config: Readonly<Config>, opts: StartOptions = {}): Promise<Hubcache> {
  const logger = opts.logger ?? createLogger({ level: config.log.level, format: config.log.format });
  // A missing users file is a configuration error, reported before the store is touched.
  if (config.auth.htpasswd) {
    try {
      accessSync(config.auth.htpasswd, fsConstants.R_OK);
    } catch (err) {
      throw new ConfigError([`auth.htpasswd: cannot read ${config.auth.htpasswd}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`]);
    }
  }
  const metrics = new Metrics();
  const instanceId = config.instanceId ?? randomBytes(6).toString('hex');

  // Every response streaming a stored blob takes its buffers from here (issue #11).
  const readBuffers = new BufferPool({ bufferSize: FILE_READ_CHUNK, maxBytes: config.server.blobBufferPool, onFallback: () => metrics.blobBufferFallback() });
  metrics.watchBlobBufferPool(() => readBuffers.stats());
  // Several replicas (issue #15): blob downloads leased cluster-wide in Redis, followed from the
  // replica that holds the lease (docs/architecture.md#several-replicas). Redis unreachable at start
  // is not fatal: the replica serves, downloading on its own, until Redis answers.
  const cluster = config.cluster;
  let peerSecret: string | undefined;
  if (cluster?.peerSecretFile) {
    try {
      peerSecret = readFileSync(cluster.peerSecretFile, 'utf8').trim();
    } catch (err) {
      throw new ConfigError([`cluster.peerSecretFile: cannot read ${cluster.peerSecretFile}: ${(err as Error).message}`]);
    }
  }
  // ioredis is loaded only with `cluster` (it is a tenth of the modules a start loads).
  const coordinator = cluster
    ? new (await import('./cluster/redis-coordinator.js')).RedisCoordinator({ redis: cluster.redis, advertiseUrl: cluster.advertiseUrl, fillLeaseTtlMs: cluster.fillLeaseTtl, holderId: instanceId, logger, metrics, ...(peerSecret ? { peerSecret } : {}) })
    : undefined;
  if (coordinator && !(await coordinator.connected(2_000))) logger.warn('redis not reachable yet: downloading alone until it is', {});
  // With cluster, the last-access record is the cluster's, in Redis (the s3 driver takes it): every
  // replica writes what it serves there, the replica running eviction reads all of it.
  const storage = await openStorage(config.storage, { logger, readBuffers, ...(coordinator ? { access: coordinator.accessRecord({ refreshMs: config.storage.accessFlushInterval }) } : {}) }).catch(async (err: unknown) => {
    await coordinator?.close();
    throw err;
  });
  // Before anything touches the store: init() clears what a previous owner left unfinished, which
  // would break another process's writes. Throws StoreOwnedError when another process owns it. An
  // owner on another host or in another PID namespace (a container restarted after a crash) is
  // waited for, up to storage.lockStaleAfter: nothing listens meanwhile (the chart's startupProbe
  // allows for it). Released after close(); a start that fails after this point leaves it to the
  // exit handler.
  const ownership = await storage.acquireOwnership({ failFast: opts.lockFailFast, signal: opts.signal }).catch(async (err: unknown) => {
    await coordinator?.close();
    throw err;
  });
  const ready = await storage.init().catch(async (err: unknown) => {
    await coordinator?.close();
    throw err;
  });
  if (ready.leftovers > 0) logger.info('leftover temp files removed', { count: ready.leftovers });
  logger.info('storage opened', { ...storage.describe() });
  // What the store holds is counted in the background (issue #12: a big store must not delay the
  // start); the gauges have no sample until then.
  const { blobs, manifests, metadata } = storage;
  metrics.observeStoreUsage(() => blobs.usage?.());
  const scanStarted = Date.now();
  void ready.usage.then((usage) => usage && logger.info('store scanned', { blobs: usage.objects, bytes: usage.bytes, ms: Date.now() - scanStarted }));

  // Several replicas: what one learns of an upstream's rate limit (its readings, a 429's
  // Retry-After) every replica knows; a single node keeps its own (the gauges), as before.
  const sharedRateLimits = coordinator?.rateLimits({
    upstreams: Object.keys(config.upstreams),
    onReading: (u, snap) => metrics.rateLimit(u, snap.limit, snap.remaining),
    logger,
  });
  const upstreams = new Map<string, { upstream: Upstream; tagTtlMs: number }>();
  for (const [name, up] of Object.entries(config.upstreams)) {
    const upstream = new RegistryUpstream({
      name,
      url: up.url,
      credentials: up.username && up.password ? { username: up.username, password: up.password } : undefined,
      allowedRealmHosts: up.allowedRealmHosts,
      allowedRedirectHosts: up.allowedRedirectHosts,
      timeouts: {
        connectMs: config.upstreamClient.connectTimeout,
        headersMs: config.upstreamClient.headersTimeout,
        bodyIdleMs: config.upstreamClient.bodyIdleTimeout,
        requestMs: config.upstreamClient.requestTimeout,
      },
      retries: { attempts: config.upstreamClient.retries, baseDelayMs: config.upstreamClient.retryBaseDelay },
      maxManifestBytes: config.upstreamClient.maxManifestSize,
      maxTagListBytes: config.upstreamClient.maxTagListSize,
      maxConcurrency: config.upstreamClient.maxConcurrency,
      userAgent: `hubcache/${opts.version ?? 'dev'}`,
      via: () => viaChain(`1.1 ${viaToken(instanceId)}`),
      observer: upstreamObserver(metrics, logger, name),
      ...(sharedRateLimits ? { sharedRateLimits } : {}),
    });
    upstreams.set(name, { upstream, tagTtlMs: up.tagTtl });
  }

  const storeHealth = new StoreHealth({
    probe: () => storage.probeWrite(),
    onChange: (writable) => {
      metrics.storeWritable(writable);
      if (writable) logger.info('store writable again', { storage: storage.describe().location });
    },
    // Logged once per degraded spell, with the errno and the path; an emergency eviction pass
    // frees space (down to the low watermark, or a fixed fraction of the store without a cap) and
    // a probe then clears the degraded state: a full disk heals itself.
    onStorageFull: (fault) => {
      logger.error('store degraded: writes fail, content not cached is passed through from upstream, not stored', { storage: storage.describe().location, ...fault });
      if (fault.errno !== 'ENOSPC' && fault.errno !== 'EDQUOT') return;
      void evictor
        .run({ mode: 'emergency' })
        .then((report) => {
          logger.warn('emergency eviction', { removed: report.removed.length, freedBytes: report.freedBytes, storeBytes: report.storeBytesAfter });
          // Space was freed: probe now rather than at the next /readyz or miss.
          return report.freedBytes > 0 ? storeHealth.check() : undefined;
        })
        .catch((err: unknown) => logger.error('emergency eviction failed', { error: (err as Error).message }));
    },
  });
  let resolvePinsLoaded!: (loaded: Promise<void>) => void;
  const pinsLoaded = new Promise<void>((r) => (resolvePinsLoaded = (p) => void p.then(r, r)));
  const registry = new PullThroughRegistry({
    storeHealth,
    ...(coordinator ? { coordinator, tags: coordinator } : {}),
    access: storage.access,
    // Pushed blobs are served under a mirrored name only once its upstream has them too.
    heldForOthers: (digest) => hosted.content.holds(digest),
    blobs,
    manifests,
    metadata,
    upstreams,
    fillTimeoutMs: config.cache.fillTimeout,
    resumeAttempts: config.cache.resumeAttempts,
    maxConcurrentFills: config.cache.maxConcurrentFills,
    abandonedFills: {
      graceMs: config.cache.abandonedFills.grace,
      minProgressToFinish: config.cache.abandonedFills.minProgressToFinish,
      maxRemainingToFinish: config.cache.abandonedFills.maxRemainingToFinish,
    },
    ...(storage.spoolDir ? { spoolDir: storage.spoolDir } : {}),
    tagListCacheBytes: config.cache.tagListCacheSize,
    logger,
    metrics,
    // The cap is checked after every commit (an in-memory read of the usage tally); over the cap,
    // a new download waits for eviction to make room.
    onCommitted: () => evictor.check(),
    admitFill: () => evictor.waitForRoom(),
  });
  const evictor: Evictor = new Evictor({
    storage,
    ...evictionPolicy(config),
    claimBlob: (digest) => registry.claimForEviction(digest),
    // Pinned content (cache.pin), pushed content (hosted.repositories) and whatever the caller
    // protects. (`pins` and `hosted` are created below, before anything can run a pass.)
    isProtected: (digest) => pins.protects(digest) || hosted.content.isProtected(digest) || opts.isProtected?.(digest) === true,
    // No pass before the stored pins are known: it could evict what a pin protects.
    ready: pinsLoaded,
    // Hosted content nothing references after deletes (hosted/hosted-gc.ts): with hosted repositories only.
    ...(config.hosted.repositories.length > 0 ? { collectGarbage: (o: Parameters<HostedGc['collect']>[0]) => hostedGc.collect(o) } : {}),
    // Several replicas: one pass that deletes at a time for the whole cluster (the maintenance lock).
    // Before such a pass, the bucket's usage is counted again: this replica's count has the other
    // replicas' commits and deletes only since its last listing (storage/s3/bucket-tally.ts).
    ...(coordinator ? { lock: coordinator, beforePass: async () => void (await Promise.all([hosted.content.refreshFromStore({ metadata }), storage.refreshUsage?.()])) } : {}),
    logger,
    metrics,
  });
  if (config.storage.maxSize !== undefined) metrics.storeMaxBytes(config.storage.maxSize);

  // The private registry (issue #14): names matching hosted.repositories are pushed here and served
  // from the store only. Its content is protected from eviction by `hosted.content.isProtected`.
  const hostedRules = compileHostedRules(config.hosted.repositories);
  const uploads = new UploadSessions({
    blobs,
    timeoutMs: config.hosted.uploadTimeout,
    maxSessions: config.hosted.maxUploadSessions,
    onExpired: (r) => logger.info('upload session expired', { uuid: r.id, repository: r.key.repo, bytes: r.offset }),
    // Several replicas: which replica holds each session, in Redis, so that a request for it that
    // reaches another replica is passed through to this one (docs/architecture.md, "Uploads across replicas").
    // The record outlives the local session's expiry (1.25× the timeout; progress renews it every quarter).
    ...(coordinator
      ? {
          directory: {
            started: (r) => coordinator.uploadStarted(r.id, r.key.repo, config.hosted.uploadTimeout * 1.25),
            touched: (r) => coordinator.uploadTouched(r.id, config.hosted.uploadTimeout * 1.25),
            ended: (id) => coordinator.uploadEnded(id),
          },
        }
      : {}),
  });
  const uploadForwarder = coordinator ? new UploadForwarder({
        owners: coordinator,
        selfId: instanceId,
        logger,
        metrics,
        // A hung owner releases the client: as long as a client may take to send a request's head,
        // and for the final PUT (the owner publishes the blob) as long as a blob's fill may take.
        answerTimeoutMs: config.server.headersTimeout,
        publishTimeoutMs: config.cache.fillTimeout,
        ...(peerSecret ? { peerSecret } : {}),
      }) : undefined;
  // Several replicas: pushes and garbage collection exclude each other per digest cluster-wide.
  const hosted = new HostedRegistry({ blobs, manifests, metadata, uploads, allowDelete: config.hosted.allowDelete, logger, content: new HostedContent(coordinator ? { shared: coordinator } : {}) });
  metrics.observeHosted({ usage: () => hosted.content.usage(), uploads: () => uploads.size });
  const hostedGc = new HostedGc({
    storage,
    content: hosted.content,
    gracePeriodMs: config.hosted.gcGracePeriod,
    isProtected: (digest) => pins.protects(digest) || opts.isProtected?.(digest) === true,
    claimBlob: (digest) => registry.claimForEviction(digest),
    ...(opts.clock ? { clock: opts.clock } : {}),
    logger,
  });
  const hostedLoad = new AbortController();
  void hosted.content.load({ blobs, manifests, metadata }, hostedLoad.signal).then(
    (usage) => config.hosted.repositories.length > 0 && logger.info('hosted content counted', { ...usage }),
    (err: unknown) => !hostedLoad.signal.aborted && logger.warn('hosted content count failed: everything stays protected from eviction', { error: (err as Error).message }),
  );
  if (cluster && config.hosted.repositories.length > 0 && !peerSecret) {
    logger.warn('pushes across replicas: the follow endpoint passes upload requests on to the replica holding the session without asking who sends them; set cluster.peerSecretFile (or keep cluster.peerListen reachable by the replicas only)', { peerListen: cluster.peerListen });
  }
  if (config.hosted.repositories.length > 0 && !config.auth.htpasswd) {
    logger.warn('hosted repositories accept pushes from anyone who can reach this port: set auth.htpasswd', { patterns: config.hosted.repositories.map((r) => r.pattern) });
  }

  // Pinned images (issue #13): protected from the store's content at once, refreshed on their
  // upstream's tag TTL through the cache. The evictor takes `pins.protects` as its `isProtected`
  // and waits for `pins.loaded()` (the stored pins read, no upstream request) before its first pass.
  const pins: PinSet = new PinSet({
    pins: config.cache.pin,
    source: registry,
    manifests,
    metadata,
    tagTtls: new Map([...upstreams].map(([name, u]) => [name, u.tagTtlMs])),
    concurrency: config.cache.pinConcurrency,
    platforms: config.cache.pinPlatforms,
    maxTags: config.cache.pinMaxTags,
    logger,
    metrics,
  });

  resolvePinsLoaded(pins.loaded());
  // Once the blobs are counted and the pins known the cap can be judged; then every storage.eviction.interval.
  void Promise.all([ready.usage, pinsLoaded]).then(() => evictor.start(config.storage.eviction.interval));

  let accepting = true;
  /** Shutdown began: /readyz fails; during `shutdown.delay` requests are still served. */
  let stopping = false;
  // A store that can't be written (disk full) still serves what it holds: degraded, not unready.
  const readiness = async () => ({
    checks: { config: true, accepting: !stopping, storeReadable: await storage.readable() },
    degraded: { storeWritable: await storeHealth.check(), ...(coordinator ? { redis: coordinator.up } : {}) },
  });
  // Users, permissions and tokens (issue #14), when an htpasswd file is configured. The signing key
  // lives in the store (docs/storage-layout.md). Hosted names (hosted.repositories) need a login
  // unless a rule says otherwise.
  // Several replicas: one signing key for all of them, or a token from one would be refused by the
  // others. The first replica generates it and stores it in Redis (SET NX); the others read it.
  const signingKey = config.auth.htpasswd && coordinator ? await sharedSigningKey(coordinator) : undefined;
  const auth = config.auth.htpasswd
    ? setupAuth(config.auth, { keyDir: join(config.storage.path, 'auth'), ...(signingKey ? { signingKey } : {}), logger, metrics, isHosted: (name: string) => hostedRules.some((r) => r.matches(name)) })
    : undefined;
  const separateMetrics = config.metrics.enabled && config.metrics.listen !== undefined;
  const resolver = {
    upstreams: new Set(upstreams.keys()),
    defaultUpstream: config.defaultUpstream,
    filters: new Map(Object.entries(config.upstreams).flatMap(([name, up]) => (up.repositories ? [[name, compileRepoFilter(up.repositories)] as const] : []))),
    hosted: hostedRules,
  };
  const app = createApp({
    reader: registry,
    resolver,
    hosted,
    ...(uploadForwarder ? { uploadsElsewhere: uploadForwarder } : {}),
    maxManifestBytes: config.upstreamClient.maxManifestSize,
    logger,
    metrics,
    instanceId,
    readiness,
    serveMetrics: config.metrics.enabled && !separateMetrics,
    sendTimeoutMs: config.server.sendTimeout,
    trustedProxies: config.server.trustedProxies,
    ...(auth ? { auth: auth.guard } : {}),
  });

  // TLS (issue #14): the pair was checked at load; read again here (the files may have changed
  // since) and kept current: a changed pair is given to new connections, open ones keep theirs.
  const tlsFiles = config.tls.certificate !== undefined && config.tls.key !== undefined ? watchTls(config.tls, logger, metrics) : undefined;
  const clientServer = createClientServer(app, {
    ...config.server,
    logger,
    metrics,
    ...(tlsFiles ? { tls: { context: tlsFiles.files.current.context, minVersion: config.tls.minVersion } } : {}),
  });
  if (tlsFiles) tlsFiles.serve(clientServer as HttpsServer);
  const server = await listen(clientServer, config.listen).catch((err: unknown) => {
    tlsFiles?.files.close();
    throw err;
  });
  endKeepAliveWhenClosing(server, () => !accepting);
  let metricsServer: Server | undefined;
  if (separateMetrics) {
    const mApp = express();
    mApp.use(noSniff());
    mApp.get('/metrics', metricsHandler(metrics));
    // Operators' endpoints (hubcache du/gc --server): only here, never on the registry port (http/admin.ts).
    mApp.use('/admin', adminRouter({ operations: { ...adminOperations(storage), gc: (o) => adminGc(evictor, o) }, logger, metrics }));
    metricsServer = await listen(createServer(bornAsExpressMessages(mApp), mApp), config.metrics.listen!);
    endKeepAliveWhenClosing(metricsServer, () => !accepting);
  }
  // The follow endpoint: its own listener, reachable by the other replicas only (the chart's NetworkPolicy).
  // It also serves the upload sessions this replica holds to the replicas that received their requests.
  const peerUploads = coordinator ? createPeerUploadsApp({ hosted, resolver, logger, metrics, lost: (id) => coordinator.uploadEnded(id) }) : undefined;
  const peerServer = cluster ? await listen(createPeerServer({ source: registry, logger, ...(peerSecret ? { secret: peerSecret } : {}), ...(peerUploads ? { uploads: peerUploads } : {}) }), cluster.peerListen) : undefined;
  const url = addressUrl(server);
  const metricsUrl = metricsServer ? addressUrl(metricsServer) : url;
  if (peerServer && cluster) logger.info('cluster', { peerListen: addressUrl(peerServer), advertiseUrl: cluster.advertiseUrl, fillLeaseTtlMs: cluster.fillLeaseTtl, redisUp: coordinator?.up });
  logger.info('hubcache started', { listen: url, metrics: `${metricsUrl}/metrics`, storage: storage.describe().location, instanceId, upstreams: [...upstreams.keys()] });
  // In the background, after listen: fetching pinned images must not delay serving. With no pins
  // this only settles `pins.loaded()`.
  if (pins.size > 0) logger.info('pins', { pins: config.cache.pin, concurrency: config.cache.pinConcurrency, platforms: config.cache.pinPlatforms });
  void pins.start().catch((err: unknown) => logger.error('pins not started', { error: (err as Error).message }));

  let closing: Promise<void> | undefined;
  const close = (deadlineMs = config.shutdown.timeout): Promise<void> =>
    (closing ??= (async () => {
      stopping = true;
      if (config.shutdown.delay > 0) {
        // Load balancers and endpoint controllers notice a failing /readyz only after their next
        // probe: keep serving until they stopped sending, then close the listener.
        logger.info('shutdown delay: not ready, still serving', { delayMs: config.shutdown.delay });
        await new Promise((r) => setTimeout(r, config.shutdown.delay));
      }
      accepting = false;
      // No pin refresh starts now; the ones running stop waiting (their downloads are the fills'
      // business below).
      await pins.stop();
      // Downloads still queued serve clients that are about to be cut off: drop them (503) and start
      // no new one; the running ones are waited for below.
      registry.closeFillQueue();
      logger.info('shutting down', { deadlineMs, fillsInFlight: registry.inFlightFills().length });
      const deadline = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), deadlineMs).unref());
      const drained = Promise.all([
        new Promise<void>((r) => server.close(() => r())),
        metricsServer ? new Promise<void>((r) => metricsServer!.close(() => r())) : undefined,
        server.closeIdleConnections(),
        ...registry.inFlightFills(),
      ]);
      // Followers on other replicas read the fills above until they end; the listener closes with them.
      peerServer?.close();
      const outcome = await Promise.race([drained.then(() => 'drained' as const), deadline]);
      if (outcome === 'timeout') logger.warn('shutdown deadline reached, closing remaining connections');
      server.closeAllConnections();
      metricsServer?.closeAllConnections();
      peerServer?.closeAllConnections();
      // Upstream requests still open serve nobody now; wait for them only until the deadline, then
      // abort them: a stalled download must not keep the process alive past --shutdown-timeout.
      const closeUpstreams = (force: boolean) => Promise.all([...upstreams.values()].map((u) => u.upstream.close({ force }).catch(() => {})));
      if ((await Promise.race([closeUpstreams(false).then(() => 'closed' as const), deadline])) === 'timeout') await closeUpstreams(true);
      hostedLoad.abort();
      // Unfinished uploads don't survive a restart (the next start sweeps tmp/): remove them now.
      await uploads.close();
      logger.info('hubcache stopped', { outcome });
    })());

  const closeAll = (deadlineMs?: number) =>
    close(deadlineMs)
      .finally(() => evictor.stop())
      .finally(() => auth?.close())
      .finally(() => uploadForwarder?.close())
      .finally(() => tlsFiles?.files.close())
      // The store first: its last access-record flush goes to Redis with cluster.
      .finally(() => storage.close())
      .finally(() => coordinator?.close())
      .finally(() => ownership.release());
  return { url, metricsUrl, instanceId, logger, metrics, pins, isHostedContent: hosted.content.isProtected, gc: (o) => evictor.run({ mode: 'gc', ...o }), close: closeAll };
}

/**
 * POST /admin/gc: one pass now. With several replicas, a replica that can't take the maintenance
 * lock answers at once rather than wait for a pass of unknown length: `MAINTENANCE_RUNNING` (409,
 * the holder named) or `MAINTENANCE_UNAVAILABLE` (503, Redis unreachable). A dry run deletes
 * nothing and runs anywhere.
 */
async function adminGc(evictor: Evictor, o: PassOptions): Promise<PassReport> {
  const report = await evictor.run({ ...o, mode: 'gc' });
  if (report.skipped === 'busy') throw new RegistryError('MAINTENANCE_RUNNING', { holder: report.holder }, { message: `another replica (${report.holder ?? 'unknown'}) is running an eviction or garbage collection pass: try again when it is done` });
  if (report.skipped === 'unavailable') throw new RegistryError('MAINTENANCE_UNAVAILABLE');
  return report;
}

/**
 * The token signing key of a cluster, from Redis (the first replica's, stored with SET NX). Redis
 * must answer at start when auth is on: a replica signing with a key of its own would issue tokens
 * the others refuse. Retried for 30 s (Redis starting with the replicas), then the start fails.
 */
async function sharedSigningKey(coordinator: RedisCoordinator): Promise<KeyObject> {
  const create = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  const until = Date.now() + 30_000;
  for (;;) {
    try {
      return createPrivateKey(await coordinator.shared('token-signing-key', create));
    } catch (err) {
      if (Date.now() > until) throw new Error(`auth with cluster: the token signing key is shared through Redis, which did not answer: ${(err as Error).message}`);
      await coordinator.connected(2_000);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/**
 * The admin endpoints' work on the serving store. `du` reads only; concurrent requests share one
 * walk of the store (a filter only selects rows: sharing is judged against every repository).
 */
function adminOperations(storage: Storage): Omit<AdminOperations, 'gc'> {
  const walks = new SingleFlight<'du', DuResult>();
  return {
    async du({ filter, signal }) {
      const all = await walks.do('du', (s) => diskUsage(storage, { signal: s }), signal);
      return filter === undefined ? all : { ...all, repositories: all.repositories.filter((r) => matchesFilter(r.upstream, r.repository, filter)) };
    },
  };
}

/**
 * Once shutdown began, a keep-alive connection is ended as soon as its response is done, and the
 * responses still to start say `Connection: close`. `server.close()` only drops the connections idle
 * at that moment: the others (docker and containerd keep theirs open) would stay until
 * keepAliveTimeout, so every drain with a download in flight would run into the deadline.
 */
function endKeepAliveWhenClosing(server: ClientServer, closing: () => boolean): void {
  server.prependListener('request', (_req, res) => {
    if (closing()) res.setHeader('Connection', 'close');
    res.once('finish', () => {
      // The connection counts as idle once Node has finished this response's bookkeeping.
      if (closing()) setImmediate(() => server.closeIdleConnections());
    });
  });
}

async function listen<S extends ClientServer>(server: S, hostPort: string): Promise<S> {
  const { host, port } = parseHostPort(hostPort)!;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

function addressUrl(server: ClientServer): string {
  const a = server.address() as AddressInfo;
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return `${server instanceof HttpsServer ? 'https' : 'http'}://${host === '0.0.0.0' ? '127.0.0.1' : host === '[::]' ? '[::1]' : host}:${a.port}`;
}

/**
 * The TLS files of config `tls`, read now and watched: each valid new pair goes to the listener
 * (`setSecureContext`: new handshakes use it, open connections keep theirs); a bad one keeps the
 * previous pair and is logged once. The served certificate's expiry is a metric (alerted on
 * 14 days ahead: deploy/prometheus/alerts.yaml).
 */
function watchTls(tls: Readonly<TlsConfig>, logger: Logger, metrics: Metrics): { files: TlsFiles; serve(server: HttpsServer): void } {
  let server: HttpsServer | undefined;
  const files = new TlsFiles({
    certificate: tls.certificate!,
    key: tls.key!,
    clientCA: tls.clientCA,
    onReload: (pair) => {
      server?.setSecureContext({ ...pair.context, minVersion: tls.minVersion });
      metrics.tlsReloaded('success', pair.notAfter);
      logger.info('TLS certificate reloaded', { subject: pair.subject, fingerprint: pair.fingerprint, expires: pair.notAfter.toISOString() });
    },
    onError: (message) => {
      metrics.tlsReloaded('failure');
      logger.error('TLS certificate not reloaded', { problem: message });
    },
  });
  const pair = files.current;
  metrics.tlsConfigured(pair.notAfter);
  logger.info('TLS certificate loaded', { subject: pair.subject, fingerprint: pair.fingerprint, expires: pair.notAfter.toISOString(), clientCertificates: tls.clientCA !== undefined });
  return {
    files,
    serve(s) {
      server = s;
      files.watch();
    },
  };
}

