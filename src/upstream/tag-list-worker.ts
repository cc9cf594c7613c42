/**
 * Tag-list documents → a `TagList`, off the event loop when they are big. Parsing a 16 MB tag list
 * is about a second of `JSON.parse` and sorting 1.5 M strings as much again: on the event loop
 * that second is every other request's latency. Up to `inlineMaxBytes` the work is done here (a
 * worker costs more than a small list); above, in a worker thread started for the job from
 * `buildTagList`'s own source, which hands back the packed bytes without copying them.
 */
import { Worker } from 'node:worker_threads';
import { buildTagList, TagList, type BuiltTagList } from '../domain/tag-list.js';

/** Below this many bytes of documents, the list is built on the calling thread. */
export const INLINE_MAX_BYTES = 256 * 1024;

// An eval'd worker runs CommonJS source. `__name` is the helper esbuild (tsx, in development and
// tests) puts into function bodies to keep names; compiled builds don't use it.
const WORKER_SOURCE = `
const __name = (f) => f;
const { parentPort, workerData } = require('node:worker_threads');
const buildTagList = ${buildTagList.toString()};
const built = buildTagList(workerData.pages);
parentPort.postMessage(built, built.ok ? [built.json.buffer, built.starts.buffer] : []);
`;

export interface ParsedTagList {
  readonly name: string | undefined;
  readonly tags: TagList;
  /** Entries dropped because they are not valid tags. */
  readonly dropped: number;
}

/**
 * Builds the list from `pages` (each a whole tag-list document); an error message when they are not
 * tag lists. An abort of `signal` stops the worker and rejects with the signal's reason. Pages
 * handed to a worker may be moved there: the caller must not use them afterwards.
 */
export async function parseTagLists(pages: readonly Uint8Array[], opts: { signal?: AbortSignal; inlineMaxBytes?: number } = {}): Promise<ParsedTagList | { error: string }> {
  opts.signal?.throwIfAborted();
  const bytes = pages.reduce((n, p) => n + p.byteLength, 0);
  const built = bytes <= (opts.inlineMaxBytes ?? INLINE_MAX_BYTES) ? buildTagList(pages) : await inWorker(pages, opts.signal);
  if (!built.ok) return { error: built.error };
  return { name: built.name, tags: TagList.packed(built.json, built.starts), dropped: built.dropped };
}

function inWorker(pages: readonly Uint8Array[], signal: AbortSignal | undefined): Promise<BuiltTagList> {
  // A page with an ArrayBuffer of its own moves to the worker without a copy; one sharing Node's
  // Buffer pool is copied first (transferring it would take the pool away from everyone else).
  const moved = pages.map((p) => (p.byteOffset === 0 && p.byteLength === p.buffer.byteLength && p.buffer instanceof ArrayBuffer ? p : new Uint8Array(p)));
  const transferList = moved.map((p) => p.buffer as ArrayBuffer);
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { pages: moved }, transferList, execArgv: [], stdout: false, stderr: false });
  return new Promise<BuiltTagList>((resolve, reject) => {
    const onAbort = () => {
      reject(signal!.reason);
      void worker.terminate();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const settle = () => signal?.removeEventListener('abort', onAbort);
    worker.once('message', (built: BuiltTagList) => {
      settle();
      resolve(built);
    });
    worker.once('error', (err) => {
      settle();
      reject(err);
    });
    worker.once('exit', (code) => {
      settle();
      reject(new Error(`tag list worker exited with ${code} before answering`));
    });
  });
}
