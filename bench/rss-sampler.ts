/**
 * Samples a process's resident memory from /proc/<pid>/status (VmRSS now, VmHWM = the kernel's
 * own peak) on an interval, so a short spike between samples still shows up in VmHWM.
 */
import { readFileSync } from 'node:fs';

export interface RssSample {
  /** ms since the sampler started. */
  t: number;
  rssBytes: number;
  hwmBytes: number;
}

export interface RssSummary {
  samples: number;
  /** First sample of the window (the baseline). */
  startRssBytes: number;
  /** Largest VmRSS sampled. */
  peakRssBytes: number;
  /** VmHWM at the end of the window (process-lifetime peak). */
  hwmBytes: number;
  /** Last sample of the window. */
  endRssBytes: number;
}

/** VmRSS and VmHWM of `pid` in bytes, or undefined when the process is gone. */
export function readRss(pid: number): { rssBytes: number; hwmBytes: number } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN) * 1024;
  return { rssBytes: kb('VmRSS'), hwmBytes: kb('VmHWM') };
}

export class RssSampler {
  readonly samples: RssSample[] = [];
  readonly #pid: number;
  readonly #started = Date.now();
  readonly #timer: NodeJS.Timeout;

  constructor(pid: number, intervalMs = 50) {
    this.#pid = pid;
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), intervalMs);
    this.#timer.unref();
  }

  #sample(): void {
    const r = readRss(this.#pid);
    if (r) this.samples.push({ t: Date.now() - this.#started, ...r });
  }

  /** Stops sampling (one last sample first) and summarises. */
  stop(): RssSummary {
    this.#sample();
    clearInterval(this.#timer);
    const s = this.samples;
    return {
      samples: s.length,
      startRssBytes: s[0]?.rssBytes ?? Number.NaN,
      peakRssBytes: Math.max(...s.map((x) => x.rssBytes)),
      hwmBytes: s.at(-1)?.hwmBytes ?? Number.NaN,
      endRssBytes: s.at(-1)?.rssBytes ?? Number.NaN,
    };
  }
}
