import express, { type Request, type Response, type Router } from 'express';
import type { PassOptions, PassReport } from '../cache/evictor.js';
import type { Logger } from '../lib/logger.js';

export interface AdminOptions {
  /** One retention and eviction pass now (`Evictor.run({ mode: 'gc' })`). */
  readonly gc: (opts: PassOptions) => Promise<PassReport>;
  readonly logger: Logger;
}

/**
 * Operator endpoints, mounted on the METRICS listener only (metrics.listen; never the registry
 * port, so registry clients can't reach them):
 *
 * - `POST /admin/gc[?dryRun=1]`: runs one retention and eviction pass now (`hubcache gc --server`)
 *   and answers its report as JSON (`PassReport`: `removed` items with kind, reason, digest or
 *   tag, bytes, last access). A pass already running is waited for first.
 */
export function adminRouter(opts: AdminOptions): Router {
  const router = express.Router();
  router.post('/admin/gc', async (req: Request, res: Response) => {
    const dryRun = isTrue(req.query.dryRun);
    try {
      const report = await opts.gc({ dryRun });
      res.json(report);
    } catch (err) {
      opts.logger.error('admin gc failed', { error: (err as Error).message });
      res.status(500).json({ error: (err as Error).message });
    }
  });
  router.all('/admin/gc', (_req, res) => {
    res.setHeader('Allow', 'POST');
    res.status(405).json({ error: 'use POST' });
  });
  return router;
}

function isTrue(v: unknown): boolean {
  return typeof v === 'string' && /^(1|true|yes)$/i.test(v);
}
