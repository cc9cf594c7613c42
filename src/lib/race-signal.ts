/**
 * Waiting for shared work with a signal of one's own: used where several callers share one promise
 * (a token request, an upstream call behind a concurrency limit) and one of them may give up.
 */

/** Waits for `p` unless `signal` aborts first (the shared work itself goes on for other waiters). */
export function raceSignal<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) {
      p.catch(() => {}); // nobody else may be waiting for it
      return onAbort();
    }
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => (signal.removeEventListener('abort', onAbort), resolve(v)),
      (e: unknown) => (signal.removeEventListener('abort', onAbort), reject(e)),
    );
  });
}
