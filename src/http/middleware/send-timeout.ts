import type { NextFunction, Request, Response } from 'express';
import type { Metrics } from '../../observability/metrics.js';

/**
 * The send timeout (issue #11, point 7): a response with bytes waiting for the client that makes
 * no progress for `timeoutMs` is destroyed, which ends whatever feeds it (a stored blob's reads,
 * whose buffers go back to the pool; a follower of a download in flight) and frees the connection.
 *
 * It rides on the socket's inactivity timeout, which every read and every write's progress resets
 * (Node's net.Socket also counts a partly written chunk that moved as activity). When it fires
 * with nothing waiting to be sent, hubcache is the slow side — waiting for an upstream, or a
 * download in flight that has nothing new yet — and the connection is kept; the timer starts again
 * with the next write. So a download may take any time as long as it moves.
 */
export function sendTimeout(opts: { timeoutMs: number; metrics: Metrics }) {
  return (req: Request, res: Response, next: NextFunction): void => {
    res.setTimeout(opts.timeoutMs, () => {
      const socket = res.socket;
      if (!socket || socket.destroyed) return;
      const waiting = socket.writableLength;
      if (waiting === 0) {
        req.ctx.log.debug('client connection quiet with nothing to send: kept open', { timeoutMs: opts.timeoutMs });
        return;
      }
      opts.metrics.clientTimedOut('send');
      req.ctx.log.warn('send timeout: the client stopped reading, response aborted', { timeoutMs: opts.timeoutMs, waitingBytes: waiting, sentBytes: socket.bytesWritten - waiting });
      res.destroy(new Error(`send timeout: no progress for ${opts.timeoutMs} ms`));
    });
    next();
  };
}
