import { setTimeout as delay } from 'node:timers/promises';

export interface RetryOptions {
  /** Total attempts, including the first (1 = no retry). */
  readonly attempts: number;
  /** Delay before the first retry; doubles per retry, with jitter. */
  readonly baseDelayMs: number;
  /** Upper bound of one delay. Default 10 s. */
  readonly maxDelayMs?: number;
  /** Whether an error is worth another attempt; errors it refuses are thrown at once. */
  readonly shouldRetry: (err: unknown, attempt: number) => boolean;
  /** Aborting stops the loop: no further attempt, and a pending delay rejects at once. */
  readonly signal?: AbortSignal;
  /** Called before waiting for the next attempt (metrics, logs). */
  readonly onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /** Injected in tests so they never wait. */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly random?: () => number;
}

const defaultSleep = (ms: number, signal?: AbortSignal): Promise<void> => delay(ms, undefined, { signal });

/**
 * The delay before retry number `retry` (1-based): exponential backoff with "full jitter"
 * (AWS Architecture Blog, "Exponential Backoff And Jitter"), so that many clients failing at the
 * same moment don't retry in lockstep.
 */
export function backoffDelay(retry: number, baseDelayMs: number, maxDelayMs: number, random: () => number): number {
  const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** (retry - 1));
  return Math.round(ceiling * random());
}

/**
 * Runs `fn` until it succeeds, `shouldRetry` refuses the error, or `attempts` are used up; the last
 * error is thrown. Generic and free of HTTP knowledge (like spegel's internal/resilient): callers
 * decide what is retryable (only idempotent requests, never a 429 — docs/architecture.md#the-upstream-client).
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const sleep = opts.sleep ?? defaultSleep;
  const random = opts.random ?? Math.random;
  const attempts = Math.max(1, Math.floor(opts.attempts));
  for (let attempt = 1; ; attempt++) {
    opts.signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (err) {
      // An aborted caller gets the abort reason, whatever the attempt failed with.
      opts.signal?.throwIfAborted();
      if (attempt >= attempts || !opts.shouldRetry(err, attempt)) throw err;
      const ms = backoffDelay(attempt, opts.baseDelayMs, opts.maxDelayMs ?? 10_000, random);
      opts.onRetry?.(err, attempt, ms);
      await sleep(ms, opts.signal);
    }
  }
}
