import type { TagEntry } from '../storage/tag-store.js';
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
 * about the content do: the upstream is unreachable, slow, broken (5xx or an answer that isn't the
 * protocol) or rate-limiting us. A 404 or a refusal (401/403) is an answer about the content and is passed on.
 */
export function canServeStale(err: UpstreamError): boolean {
  // A 'protocol' failure (an HTML page from a captive portal or a broken proxy, a manifest that
  // doesn't parse or match its digest, a token realm we refuse) says nothing about the content:
  // the copy we hold was verified when it was stored, so it is a better answer than a 502.
  return err.kind === 'unavailable' || err.kind === 'rate-limited' || err.kind === 'protocol';
}

/** How much of a download nobody waits for any more the cache still finishes (cache.abandonedFills). */
export interface AbandonedFillBudget {
  /** Finish when at least this fraction (0–1) of the blob has arrived. */
  readonly minProgressToFinish: number;
  /** Finish when at most this many bytes are still to come. */
  readonly maxRemainingToFinish: number;
}

/**
 * Whether a blob download whose clients have all gone is finished or cancelled (issue #11, point 8).
 * Like Squid's `quick_abort_min`/`quick_abort_pct`: finishing costs the bytes still to come, so a
 * download goes on when little is left (a small blob, or one nearly done) or when most of it is
 * already paid for, and is cancelled otherwise. `size` is undefined while upstream hasn't announced
 * it: nothing is known to be cheap then, so it is cancelled unless the budget finishes everything.
 */
export function decideAbandonedFill(budget: AbandonedFillBudget, size: number | undefined, received: number): 'finish' | 'cancel' {
  const progress = size === undefined ? 0 : size === 0 ? 1 : received / size;
  const remaining = size === undefined ? Number.POSITIVE_INFINITY : size - received;
  return progress >= budget.minProgressToFinish || remaining <= budget.maxRemainingToFinish ? 'finish' : 'cancel';
}
