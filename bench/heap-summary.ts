/**
 * Summarises a V8 heap snapshot (`v8.writeHeapSnapshot`, e.g. from bench/rss-ab.ts with
 * RSS_PROBE_SNAPSHOT): the largest groups by self size (node type and constructor / name), and the
 * largest single objects with the chain of their first retainers, which says which cache or map holds
 * them.
 *
 *   tsx bench/heap-summary.ts FILE.heapsnapshot [TOP]
 */
import { readFileSync } from 'node:fs';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] } };
  nodes: number[];
  edges: number[];
  strings: string[];
}

function main(): void {
  const [file, topArg] = process.argv.slice(2);
  if (!file) throw new Error('usage: tsx bench/heap-summary.ts FILE.heapsnapshot [TOP]');
  const top = Number(topArg ?? 25);
  const s = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const nf = s.snapshot.meta.node_fields;
  const ef = s.snapshot.meta.edge_fields;
  const NW = nf.length;
  const EW = ef.length;
  const [T, N, SZ, EC] = ['type', 'name', 'self_size', 'edge_count'].map((f) => nf.indexOf(f)) as [number, number, number, number];
  const [ET, EN, ETO] = ['type', 'name_or_index', 'to_node'].map((f) => ef.indexOf(f)) as [number, number, number];
  const types = s.snapshot.meta.node_types[0];
  const etypes = s.snapshot.meta.edge_types[0];
  const count = s.nodes.length / NW;
  const label = (i: number) => `${types[s.nodes[i * NW + T]!]}:${s.strings[s.nodes[i * NW + N]!]!.slice(0, 60)}`;
  // Group by type and name.
  const groups = new Map<string, { size: number; n: number }>();
  let total = 0;
  for (let i = 0; i < count; i++) {
    const key = label(i);
    const size = s.nodes[i * NW + SZ]!;
    total += size;
    const g = groups.get(key) ?? { size: 0, n: 0 };
    g.size += size;
    g.n++;
    groups.set(key, g);
  }
  // First retainer of each node (a non-weak edge).
  const retainer = new Int32Array(count).fill(-1);
  const retainerEdge: string[] = new Array(count);
  let e = 0;
  for (let i = 0; i < count; i++) {
    const edges = s.nodes[i * NW + EC]!;
    for (let k = 0; k < edges; k++, e += EW) {
      const to = s.edges[e + ETO]! / NW;
      const et = etypes[s.edges[e + ET]!];
      if (et === 'weak' || et === 'shortcut') continue;
      if (retainer[to] === -1) {
        retainer[to] = i;
        const name = et === 'element' || et === 'hidden' ? `[${s.edges[e + EN]}]` : s.strings[s.edges[e + EN]!];
        retainerEdge[to] = `${et}:${name}`;
      }
    }
  }
  const mib = (n: number) => (n / 1048576).toFixed(2);
  console.log(`${count} nodes, ${mib(total)} MiB self size in all`);
  console.log(`\nlargest groups by self size (type:name — MiB, count):`);
  for (const [k, g] of [...groups].sort((a, b) => b[1].size - a[1].size).slice(0, top)) console.log(`  ${mib(g.size).padStart(7)} MiB  ${String(g.n).padStart(8)}  ${k}`);
  console.log(`\nlargest objects and their first retainers:`);
  const order = Array.from({ length: count }, (_, i) => i).sort((a, b) => s.nodes[b * NW + SZ]! - s.nodes[a * NW + SZ]!);
  for (const i of order.slice(0, top)) {
    const chain: string[] = [];
    let j = i;
    for (let d = 0; d < 8 && retainer[j]! >= 0; d++) {
      chain.push(`${retainerEdge[j]} ← ${label(retainer[j]!)}`);
      j = retainer[j]!;
    }
    console.log(`  ${mib(s.nodes[i * NW + SZ]!).padStart(7)} MiB  ${label(i)}\n      ${chain.join('\n      ')}`);
  }
}

main();
