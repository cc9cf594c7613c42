import express, { type NextFunction, type Request, type Response } from 'express';
import type { PassOptions, PassReport } from '../cache/evictor.js';
import type { DuResult } from '../commands/du.js';
import { RegistryError } from '../domain/errors.js';
import type { Logger } from '../lib/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { errorHandler } from './middleware/error-handler.js';
import { requestContext } from './middleware/request-context.js';

/**
 * What the admin endpoints do; the composition root (server.ts) binds them to the store. An
 * operation that a signal aborts rejects with the signal's reason (the client went away).
 */
export interface AdminOperations {
  /** `hubcache du` on the serving store: what is stored, by upstream and repository. */
  du(opts: { filter?: string; signal: AbortSignal }): Promise<DuResult>;
  /** `hubcache gc`: one retention and eviction pass now (`Evictor.run({ mode: 'gc' })`). */
  gc(opts: PassOptions): Promise<PassReport>;
}

export interface AdminOptions {
  readonly operations: AdminOperations;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/**
 * The operator's endpoints, mounted at `/admin` on the METRICS listener only (server.ts): the
 * registry port is what clients reach, and they must not be able to walk the store or trigger its
 * maintenance. Answers JSON; errors are the OCI error body (`{"errors":[…]}`, docs/errors.md), with
 * a request id (`X-Request-Id`) and an access log line like the registry's requests.
 *
 *   GET /admin/du[?repository=PREFIX]   the DuResult of `hubcache du --json`
 *   POST /admin/gc[?dryRun=1]           one retention and eviction pass now (`hubcache gc --server`):
 *                                       its report (`PassReport`); a pass already running is waited for first
 */
export function adminRouter(opts: AdminOptions): express.Router {
  const router = express.Router();
  router.use(requestContext({ logger: opts.logger, metrics: opts.metrics, quietRoutes: new Set() }));
  router.get('/du', async (req: Request, res: Response, next: NextFunction) => {
    req.ctx.route = 'admin_du';
    try {
      const repository = req.query.repository;
      if (repository !== undefined && (typeof repository !== 'string' || repository.length === 0 || repository.length > 512)) {
        throw new RegistryError('NAME_INVALID', undefined, { message: 'repository: one non-empty prefix of a repository name' });
      }
      const result = await opts.operations.du({ filter: repository, signal: req.ctx.signal });
      res.json(result);
    } catch (err) {
      next(err);
    }
  });
  router.post('/gc', async (req: Request, res: Response, next: NextFunction) => {
    req.ctx.route = 'admin_gc';
    try {
      res.json(await opts.operations.gc({ dryRun: isTrue(req.query.dryRun) }));
    } catch (err) {
      next(err);
    }
  });
  router.use((req: Request, _res: Response, next: NextFunction) => {
    req.ctx.route = 'admin';
    next(new RegistryError('NOT_FOUND', { path: req.originalUrl.slice(0, 200) }, { message: 'no such admin endpoint' }));
  });
  router.use(errorHandler());
  return router;
}

function isTrue(v: unknown): boolean {
  return typeof v === 'string' && /^(1|true|yes)$/i.test(v);
}
