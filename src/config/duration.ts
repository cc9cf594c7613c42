const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `250ms`, `30s`, `5m`, `1h30m`, `2d` into milliseconds; `undefined` when malformed. */
export function parseDuration(s: string): number | undefined {
  const text = s.trim();
  if (!/^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(text)) return undefined;
  let total = 0;
  for (const [, n, , unit] of text.matchAll(/(\d+(\.\d+)?)(ms|s|m|h|d)/g)) total += Number(n) * UNITS[unit!]!;
  return Math.round(total);
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4 };

/** Parses `4MiB`, `500mb`, `1048576` into bytes; `undefined` when malformed. */
export function parseSize(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(s.trim());
  if (!m) return undefined;
  const mult = SIZE_UNITS[m[2]!.toLowerCase()];
  return mult === undefined ? undefined : Math.round(Number(m[1]) * mult);
}

/**
 * The inverse of parseDuration, as a person would write it: `5m`, `30s`, `250ms`, `1h30m`.
 * Integer parts only (largest unit first), so parseDuration(formatDuration(ms)) === ms.
 */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  let rest = ms;
  let out = '';
  for (const [unit, size] of Object.entries(UNITS).sort((a, b) => b[1] - a[1])) {
    const n = Math.floor(rest / size);
    if (n === 0) continue;
    out += `${n}${unit}`;
    rest -= n * size;
  }
  return out;
}

/**
 * The inverse of parseSize: the largest unit that divides the size exactly, binary before decimal
 * (`4MiB`, `500MB`, `1000B`), so parseSize(formatSize(n)) === n without rounding.
 */
export function formatSize(bytes: number): string {
  const units: Array<[string, number]> = [
    ['TiB', 1024 ** 4],
    ['TB', 1e12],
    ['GiB', 1024 ** 3],
    ['GB', 1e9],
    ['MiB', 1024 ** 2],
    ['MB', 1e6],
    ['KiB', 1024],
    ['KB', 1e3],
  ];
  for (const [unit, size] of units) if (bytes !== 0 && bytes % size === 0) return `${bytes / size}${unit}`;
  return `${bytes}B`;
}
