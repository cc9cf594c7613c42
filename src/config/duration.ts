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
