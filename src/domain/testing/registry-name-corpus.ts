/**
 * Candidate registry names for property-style tests: hand-picked edge cases plus names generated
 * from a seeded PRNG (the same corpus on every run), built to sit on both sides of every clause of
 * the rule in domain/registry-name.ts — label lengths 62/63/64, hyphens at the ends, ports with
 * leading zeros and just out of range, uppercase, single labels, totals around 253 characters.
 */

/** Names that are registry names. */
export const VALID_REGISTRY_NAMES: readonly string[] = [
  'docker.io',
  'ghcr.io',
  'localhost',
  'localhost:5000',
  'registry.example.com:5000',
  '10.0.0.1:5000',
  '10.0.0.1',
  'a-b.c',
  'x:65535',
  'x:1',
  'registry:5000',
  'a--b.io',
  `${'a'.repeat(63)}.io`,
  `${'a.'.repeat(125)}abc`,
  `${'a.'.repeat(122)}abc:65535`,
];

/** Names that are not, whatever they look like. */
export const INVALID_REGISTRY_NAMES: readonly string[] = [
  '',
  '.',
  '..',
  '../etc',
  'docker.io/..',
  'docker.io/x',
  'Docker.io',
  'GHCR.IO',
  '-a.io',
  'a-.io',
  'a..b',
  '.io',
  'io.',
  'host:',
  'host:0',
  'host:065',
  'registry.local:05000',
  'host:99999',
  'host:65536',
  'host:5000:1',
  '[::1]:5000',
  'host name',
  'a_b.io',
  'a\\b',
  'a\0b',
  `${'x'.repeat(64)}.io`,
  `${'a.'.repeat(127)}ab`,
  `${'a.'.repeat(122)}abcd:65535`,
  'myregistry',
  'registry',
  'localhost.',
  'http://x',
];

/** A deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const LABEL_CHARS = [...'abcdefghijklmnopqrstuvwxyz0123456789-'];
const LABEL_LENGTHS = [1, 1, 2, 3, 5, 8, 20, 61, 62, 63, 64];
const PORTS = ['', '', '', ':1', ':80', ':5000', ':05000', ':0', ':65535', ':65536', ':99999', ':123456', ':', ':x', ':6553', ':65530'];
const ODDITIES = ['A', '_', ' ', '/', '..', '-', 'é', ':'];

/** `count` generated candidates (valid and invalid) after the hand-picked ones, the same ones each run. */
export function registryNameCorpus(count = 3000, seed = 12): string[] {
  const rand = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const label = (): string => {
    const n = pick(LABEL_LENGTHS);
    let s = '';
    for (let i = 0; i < n; i++) s += pick(LABEL_CHARS);
    return s;
  };
  const out = [...VALID_REGISTRY_NAMES, ...INVALID_REGISTRY_NAMES];
  for (let i = 0; i < count; i++) {
    // Mostly 1–4 labels; sometimes many short ones, to reach the 253-character limit.
    const long = rand() < 0.1;
    const labels = long ? 60 + Math.floor(rand() * 12) : 1 + Math.floor(rand() * 4);
    const parts: string[] = [];
    for (let j = 0; j < labels; j++) parts.push(long ? label().slice(0, 3) || 'a' : label());
    let name = (rand() < 0.05 ? 'localhost' : parts.join('.')) + pick(PORTS);
    if (rand() < 0.1) {
      const at = Math.floor(rand() * (name.length + 1));
      name = name.slice(0, at) + pick(ODDITIES) + name.slice(at);
    }
    out.push(name);
  }
  return out;
}
