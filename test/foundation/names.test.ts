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
