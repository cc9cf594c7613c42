import { timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { isDigest, type Digest } from '../domain/digest.js';
import type { FillSource } from '../cache/fill-coordinator.js';
import type { Logger } from '../lib/logger.js';

/** The header carrying the shared secret of the follow endpoint (cluster.peerSecretFile). */
export const PEER_SECRET_HEADER = 'x-hubcache-peer-secret';

const PREFIX = '/internal/fills/';

export function peerFillPath(digest: Digest): string {
  return `${PREFIX}${digest}`;
}

export interface PeerServerOptions {
  readonly source: FillSource;
  /** Required in X-Hubcache-Peer-Secret when set (403 otherwise). */
  readonly secret?: string;
  readonly logger: Logger;
}

/**
 * The internal follow endpoint (cluster.peerListen, its own listener: never the registry port).
 * One route: `GET /internal/fills/<digest>` streams the whole blob from this replica's fill in
 * flight, as its bytes arrive (the fill's reader: memory window, then spool), `Content-Length` set
 * from upstream's answer; `404` when no fill of that digest runs here (it ended: the store has it,
 * or it failed). A fill that fails mid-way destroys the connection: the follower never sees a
 * clean end of a short body. The follower verifies the digest of what it relays; this endpoint
 * serves no registry API, no stored blob and nothing else.
 */
export function createPeerServer(o: PeerServerOptions): Server {
  const secret = o.secret !== undefined ? Buffer.from(o.secret) : undefined;
  return createServer((req, res) => {
    const url = req.url ?? '';
    const digest = url.startsWith(PREFIX) ? url.slice(PREFIX.length) : '';
    if (req.method !== 'GET' || !isDigest(digest)) {
      res.writeHead(404).end();
      return;
    }
    if (secret) {
      const given = Buffer.from(String(req.headers[PEER_SECRET_HEADER] ?? ''));
      if (given.length !== secret.length || !timingSafeEqual(given, secret)) {
        res.writeHead(403).end();
        return;
      }
    }
    const gone = new AbortController();
    res.once('close', () => gone.abort());
    void (async () => {
      const fill = await o.source.followFill(digest, gone.signal);
      if (!fill) {
        if (!res.destroyed) res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(fill.size) });
      try {
        await pipeline(fill.body, res);
      } catch (err) {
        if (!gone.signal.aborted) o.logger.warn('peer follow aborted', { digest, error: (err as Error).message });
        res.destroy();
      }
    })();
  });
}
