import { Readable } from 'node:stream';
import type { BlobStore } from '../blob-store.js';
import type { ManifestStore, MetadataStore } from '../manifest-store.js';
import type { StorageFaultErrno } from '../storage-fault.js';

/** Node's (negative) errno numbers on Linux, so an injected error looks like the real one. */
const ERRNO_NUMBERS: Record<StorageFaultErrno, number> = { ENOSPC: -28, EDQUOT: -122, EROFS: -30, EIO: -5, EACCES: -13 };

/** An error shaped like the one `node:fs` throws for `errno` (code, errno, syscall, path). */
export function storageErrnoError(errno: StorageFaultErrno, syscall: string, path = '/injected/store'): NodeJS.ErrnoException {
  return Object.assign(new Error(`${errno}: injected storage fault, ${syscall} '${path}'`), { code: errno, errno: ERRNO_NUMBERS[errno], syscall, path });
}

/**
 * The operations a fault can be injected into: the store methods by `<store>.<method>`
 * (`blobs.create`, `manifests.put`, `metadata.setTag`, …), the methods of the blob writers
 * `blobs.create()` returns by `writer.<method>` (`writer.write`, `writer.commit`, …), and
 * `body.read`: the stream `blobs.open()` returned fails after `afterBytes` (see `failBody`).
 */
export type FaultPoint = `${'blobs' | 'manifests' | 'metadata' | 'writer' | 'body'}.${string}`;

/**
 * Storage fault injection, in the style of a flaky store: decorates real stores (memory or fs) so
 * that chosen operations fail with a chosen errno (ENOSPC, EDQUOT, EROFS, EIO, EACCES), for the
 * next `times` calls or until `heal()`. Every other call goes to the inner store unchanged.
 * A Proxy rather than hand-written classes: it follows the store interfaces as they change.
 */
export class StorageFaults {
  readonly #plans = new Map<FaultPoint, { errno: StorageFaultErrno; times: number }>();
  /** Faults injected so far, by point. */
  readonly injected = new Map<FaultPoint, number>();

  /** `point` fails with `errno` for the next `times` calls (default: until `heal`). */
  fail(point: FaultPoint, errno: StorageFaultErrno, times = Infinity): this {
    this.#plans.set(point, { errno, times });
    return this;
  }

  /**
   * The next `times` blob bodies opened (`blobs.open`) fail with `errno` once `afterBytes` of
   * them were read: a disk that fails under a response already started. Such a body is a plain
   * stream (the store's faster `writeTo` is not offered).
   */
  failBody(errno: StorageFaultErrno, afterBytes: number, times = Infinity): this {
    this.#bodyAfter = afterBytes;
    return this.fail('body.read', errno, times);
  }
  #bodyAfter = 0;

  /** Every operation works again (space came back). */
  heal(): void {
    this.#plans.clear();
  }

  blobs<T extends BlobStore>(store: T): T {
    return this.#wrap(store, 'blobs');
  }

  manifests<T extends ManifestStore>(store: T): T {
    return this.#wrap(store, 'manifests');
  }

  metadata<T extends MetadataStore>(store: T): T {
    return this.#wrap(store, 'metadata');
  }

  /** The injected error for this call, if one is planned (counting it down). */
  #take(point: FaultPoint): NodeJS.ErrnoException | undefined {
    const plan = this.#plans.get(point);
    if (!plan || plan.times <= 0) return undefined;
    plan.times--;
    this.injected.set(point, (this.injected.get(point) ?? 0) + 1);
    return storageErrnoError(plan.errno, point.split('.')[1]!);
  }

  #wrap<T extends object>(target: T, prefix: 'blobs' | 'manifests' | 'metadata' | 'writer'): T {
    return new Proxy(target, {
      get: (t, prop) => {
        const value = Reflect.get(t, prop, t) as unknown;
        if (typeof value !== 'function' || typeof prop !== 'string') return value;
        const point = `${prefix}.${prop}` as FaultPoint;
        return (...args: unknown[]) => {
          const fault = this.#take(point);
          if (fault) return Promise.reject(fault);
          const out = (value as (...a: unknown[]) => unknown).apply(t, args);
          if (prefix === 'blobs' && prop === 'create') return (out as Promise<object>).then((w) => this.#wrap(w, 'writer'));
          if (prefix === 'blobs' && prop === 'open') {
            return (out as Promise<Readable>).then((body) => {
              const fault = this.#take('body.read');
              return fault ? Readable.from(failAfter(body, this.#bodyAfter, fault), { objectMode: false }) : body;
            });
          }
          return out;
        };
      },
    });
  }
}

/** The bytes of `body` up to `n`, then `fault` (the body is destroyed either way). */
async function* failAfter(body: Readable, n: number, fault: Error): AsyncGenerator<Buffer> {
  let left = n;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      if (chunk.length >= left) {
        if (left > 0) yield chunk.subarray(0, left);
        break;
      }
      left -= chunk.length;
      yield chunk;
    }
    throw fault;
  } finally {
    body.destroy();
  }
}
