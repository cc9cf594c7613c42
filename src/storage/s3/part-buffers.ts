/**
 * Buffers for the parts of multipart uploads, reused from one part (and one writer) to the next.
 *
 * A fresh part buffer (16 MiB by default) is new memory: the kernel maps and zeroes every page on
 * its first touch, which costs far more CPU than copying the bytes into it (1–2.6 ms per MiB against
 * ~0.03 ms on the 2-core bench machine: 70–170 ms per 64 MiB fill, the filling replica's largest
 * cost in bench/replicas.ts's profiles after the socket writes). Reused, the pages are already there.
 *
 * Bounded: at most `keep` idle buffers are held (a writer uses at most partsInFlight + 1 at a time;
 * more writers at once allocate more, and the extra ones go to the garbage collector when given
 * back), and all of them are dropped once none was given back for `idleMs`, so an idle replica holds
 * no part memory.
 */
/** Runs `fn` once after `ms` unless the returned function is called first (tests drive it by hand). */
export type Schedule = (ms: number, fn: () => void) => () => void;

const timerSchedule: Schedule = (ms, fn) => {
  const timer = setTimeout(fn, ms);
  timer.unref(); // idle buffers must not keep a stopping process alive
  return () => clearTimeout(timer);
};

export class PartBuffers {
  readonly size: number;
  readonly #keep: number;
  readonly #idleMs: number;
  readonly #schedule: Schedule;
  readonly #idle: Buffer[] = [];
  #cancelDrop: (() => void) | undefined;

  constructor(size: number, keep: number, opts: { idleMs?: number; schedule?: Schedule } = {}) {
    this.size = size;
    this.#keep = keep;
    this.#idleMs = opts.idleMs ?? 10_000;
    this.#schedule = opts.schedule ?? timerSchedule;
  }

  /** A buffer of `size` bytes (old contents: the caller overwrites what it uses). */
  take(): Buffer {
    return this.#idle.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  /**
   * Gives a buffer from `take` back, once nothing reads it any more (its upload finished, or it was
   * never sent). The writers give back no part whose UploadPart failed: that writer fails anyway.
   */
  give(buf: Buffer): void {
    if (buf.length !== this.size || this.#idle.length >= this.#keep || this.#idle.includes(buf)) return;
    this.#idle.push(buf);
    // Dropped together once none was given back for idleMs (each give restarts the wait).
    this.#cancelDrop?.();
    this.#cancelDrop = this.#schedule(this.#idleMs, () => {
      this.#cancelDrop = undefined;
      this.#idle.length = 0;
    });
  }

  /** Idle buffers held now. */
  get idle(): number {
    return this.#idle.length;
  }
}
