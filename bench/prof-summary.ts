/**
 * Where a V8 CPU profile's samples went (issue #16): self time by category and the top functions.
 *
 *   npx tsx bench/prof-summary.ts <file.cpuprofile>… [--top N] [--from FN]
 *
 * Categories, by the sampled function's own name and script: sha256 (Hash update/digest), socket
 * writes (writeBuffer, writev, writeUtf8String…), file I/O (fs bindings), the HTTP parser (llhttp,
 * undici's), GC, idle (the event loop waiting), program (V8's "(program)": native code outside JS),
 * hubcache (dist/ or src/ of this repository), node_modules (by package), node: internals. The
 * percentages are of the busy samples (all but idle); "utilisation" is busy ÷ all. `--from FN`
 * counts only the samples from 50 ms before the first one in function FN (e.g. `update`, the first
 * hash of a fill): the process's start-up (module loading) is left out.
 */
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

function category(fn: string, url: string): string {
  if (fn === '(idle)') return 'idle';
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(program)') return 'program (native, outside JS)';
  if (/^(update|digest)$/.test(fn) && (url === '' || url.includes('crypto'))) return 'sha256 (Hash update/digest)';
  if (/^(writeBuffer|writev|writeUtf8String|writeLatin1String|writeAsciiString|writeUcs2String|shutdown)$/.test(fn)) return 'socket writes (kernel copy)';
  if (/^(writeBuffers|writeBuffer|read|writeString|fsync|fdatasync|open|close|rename)$/.test(fn) && url === '') return 'file I/O (fs binding)';
  if (/llhttp|parser/i.test(fn) || url.includes('llhttp')) return 'HTTP parser';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return `node_modules: ${nm[1]}`;
  if (/\/(dist|src)\//.test(url) && !url.startsWith('node:')) return 'hubcache (own code)';
  if (url.endsWith('floor-relay.mjs')) return 'floor relay (own code)';
  if (url.startsWith('node:')) return 'node: internals (streams, http, net, events)';
  if (url === '') return `native: ${fn || '(anonymous)'}`;
  return 'other JS';
}

const args = process.argv.slice(2);
const topAt = args.indexOf('--top');
const top = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 15;
const fromAt = args.indexOf('--from');
const from = fromAt >= 0 ? args.splice(fromAt, 2)[1] : undefined;
for (const file of args) {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  let first = 0;
  if (from) {
    let t = 0;
    const times = p.timeDeltas.map((d) => (t += d));
    const at = p.samples.findIndex((id) => byId.get(id)!.callFrame.functionName === from);
    const start = at < 0 ? 0 : times[at]! - 50_000;
    first = Math.max(0, times.findIndex((x) => x >= start));
  }
  for (let i = first; i < p.samples.length; i++) self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0));
  const cats = new Map<string, number>();
  const fns = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const { functionName: fn, url, lineNumber } = byId.get(id)!.callFrame;
    const c = category(fn, url);
    total += us;
    if (c === 'idle') {
      idle += us;
      continue;
    }
    cats.set(c, (cats.get(c) ?? 0) + us);
    const key = `${fn || '(anonymous)'} ${url.replace(/^.*\/(node_modules|dist|src|bench)\//, '$1/')}:${lineNumber + 1}`;
    fns.set(key, (fns.get(key) ?? 0) + us);
  }
  const busy = total - idle;
  const pct = (us: number) => `${((us / busy) * 100).toFixed(1).padStart(5)} %`;
  const ms = (us: number) => `${(us / 1000).toFixed(0).padStart(6)} ms`;
  process.stdout.write(`\n${file}\n  wall ${(total / 1e3).toFixed(0)} ms, busy ${(busy / 1e3).toFixed(0)} ms, utilisation ${((busy / total) * 100).toFixed(0)} %\n`);
  for (const [c, us] of [...cats].sort((a, b) => b[1] - a[1])) process.stdout.write(`  ${ms(us)} ${pct(us)}  ${c}\n`);
  process.stdout.write('  top functions (self):\n');
  for (const [f, us] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`  ${ms(us)} ${pct(us)}  ${f}\n`);
}
