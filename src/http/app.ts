import express, { type NextFunction, type Request, type Response } from 'express';
import type { RegistryReader } from '../cache/registry-reader.js';
import { RegistryError } from '../domain/errors.js';
import type { Logger } from '../lib/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { actionFor, type AuthGuard } from './auth/guard.js';
import { tokenEndpoint } from './auth/token-endpoint.js';
import { serveBlob } from './handlers/blobs.js';
import { serveManifest } from './handlers/manifests.js';
import { serveTags } from './handlers/tags.js';
import { antiLoop } from './middleware/anti-loop.js';
import { errorHandler } from './middleware/error-handler.js';
import { noSniff } from './middleware/no-sniff.js';
import { requestContext } from './middleware/request-context.js';
import { sendTimeout } from './middleware/send-timeout.js';
import { parseRegistryRequest } from './parse-request.js';
import { resolveRepo, type RepoResolverOptions } from './resolve-repo.js';

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
   * Authentication and authorization (config `auth`): every registry request is checked for its
   * repository and action before anything else, and `/auth/token` is served. Absent: no auth.
   */
  readonly auth?: AuthGuard;
}

/** The HTTP front: parses requests into typed values, calls the reader, writes the answer. No cache logic here. */
export function createApp(opts: AppOptions): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('query parser', 'simple');
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
      // Before anything else about the repository (routing to an upstream, the store): a refused
      // request changes nothing and tells nothing. The name is checked as the client sent it.
      await opts.auth?.authorize(req, request.name, actionFor(req.method));
      if (request.route === 'upload') throw new RegistryError('UNSUPPORTED', undefined, { message: 'this registry is a read-only mirror: push is not supported' });
      if (request.route === 'referrers') throw new RegistryError('NOT_FOUND', undefined, { message: 'the referrers API is not supported by this mirror' });
      if (req.method !== 'GET' && (req.method !== 'HEAD' || request.route === 'tags')) {
        throw new RegistryError('UNSUPPORTED', { method: req.method }, { message: `${req.method} is not supported on ${request.route}` });
      }
      const key = resolveRepo(opts.resolver, request.name, query.get('ns'));
      req.ctx.upstream = key.upstream;
      switch (request.route) {
        case 'manifest':
          // Neither a tag nor a digest: no manifest has that name (see UnknownReference).
          if (request.ref.kind === 'unknown') throw new RegistryError('MANIFEST_UNKNOWN', { reference: request.ref.reference });
          return await serveManifest(opts.reader, key, request.ref, req, res);
        case 'blob':
          return await serveBlob(opts.reader, opts.metrics, key, request.digest, req, res);
        case 'tags':
          return await serveTags(opts.reader, key, { name: request.name, ns: query.get('ns') }, { n: request.n, last: request.last }, req, res);
      }
    } catch (err) {
      next(err);
    }
  });

  app.use((req: Request, _res: Response, next: NextFunction) => next(new RegistryError('NOT_FOUND', { path: req.path.slice(0, 200) })));
  app.use(errorHandler());
  return app;
}

export function metricsHandler(metrics: Metrics) {
  return async (req: Request, res: Response) => {
    if (req.ctx) req.ctx.route = 'metrics';
    res.setHeader('Content-Type', metrics.registry.contentType);
    res.end(await metrics.registry.metrics());
  };
}
