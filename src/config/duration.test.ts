import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatDuration, formatSize, parseDuration, parseSize } from './duration.js';

describe('formatDuration', () => {
  it('uses the most natural unit, compound when needed', () => {
    const cases: Array<[number, string]> = [
      [0, '0s'],
      [1, '1ms'],
      [250, '250ms'],
      [1_000, '1s'],
      [1_500, '1s500ms'],
      [30_000, '30s'],
      [90_000, '1m30s'],
      [300_000, '5m'],
      [1_800_000, '30m'],
      [3_600_000, '1h'],
      [5_400_000, '1h30m'],
      [86_400_000, '1d'],
      [90_061_001, '1d1h1m1s1ms'],
    ];
    for (const [ms, text] of cases) assert.equal(formatDuration(ms), text, `${ms} ms`);
  });

  it('parses back to the same number of milliseconds', () => {
    for (const ms of [0, 1, 999, 1_000, 59_999, 60_000, 61_001, 3_599_999, 3_600_000, 86_399_999, 86_400_000, 7 * 86_400_000 + 1]) {
      assert.equal(parseDuration(formatDuration(ms)), ms, formatDuration(ms));
    }
  });
});

describe('formatSize', () => {
  it('uses the largest unit that divides the size exactly, binary before decimal', () => {
    const cases: Array<[number, string]> = [
      [0, '0B'],
      [1, '1B'],
      [1_000, '1KB'],
      [1_024, '1KiB'],
      [1_536, '1536B'],
      [4 * 1024 ** 2, '4MiB'],
      [500_000_000, '500MB'],
      [2 * 1024 ** 3, '2GiB'],
      [3e12, '3TB'],
      [1024 ** 4, '1TiB'],
    ];
    for (const [bytes, text] of cases) assert.equal(formatSize(bytes), text, `${bytes} bytes`);
  });

  it('parses back to the same number of bytes', () => {
    for (const n of [0, 1, 1_023, 1_024, 1_536, 1_000_000, 4 * 1024 ** 2, 4 * 1024 ** 2 + 1, 500_000_000, 1024 ** 4, 5 * 1024 ** 4]) {
      assert.equal(parseSize(formatSize(n)), n, formatSize(n));
    }
  });
});
