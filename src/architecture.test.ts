// The layering of docs/architecture.md, pinned (issue #12, "types live with their owner"):
// http → cache → {upstream, storage} → domain, with lib/ (neutral building blocks) at the bottom and
// observability/ (the metrics facade and the adapters that feed it) and the composition root on top.
// Reads every non-test module's imports with the TypeScript scanner and fails on an import that
// crosses a rule, naming the file and the import.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import ts from 'typescript';

const SRC = dirname(fileURLToPath(import.meta.url));

interface Import {
  readonly from: string;
  /** As written: `../domain/digest.js`, `node:fs`, `undici`. */
  readonly specifier: string;
  /** The imported module relative to src/ (`domain/digest.js`) for a relative import. */
  readonly target?: string;
}

function modules(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return modules(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

const IMPORTS: Import[] = modules(SRC).flatMap((file) => {
  const from = relative(SRC, file).split(sep).join('/');
  return ts.preProcessFile(readFileSync(file, 'utf8'), true, true).importedFiles.map(({ fileName: specifier }) =>
    specifier.startsWith('.') ? { from, specifier, target: relative(SRC, resolve(dirname(file), specifier)).split(sep).join('/') } : { from, specifier },
  );
});

/** The top-level directory of a module under src/; `(root)` for the composition root (server.ts, cli.ts). */
const layer = (path: string) => (path.includes('/') ? path.slice(0, path.indexOf('/')) : '(root)');
const isBuiltin = (specifier: string) => specifier.startsWith('node:') || builtinModules.includes(specifier);
const show = (i: Import) => `${i.from} imports ${i.specifier}`;

function crossing(fromLayer: string, toLayer: string): string[] {
  return IMPORTS.filter((i) => i.target !== undefined && layer(i.from) === fromLayer && layer(i.target) === toLayer).map(show);
}

/** Every cycle of the directory graph (one per strongly connected component), with the imports that make it. */
function directoryCycles(): string[] {
  const edges = new Map<string, Map<string, Import>>();
  for (const i of IMPORTS) {
    if (i.target === undefined || layer(i.from) === layer(i.target)) continue;
    const out = edges.get(layer(i.from)) ?? new Map<string, Import>();
    if (!out.has(layer(i.target))) out.set(layer(i.target), i);
    edges.set(layer(i.from), out);
  }
  // Tarjan's strongly connected components.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const cycles: string[] = [];
  const visit = (v: string) => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    for (const w of edges.get(v)?.keys() ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (stack.includes(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const component: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      component.push(w);
    } while (w !== v);
    if (component.length > 1) {
      const members = new Set(component);
      const via = [...members].flatMap((a) => [...(edges.get(a) ?? [])].filter(([b]) => members.has(b)).map(([, i]) => show(i)));
      cycles.push(`${[...members].sort().join(' ⇄ ')}: ${via.join('; ')}`);
    }
  };
  for (const v of edges.keys()) if (!index.has(v)) visit(v);
  return cycles;
}

describe('architecture: imports follow the layers (docs/architecture.md)', () => {
  it('reads the imports (the rules below are not vacuous)', () => {
    assert.ok(IMPORTS.length > 200, `only ${IMPORTS.length} imports found`);
    assert.ok(crossing('cache', 'domain').length > 0 && crossing('http', 'cache').length > 0);
  });

  it('http/ does not import storage/: it routes (domain values) and calls the cache', () => {
    assert.deepEqual(crossing('http', 'storage'), []);
  });

  it('upstream/ does not import cache/: the cache uses upstreams, not the other way round', () => {
    assert.deepEqual(crossing('upstream', 'cache'), []);
  });

  it('domain/ imports nothing but domain/ and Node built-ins', () => {
    const outside = IMPORTS.filter((i) => layer(i.from) === 'domain' && (i.target !== undefined ? layer(i.target) !== 'domain' : !isBuiltin(i.specifier)));
    assert.deepEqual(outside.map(show), []);
  });

  it('lib/ (neutral building blocks) imports nothing of hubcache outside lib/', () => {
    assert.deepEqual(IMPORTS.filter((i) => layer(i.from) === 'lib' && i.target !== undefined && layer(i.target) !== 'lib').map(show), []);
  });

  // auth/ (issue #14: users, the access policy, tokens) sits beside cache/: the http layer asks it
  // who a client is and what it may do; it knows nothing of HTTP, the cache, upstreams or the store
  // (the signing key's directory is handed to it), so it can't route around the layers.
  it('auth/ imports only domain/, lib/ and itself', () => {
    const outside = IMPORTS.filter((i) => layer(i.from) === 'auth' && i.target !== undefined && !['auth', 'domain', 'lib'].includes(layer(i.target)));
    assert.deepEqual(outside.map(show), []);
    assert.ok(crossing('http', 'auth').length > 0, 'the http layer uses auth/');
  });

  // cluster/ (issue #15: several replicas) implements the cache's FillCoordinator over Redis and
  // serves the follow endpoint from the cache's FillSource: it depends on the cache's interfaces,
  // never the other way round (the cache knows no Redis), and on domain/, lib/ and the config types
  // it maps to ioredis options, plus the tag record's shape (storage/tag-store.ts: the validations it
  // shares are the store's records), the access record's interface it implements in Redis
  // (storage/access-record.ts) and the upstream's rate-limit interfaces it shares
  // (upstream/upstream.ts). Only the composition root and observability/ (its metrics) use it.
  it('cluster/ imports only cache/ interfaces, config/, domain/, lib/, the tag and access records and the upstream interfaces; only the root and observability/ import it', () => {
    const allowed = new Set(['storage/tag-store.js', 'storage/access-record.js', 'upstream/upstream.js']);
    const outside = IMPORTS.filter((i) => layer(i.from) === 'cluster' && i.target !== undefined && !['cluster', 'cache', 'config', 'domain', 'lib'].includes(layer(i.target)) && !allowed.has(i.target));
    assert.deepEqual(outside.map(show), []);
    assert.deepEqual(
      IMPORTS.filter((i) => layer(i.from) === 'cluster' && i.target !== undefined && layer(i.target) === 'cache' && i.target !== 'cache/fill-coordinator.js').map(show),
      [],
      'cluster/ sees the cache only through fill-coordinator.ts',
    );
    const users = IMPORTS.filter((i) => i.target !== undefined && layer(i.target) === 'cluster' && !['cluster', '(root)', 'observability'].includes(layer(i.from)));
    assert.deepEqual(users.map(show), []);
    assert.ok(crossing('(root)', 'cluster').length > 0, 'the composition root wires it');
  });

  it('no import cycle between directories', () => {
    assert.deepEqual(directoryCycles(), []);
  });
});
