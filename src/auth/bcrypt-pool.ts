import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/**
 * bcrypt comparisons off the event loop: a small pool of worker threads running bcryptjs (pure
 * JavaScript, so `npm ci` needs no compiler or prebuilt binary on any machine; a comparison at
 * cost 10 takes tens of milliseconds of CPU, which on the main thread would stall every download).
 * The worker's code is inline (no separate file to locate under tsx or in the build); it loads
 * bcryptjs's CommonJS build by the path resolved here.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const bcrypt = require(workerData.bcryptjs);
parentPort.on('message', ({ id, password, hash }) => {
  let ok = false;
  try { ok = bcrypt.compareSync(password, hash); } catch { ok = false; }
  parentPort.postMessage({ id, ok });
});
`;

interface Pending {
  readonly resolve: (ok: boolean) => void;
  readonly reject: (err: Error) => void;
}

interface Slot {
  readonly worker: Worker;
  readonly pending: Map<number, Pending>;
}

export class BcryptPool {
  readonly #slots: Slot[] = [];
  #next = 0;
  #ids = 0;
  #closed = false;

  constructor(size = Math.max(1, Math.min(2, availableParallelism() - 1))) {
    const bcryptjs = createRequire(import.meta.url).resolve('bcryptjs');
    for (let i = 0; i < size; i++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { bcryptjs } });
      worker.unref();
      const slot: Slot = { worker, pending: new Map() };
      worker.on('message', ({ id, ok }: { id: number; ok: boolean }) => {
        const p = slot.pending.get(id);
        slot.pending.delete(id);
        p?.resolve(ok);
      });
      worker.on('error', (err) => {
        for (const p of slot.pending.values()) p.reject(err);
        slot.pending.clear();
      });
      this.#slots.push(slot);
    }
  }

  /** Whether `password` matches the bcrypt `hash` (a malformed hash is a mismatch). */
  compare(password: string, hash: string): Promise<boolean> {
    if (this.#closed) return Promise.reject(new Error('bcrypt pool closed'));
    // The least busy worker; round-robin among equals.
    const start = this.#next++ % this.#slots.length;
    let slot = this.#slots[start]!;
    for (let i = 1; i < this.#slots.length; i++) {
      const s = this.#slots[(start + i) % this.#slots.length]!;
      if (s.pending.size < slot.pending.size) slot = s;
    }
    const id = this.#ids++;
    return new Promise<boolean>((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      slot.worker.postMessage({ id, password, hash });
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#slots.map((s) => s.worker.terminate()));
  }
}
