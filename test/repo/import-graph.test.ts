import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';

/**
 * The import graph of the app (shared/, functions/, local/) has no cycle: static imports, type-only imports and
 * dynamic import() alike (issue #18 item 4). A cycle found is printed as the chain of files.
 */
const ROOT = join(__dirname, '..', '..');
const IMPORT = /(?:(?:^|\n)\s*(?:import|export)\s+(?:[^'";]*?\sfrom\s+)?|import\()\s*['"](\.[^'"]+)['"]/g;

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return sources(p);
    return p.endsWith('.ts') ? [relative(ROOT, p)] : [];
  });
}

export function importGraph(dirs: string[]): Map<string, string[]> {
  const files = new Set(dirs.flatMap((d) => sources(join(ROOT, d))));
  const graph = new Map<string, string[]>();
  for (const f of files) {
    const deps: string[] = [];
    for (const m of readFileSync(join(ROOT, f), 'utf8').matchAll(IMPORT)) {
      const base = normalize(join(dirname(f), m[1]!));
      for (const candidate of [`${base}.ts`, join(base, 'index.ts')]) if (files.has(candidate)) deps.push(candidate);
    }
    graph.set(f, deps);
  }
  return graph;
}

export function findCycle(graph: Map<string, string[]>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const visit = (f: string): string[] | undefined => {
    state.set(f, 'open');
    path.push(f);
    for (const d of graph.get(f) ?? []) {
      if (state.get(d) === 'open') return [...path.slice(path.indexOf(d)), d];
      if (!state.has(d)) {
        const found = visit(d);
        if (found) return found;
      }
    }
    path.pop();
    state.set(f, 'done');
    return undefined;
  };
  for (const f of graph.keys()) {
    if (!state.has(f)) {
      const found = visit(f);
      if (found) return found;
    }
  }
  return undefined;
}

test('the detector finds a cycle (it can fail)', () => {
  const g = new Map([
    ['a.ts', ['b.ts']],
    ['b.ts', ['c.ts']],
    ['c.ts', ['a.ts']],
    ['d.ts', []],
  ]);
  expect(findCycle(g)).toEqual(['a.ts', 'b.ts', 'c.ts', 'a.ts']);
  expect(
    findCycle(
      new Map([
        ['a.ts', ['b.ts']],
        ['b.ts', []],
      ]),
    ),
  ).toBeUndefined();
});

test('no import cycle in shared/, functions/ or local/ (type-only and dynamic imports included)', () => {
  const graph = importGraph(['shared', 'functions', 'local']);
  expect(graph.size).toBeGreaterThan(50);
  expect(graph.get(join('shared', 'google', 'source.ts'))).toContain(join('shared', 'google', 'keyless.ts')); // import() is seen
  expect(findCycle(graph)?.join(' → ')).toBeUndefined();
});
