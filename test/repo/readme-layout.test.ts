import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';

/**
 * The README is a front page that stays true (issue #18 item 9, issue #23 item 8): its Layout table matches the
 * tree at folder granularity, it stays short, docs/README.md indexes every page, and every relative link in the
 * README, docs/ and bench/README.md resolves (file and #anchor).
 */
const ROOT = join(__dirname, '..', '..');
const IGNORED = new Set(['node_modules', 'dist', 'coverage', '.git', '.sandbox', '.ci']);
const read = (rel: string) => readFileSync(join(ROOT, rel), 'utf8');

function section(text: string, heading: string): string {
  const start = text.indexOf(`\n## ${heading}`);
  if (start < 0) throw new Error(`README.md has no "## ${heading}" section`);
  const body = text.slice(start + 1);
  const end = body.indexOf('\n## ');
  return end === -1 ? body : body.slice(0, end);
}

function layoutPaths(): string[] {
  return [...section(read('README.md'), 'Layout').matchAll(/^\| `([^`]+)`/gm)].map((m) => m[1]!);
}

const dirsOf = (dir: string) =>
  readdirSync(join(ROOT, dir)).filter((n) => !n.startsWith('.') && !IGNORED.has(n) && statSync(join(ROOT, dir, n)).isDirectory());

test('every top-level folder and every folder of shared/ has a row in the README layout', () => {
  const rows = new Set(layoutPaths());
  const expected = [...dirsOf('.').map((d) => `${d}/`), ...dirsOf('shared').map((d) => `shared/${d}/`)];
  const missing = expected.filter((d) => !rows.has(d));
  expect(missing).toEqual([]);
});

test('every path the README layout names exists', () => {
  const paths = layoutPaths();
  expect(paths.length).toBeGreaterThan(20);
  const absent = paths.filter((p) => !existsSync(join(ROOT, p)));
  if (absent.length > 0) {
    throw new Error(
      `README.md Layout names ${absent.length} path(s) that are not in the tree: ${absent.join(', ')}. ` +
        'Create them (the restructuring of issue #23 adds the shared/ folders) or correct the table.',
    );
  }
});

test('the README is a front page: at most 250 lines, with the quick start and a link to the docs index', () => {
  const readme = read('README.md');
  expect(readme.split('\n').length).toBeLessThanOrEqual(250);
  expect(section(readme, 'Quick start')).toContain('npm ci && npm start');
  expect(section(readme, 'Quick start')).toContain('npm test');
  expect(readme).toContain('](docs/README.md)');
});

/** Markdown files whose links are checked. */
const DOCS = [
  'README.md',
  'bench/README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

test('docs/README.md indexes every page of docs/, and the README links every page', () => {
  const index = read('docs/README.md');
  const readme = read('README.md');
  const pages = DOCS.filter((d) => d.startsWith('docs/') && d !== 'docs/README.md');
  expect(pages.length).toBeGreaterThan(10);
  expect(pages.filter((p) => !index.includes(`](${p.slice('docs/'.length)})`))).toEqual([]);
  expect(pages.filter((p) => !readme.includes(`](${p})`))).toEqual([]);
});

/** Text outside fenced code blocks (a `#` in a shell block is no heading, a `](` in code no link). */
const prose = (md: string) => md.replace(/^```[\s\S]*?^```/gm, '');

/** GitHub's heading anchors: lower case, punctuation dropped, each space a hyphen, repeats numbered. */
function anchors(md: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const m of prose(md).matchAll(/^#{1,6} +(.+?) *#*$/gm)) {
    const slug = m[1]!
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    out.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return out;
}

test('every relative link of the README, docs/ and bench/README.md resolves, anchors included', () => {
  const broken: string[] = [];
  let checked = 0;
  for (const file of DOCS) {
    for (const m of prose(read(file)).matchAll(/\]\(([^)\s]+)\)/g)) {
      const link = m[1]!;
      if (/^[a-z]+:/i.test(link)) continue;
      checked++;
      const [path, anchor] = link.split('#') as [string, string | undefined];
      const target = path === '' ? file : normalize(join(dirname(file), path));
      if (target.startsWith('..') || !existsSync(join(ROOT, target))) {
        broken.push(`${file}: ${link} (no such file)`);
        continue;
      }
      if (anchor !== undefined && target.endsWith('.md') && !anchors(read(target)).has(anchor)) {
        broken.push(`${file}: ${link} (no such heading in ${target})`);
      }
    }
  }
  expect(checked).toBeGreaterThan(50);
  expect(broken).toEqual([]);
});
