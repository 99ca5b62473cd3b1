import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** The README's Layout table matches the tree (issue #18 item 9). */
const ROOT = join(__dirname, '..', '..');
const IGNORED = new Set(['node_modules', 'dist', 'coverage', '.git', '.sandbox', '.ci']);

function layoutPaths(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('\n## Layout'));
  const body = section.slice(0, section.indexOf('\n## ', 5) === -1 ? undefined : section.indexOf('\n## ', 5));
  return [...body.matchAll(/^\| `([^`]+)`/gm)].map((m) => m[1]!);
}

const dirsOf = (dir: string) =>
  readdirSync(join(ROOT, dir)).filter((n) => !n.startsWith('.') && !IGNORED.has(n) && statSync(join(ROOT, dir, n)).isDirectory());

test('every top-level folder and every folder of shared/, local/ and test/ has a row', () => {
  const rows = new Set(layoutPaths());
  const expected = [
    ...dirsOf('.').map((d) => `${d}/`),
    ...['shared', 'local', 'test'].flatMap((p) => dirsOf(p).map((d) => `${p}/${d}/`)),
  ];
  const missing = expected.filter((d) => !rows.has(d) && !(d === 'shared/' || d === 'test/'));
  expect(missing).toEqual([]);
});

test('every path the table names exists', () => {
  const paths = layoutPaths();
  expect(paths.length).toBeGreaterThan(20);
  const absent = paths.filter((p) => !p.includes('*') && !existsSync(join(ROOT, p)));
  expect(absent).toEqual([]);
});
