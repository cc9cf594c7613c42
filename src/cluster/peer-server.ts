import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { finished } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isDigest, type Digest } from '../domain/digest.js';
import type { FillSource } from '../cache/fill-coordinator.js';
import type { Logger } from '../lib/logger.js';

/** The header carrying the shared secret of the follow endpoint (cluster.peerSecretFile). */
export const PEER_SECRET_HEADER = 'x-hubcache-peer-secret';

const PREFIX = '/internal/fills/';
/** Requests for an upload session this replica holds, passed on by another replica: `<prefix>/v2/<name>/blobs/uploads/<uuid>`. */
export const PEER_UPLOADS_PREFIX = '/internal/uploads';

export function peerFillPath(digest: Digest): string {
  return `${PREFIX}${digest}`;
}

export interface PeerServerOptions {
  readonly source: FillSource;
  /** Required in X-Hubcache-Peer-Secret when set (403 otherwise). */
  readonly secret?: string;
  readonly logger: Logger;
  /**
   * Serves `/internal/uploads/v2/<name>/blobs/uploads/<uuid>` (http/peer-uploads.ts): the upload
   * sessions this replica holds, for requests another replica received, authorized and passed on.
   * Absent: 404 there too.
   */
  readonly uploads?: (req: IncomingMessage, res: ServerResponse) => void;
}

/**
 * The internal follow endpoint (cluster.peerListen, its own listener: never the registry port).
 * One route: `GET /internal/fills/<digest>` streams the whole blob from this replica's fill in
 * flight, as its bytes arrive (the fill's reader: memory window, then spool), `Content-Length` set
 * from upstream's answer; `404` when no fill of that digest runs here (it ended: the store has it,
 * or it failed). A fill that fails mid-way destroys the connection: the follower never sees a
 * clean end of a short body. The follower verifies the digest of what it relays; this endpoint
 * serves no registry API, no stored blob and nothing else — but for `uploads`: requests for upload
 * sessions held here, from the replica a client sent them to (behind the same secret).
 */
export function createPeerServer(o: PeerServerOptions): Server {
  const secret = o.secret !== undefined ? Buffer.from(o.secret) : undefined;
  const server = createServer((req, res) => {
    const url = req.url ?? '';
    const upload = o.uploads !== undefined && url.startsWith(`${PEER_UPLOADS_PREFIX}/v2/`);
    const digest = url.startsWith(PREFIX) ? url.slice(PREFIX.length) : '';
    if (!upload && (req.method !== 'GET' || !isDigest(digest))) {
      res.writeHead(404).end();
      return;
    }
    if (secret) {
      const given = Buffer.from(String(req.headers[PEER_SECRET_HEADER] ?? ''));
      if (given.length !== secret.length || !timingSafeEqual(given, secret)) {
        // The body is read (and dropped) first: a replica passing an upload on streams it and would
        // take an answer before its end, then a closed connection, for a dead peer.
        req.resume();
        finished(req, () => res.writeHead(403).end());
        return;
      }
    }
    if (upload) {
      req.url = url.slice(PEER_UPLOADS_PREFIX.length);
      o.uploads!(req, res);
      return;
    }
    const gone = new AbortController();
    res.once('close', () => gone.abort());
    void (async () => {
      const fill = await o.source.followFill(digest as Digest, gone.signal);
      if (!fill) {
        if (!res.destroyed) res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(fill.size) });
      try {
        const { body } = fill;
        if (body.writeTo) {
          // The fill reader's fast path (corked batches per wake-up, as for this replica's own
          // clients), not one socket write per upstream chunk through the stream.
          res.flushHeaders();
          await body.writeTo(res);
          res.end();
        } else await pipeline(body, res);
      } catch (err) {
        if (!gone.signal.aborted) o.logger.warn('peer follow aborted', { digest, error: (err as Error).message });
        res.destroy();
      }
    })();
  });
  // A forwarded upload chunk takes as long as its client takes to send it (Node's default
  // requestTimeout would cut it at 5 minutes): the receiving replica's own timeouts govern it.
  server.requestTimeout = 0;
  return server;
}
