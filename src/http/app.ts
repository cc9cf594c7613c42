import express, { type NextFunction, type Request, type Response } from 'express';
import type { RegistryReader } from '../cache/registry-reader.js';
import { RegistryError } from '../domain/errors.js';
import type { Logger } from '../lib/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { actionFor, type AuthGuard } from './auth/guard.js';
import { tokenEndpoint } from './auth/token-endpoint.js';
import { serveBlob } from './handlers/blobs.js';
import { serveManifest } from './handlers/manifests.js';
import { deleteContent, putManifest, serveReferrers, serveUpload, type PushContext, type UploadForwarding } from './handlers/push.js';
import { serveTags } from './handlers/tags.js';
import { ROUTE_ACTIONS, routeAction } from './access.js';
import { fallThroughReader } from '../hosted/fall-through.js';
import type { HostedRegistry } from '../hosted/hosted-registry.js';
import { antiLoop } from './middleware/anti-loop.js';
import { errorHandler } from './middleware/error-handler.js';
import { noSniff } from './middleware/no-sniff.js';
import { requestContext } from './middleware/request-context.js';
import { sendTimeout } from './middleware/send-timeout.js';
import { parseRegistryRequest } from './parse-request.js';
import { routeRepo, type RepoResolverOptions, type RepoRoute } from './resolve-repo.js';

export interface AppOptions {
  readonly reader: RegistryReader;
  readonly resolver: RepoResolverOptions;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly instanceId: string;
  /**
   * Readiness checks (config loaded, store readable, not shutting down); never upstream
   * reachability. `degraded` checks (store writable) don't fail readiness: they turn the status
   * into `degraded` (the only replica stays in its Service while it can serve cached content).
   */
  readonly readiness: () => Promise<{ checks: Record<string, boolean>; degraded?: Record<string, boolean> }>;
  /** Serve /metrics on this app (false when it has its own listener). */
  readonly serveMetrics: boolean;
  /** server.sendTimeout: a response the client stops reading for this long is aborted (ms). */
  readonly sendTimeoutMs: number;
  /**
   * The hosted repositories (`resolver.hosted` routes names to it). Without it every name is
   * pulled through and pushes are refused.
   */
  readonly hosted?: HostedRegistry;
  /** The largest manifest a client may push (upstreamClient.maxManifestSize). Default 4 MiB. */
  readonly maxManifestBytes?: number;
  /**
   * Authentication and authorization (config `auth`): every registry request is checked for its
   * repository and action before anything else, and `/auth/token` is served. Absent: no auth.
   */
  readonly auth?: AuthGuard;
  /**
   * `server.trustedProxies`: CIDR ranges whose `X-Forwarded-For`/`-Proto`/`-Host` are believed
   * (express's `trust proxy`). Empty or absent: none is.
   */
  readonly trustedProxies?: readonly string[];
  /**
   * Several replicas (issue #15): where requests for upload sessions held by another replica go,
   * once authorized here (cluster/upload-forwarder.ts). Absent: such a session is unknown.
   */
  readonly uploadsElsewhere?: UploadForwarding;
}

/** The HTTP front: parses requests into typed values, calls the reader, writes the answer. No cache logic here. */
export function createApp(opts: AppOptions): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('query parser', 'simple');
  // Forwarded headers only from the proxies named: anyone else could claim any address or scheme.
  app.set('trust proxy', opts.trustedProxies && opts.trustedProxies.length > 0 ? [...opts.trustedProxies] : false);
  app.use(noSniff());
  app.use(requestContext({ logger: opts.logger, metrics: opts.metrics, quietRoutes: new Set(['healthz', 'readyz', 'metrics']) }));
  app.use(sendTimeout({ timeoutMs: opts.sendTimeoutMs, metrics: opts.metrics }));

  app.get('/healthz', (req, res) => {
    req.ctx.route = 'healthz';
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (req, res) => {
    req.ctx.route = 'readyz';
    const { checks: required, degraded = {} } = await opts.readiness();
    const ready = Object.values(required).every(Boolean);
    const whole = Object.values(degraded).every(Boolean);
    res.status(ready ? 200 : 503).json({ status: !ready ? 'not ready' : whole ? 'ready' : 'degraded', checks: { ...required, ...degraded } });
  });
  if (opts.serveMetrics) app.get('/metrics', metricsHandler(opts.metrics));
  if (opts.auth) app.use(tokenEndpoint(opts.auth));

  app.use('/v2', antiLoop(opts.instanceId), async (req: Request, res: Response, next: NextFunction) => {
    res.setHeader('Docker-Distribution-Api-Version', 'registry/2.0');
    try {
      const { request, query } = parseRegistryRequest(req.originalUrl);
      req.ctx.route = request.route;
      if (request.route === 'base') {
        if (req.method !== 'GET' && req.method !== 'HEAD') throw new RegistryError('UNSUPPORTED', { method: req.method });
        await opts.auth?.authorizeBase(req);
        res.status(200).json({});
        return;
      }
      // Authorization before anything else about the repository (routing to an upstream, the store):
      // a refused request changes nothing and tells nothing. The name is checked as the client sent
      // it; the action comes from the route table (http/access.ts: an upload's status GET is push).
      const action = ROUTE_ACTIONS[request.route][req.method] ?? actionFor(req.method);
      await opts.auth?.authorize(req, request.name, action);
      routeAction(request.route, req.method);
      const route = routeRepo(opts.resolver, request.name, query.get('ns'));
      req.ctx.upstream = route.key.upstream;
      const mountFrom = request.route === 'upload' && req.method === 'POST' && query.get('mount') !== null ? query.get('from') : null;
      if (mountFrom !== null) {
        // A mount reads its `from`: one the client may not pull (or that names nothing routable)
        // mounts nothing, and the client gets a normal upload, as the spec says.
        const allowed = tryRoute(opts.resolver, mountFrom, query.get('ns')) !== undefined && (await opts.auth?.authorize(req, mountFrom, 'pull').then(() => true, () => false) ?? true);
        if (!allowed) query.delete('mount');
      }
      if (action !== 'pull' && route.kind !== 'hosted') throw notHosted(request.name, action);
      if (route.kind === 'hosted' && !opts.hosted) throw new Error('a hosted route without a hosted registry');
      const push: PushContext | undefined =
        route.kind === 'hosted'
          ? { hosted: opts.hosted!, key: route.key, name: request.name, maxManifestBytes: opts.maxManifestBytes ?? 4 * 1024 * 1024, ...(opts.uploadsElsewhere ? { uploadsElsewhere: opts.uploadsElsewhere } : {}) }
          : undefined;
      const reader = readerFor(opts, route);
      const key = route.key;
      switch (request.route) {
        case 'manifest':
          if (push && req.method === 'PUT') {
            if (request.ref.kind === 'unknown') throw new RegistryError('TAG_INVALID', { tag: request.ref.reference }, { message: 'invalid tag' });
            return await putManifest(push, request.ref, req, res);
          }
          // Neither a tag nor a digest: no manifest has that name (see UnknownReference).
          if (request.ref.kind === 'unknown') throw new RegistryError('MANIFEST_UNKNOWN', { reference: request.ref.reference });
          if (push && req.method === 'DELETE') return await deleteContent(push, { manifest: request.ref }, res);
          return await serveManifest(reader, key, request.ref, req, res);
        case 'blob':
          if (push && req.method === 'DELETE') return await deleteContent(push, { blob: request.digest }, res);
          return await serveBlob(reader, opts.metrics, key, request.digest, req, res);
        case 'tags':
          return await serveTags(reader, key, { name: request.name, ns: query.get('ns') }, { n: request.n, last: request.last }, req, res);
        case 'upload':
          return await serveUpload(push!, request.session, query, req, res);
        case 'referrers':
          if (!push) throw new RegistryError('NOT_FOUND', undefined, { message: 'the referrers API is not supported for mirrored repositories (only for hosted ones, hosted.repositories)' });
          return await serveReferrers(push, request.digest, query, res);
      }
    } catch (err) {
      next(err);
    }
  });

  app.use((req: Request, _res: Response, next: NextFunction) => next(new RegistryError('NOT_FOUND', { path: req.path.slice(0, 200) })));
  app.use(errorHandler());
  return app;
}

/** Reads of a route: the hosted registry (falling through to the pull-through cache when the pattern says so) or the cache. */
function readerFor(opts: AppOptions, route: RepoRoute): RegistryReader {
  if (route.kind === 'proxy') return opts.reader;
  return route.fallThrough ? fallThroughReader(opts.hosted!, opts.reader, route.fallThrough) : opts.hosted!;
}

function tryRoute(resolver: RepoResolverOptions, name: string, ns: string | null): RepoRoute | undefined {
  try {
    return routeRepo(resolver, name, ns);
  } catch {
    return undefined;
  }
}

/** A push or delete to a name no `hosted.repositories` pattern covers: refused, naming the setting. */
function notHosted(name: string, action: string): RegistryError {
  if (action === 'delete') return new RegistryError('UNSUPPORTED', { repository: name.slice(0, 255), action }, { message: 'content pulled through from an upstream cannot be deleted' });
  return new RegistryError('DENIED', { repository: name.slice(0, 255), action }, {
    message: `${name.slice(0, 255)} is not a hosted repository: only names matching hosted.repositories can be pushed to; everything else is pulled through from the upstreams`,
  });
}

export function metricsHandler(metrics: Metrics) {
  return async (req: Request, res: Response) => {
    if (req.ctx) req.ctx.route = 'metrics';
    res.setHeader('Content-Type', metrics.registry.contentType);
    res.end(await metrics.registry.metrics());
  };
}
