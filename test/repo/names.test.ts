import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, relative } from 'node:path';

/** Names (issue #18 item 6): kebab-case file names; no two exported types of the app share a name. */
const ROOT = join(__dirname, '..', '..');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    if (n === 'node_modules' || n === 'results' || n === 'fixtures') return [];
    return statSync(p).isDirectory() ? files(p) : /\.(ts|mjs)$/.test(n) ? [p] : [];
  });
}

const APP = ['shared', 'functions', 'local'];

test('every source and test file name is kebab-case', () => {
  const bad = [...APP, 'test', 'bench', 'examples']
    .flatMap((d) => files(join(ROOT, d)))
    .filter((f) => !/^[a-z0-9]+(-[a-z0-9]+)*(\.[a-z0-9]+)*\.(ts|mjs)$/.test(basename(f)))
    .map((f) => relative(ROOT, f));
  expect(bad).toEqual([]);
});

test('no two exported types, interfaces or classes of the app share a name', () => {
  const seen = new Map<string, string[]>();
  for (const f of APP.flatMap((d) => files(join(ROOT, d)))) {
    for (const m of readFileSync(f, 'utf8').matchAll(/^export (?:type|interface|class|enum|abstract class) ([A-Z]\w*)/gm)) {
      seen.set(m[1]!, [...(seen.get(m[1]!) ?? []), relative(ROOT, f)]);
    }
  }
  expect(seen.size).toBeGreaterThan(50);
  expect([...seen].filter(([, where]) => where.length > 1)).toEqual([]);
});

/** Exported functions and constants of shared/ and functions/ with the same name in two modules (one name, one meaning). */
function exportedValueNames(): Map<string, string[]> {
  const seen = new Map<string, string[]>();
  for (const f of ['shared', 'functions'].flatMap((d) => files(join(ROOT, d)))) {
    for (const m of readFileSync(f, 'utf8').matchAll(/^export (?:async )?(?:function|const|let) (\w+)/gm)) {
      seen.set(m[1]!, [...(seen.get(m[1]!) ?? []), relative(ROOT, f)]);
    }
  }
  return seen;
}

// The Functions convention: every functions/*.ts module exports its `handler` and `registration`.
const PER_FUNCTION = new Set(['handler', 'registration']);

test('no two modules of shared/ and functions/ export a function or constant of the same name', () => {
  const seen = exportedValueNames();
  expect(seen.size).toBeGreaterThan(100);
  const dup = [...seen].filter(
    ([name, where]) => where.length > 1 && !(PER_FUNCTION.has(name) && where.every((w) => w.startsWith('functions'))),
  );
  expect(dup).toEqual([]);
});

test('no two files of shared/ share a base name across areas where one would be mistaken for the other', () => {
  // index-like names are fine per folder; role names that mean different things per area are not (three admin.ts).
  const ROLE_NAMES = ['admin.ts', 'handler.ts', 'wiring.ts', 'utils.ts', 'helpers.ts', 'misc.ts'];
  const found = files(join(ROOT, 'shared'))
    .map((f) => relative(ROOT, f))
    .filter((f) => ROLE_NAMES.includes(basename(f)));
  expect(found).toEqual(['shared/http/handler.ts']);
});
