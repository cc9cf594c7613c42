import type { Logger } from '../lib/logger.js';
import type { UpstreamObserver } from '../upstream/upstream.js';
import type { Metrics } from './metrics.js';

/**
 * The upstream client's hooks, turned into metrics and log events. `docker-ratelimit-source` (an IP
 * address or an account id) is not a closed set, so it never becomes a label: it goes to the
 * `rate limit seen` event, logged at info when an upstream reports it for the first time or it
 * changes (e.g. a new egress address), at debug otherwise.
 */
export function upstreamObserver(metrics: Metrics, logger: Logger, upstream: string): UpstreamObserver {
  metrics.upstreamConfigured(upstream);
  const lastSource = new Map<string, string | undefined>();
  return {
    request: (e) => {
      metrics.upstreamRequest(e.upstream, e.kind, e.method, e.status, e.seconds);
      if (e.status === 429) logger.warn('upstream rate limited', { upstream: e.upstream, kind: e.kind, method: e.method });
    },
    rateLimit: (u, snap) => {
      metrics.rateLimit(u, snap.limit, snap.remaining);
      const changed = !lastSource.has(u) || lastSource.get(u) !== snap.source;
      lastSource.set(u, snap.source);
      const fields = { upstream: u, limit: snap.limit, remaining: snap.remaining, windowSeconds: snap.windowSeconds, source: snap.source };
      logger.log(changed ? 'info' : 'debug', 'rate limit seen', fields);
    },
    tokenFetched: (u, ok) => {
      metrics.tokenFetched(u, ok);
      logger.log(ok ? 'debug' : 'warn', 'token fetched', { upstream: u, ok });
    },
    retry: (u, kind, reason) => {
      metrics.upstreamRetry(u, kind);
      logger.info('upstream retry', { upstream: u, kind, error: reason });
    },
    heldOff: (u) => metrics.upstreamHeldOff(u),
    tagsDropped: (u, repository, count) => logger.warn('tag list entries dropped', { upstream: u, repository, count, why: 'not valid tags' }),
  };
}
