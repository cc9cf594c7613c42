import type { TagEntry } from '../storage/manifest-store.js';
import type { UpstreamError } from '../upstream/upstream.js';

/**
 * Pure cache decisions (no I/O), unit-tested with plain numbers for time.
 * Digests never come here: content addressed by digest is immutable and always served locally.
 */
export type TagDecision = 'serve-local' | 'revalidate' | 'fetch';

export function decideTag(entry: TagEntry | undefined, now: number, ttlMs: number): TagDecision {
  if (!entry) return 'fetch';
  return now - entry.validatedAt < ttlMs ? 'serve-local' : 'revalidate';
}

/**
 * Whether a failed upstream call may be answered from the cache. Only failures that say nothing
 * about the content do: the upstream is unreachable, slow, broken (5xx) or rate-limiting us.
 * A 404 or a refusal (401/403) is an answer about the content and is passed on.
 */
export function canServeStale(err: UpstreamError): boolean {
  return err.kind === 'unavailable' || err.kind === 'rate-limited';
}
