import { finished } from 'node:stream';
import express, { type NextFunction, type Request, type Response } from 'express';
import { RegistryError } from '../domain/errors.js';
import type { HostedRegistry } from '../hosted/hosted-registry.js';
import type { Logger } from '../lib/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { closeUnlessBodyRead } from './client-server.js';
import { serveUpload } from './handlers/push.js';
import { errorHandler } from './middleware/error-handler.js';
import { noSniff } from './middleware/no-sniff.js';
import { requestContext } from './middleware/request-context.js';
import { parseRegistryRequest } from './parse-request.js';
import { routeRepo, type RepoResolverOptions } from './resolve-repo.js';

export interface PeerUploadsOptions {
  readonly hosted: HostedRegistry;
  readonly resolver: RepoResolverOptions;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** A session asked for here that this replica doesn't hold: its shared record, if it names this replica, goes. */
  readonly lost?: (id: string) => Promise<void>;
}

/**
 * The owner's side of an upload passed on by another replica (issue #15): `/v2/<name>/blobs/uploads/<uuid>`
 * requests (`PATCH`, `PUT`, `GET`, `DELETE`) arriving on the follow endpoint (`cluster.peerListen`,
 * behind the peer secret: cluster/peer-server.ts strips its `/internal/uploads` prefix). The client
 * was authenticated and authorized by the replica it reached; here nothing is asked of it — the
 * request is served by the same handler as on the registry port (`serveUpload`), so statuses,
 * headers and OCI error bodies are the same, and is never passed on again.
 */
export function createPeerUploadsApp(o: PeerUploadsOptions): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('query parser', 'simple');
  app.use(noSniff());
  app.use(requestContext({ logger: o.logger, metrics: o.metrics, quietRoutes: new Set() }));
  app.use('/v2', async (req: Request, res: Response, next: NextFunction) => {
    res.setHeader('Docker-Distribution-Api-Version', 'registry/2.0');
    // A chunk refused before its body was read (out of order): the connection can't be reused.
    closeUnlessBodyRead(req, res);
    try {
      const { request, query } = parseRegistryRequest(req.originalUrl);
      req.ctx.route = 'peer_upload';
      if (request.route !== 'upload' || request.session === undefined) throw new RegistryError('NOT_FOUND', { path: req.path.slice(0, 200) });
      const route = routeRepo(o.resolver, request.name, query.get('ns'));
      req.ctx.upstream = route.key.upstream;
      if (route.kind !== 'hosted' || !o.hosted.holdsUpload(request.session)) {
        if (route.kind === 'hosted') await o.lost?.(request.session);
        throw new RegistryError('BLOB_UPLOAD_UNKNOWN', { uuid: request.session.slice(0, 100) });
      }
      await serveUpload({ hosted: o.hosted, key: route.key, name: request.name, maxManifestBytes: 0 }, request.session, query, req, res);
    } catch (err) {
      next(err);
    }
  });
  app.use((req: Request, _res: Response, next: NextFunction) => next(new RegistryError('NOT_FOUND', { path: req.path.slice(0, 200) })));
  const answer = errorHandler();
  app.use((err: unknown, req: Request, res: Response, next: NextFunction) => {
    // Refused before its body was read (a chunk out of order): the body is read to its end first.
    // The replica passing it on streams it and would take an answer before its end, then a
    // closed connection, as the owner gone; read here, the answer reaches the client intact.
    if (req.complete || req.destroyed || res.headersSent) return answer(err, req, res, next);
    req.resume();
    finished(req, () => answer(err, req, res, next));
  });
  return app;
}
