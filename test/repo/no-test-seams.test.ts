import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

/**
 * One composition root (shared/app/context.ts), no reset seams: tests get fresh state by building an app context,
 * so no module of the app exports a reset or set function only tests call. And the app's code names no test fixture:
 * it speaks of local development endpoints, never of "the sandbox".
 */
const ROOT = join(__dirname, '..', '..');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return sources(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

const app = [...sources(join(ROOT, 'shared')), ...sources(join(ROOT, 'functions'))];
const nonTest = [...app, ...sources(join(ROOT, 'local')), ...sources(join(ROOT, 'bench'))];

test('no module of shared/ or functions/ exports a reset*/set* function referenced only from test/', () => {
  const seams: string[] = [];
  for (const file of app) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/export\s+(?:async\s+)?(?:function|const|let)\s+((?:reset|set)[A-Z]\w*)/g)) {
      const name = m[1]!;
      const uses = new RegExp(`\\b${name}\\b`, 'g');
      const usedOutsideTests = nonTest.some((other) => {
        const count = readFileSync(other, 'utf8').match(uses)?.length ?? 0;
        return other === file ? count > 1 : count > 0;
      });
      if (!usedOutsideTests) seams.push(`${relative(ROOT, file)}: ${name}`);
    }
  }
  expect(seams).toEqual([]);
});

test('the detector sees a seam (it can fail)', () => {
  const text = 'export function resetThings(): void {}';
  expect([...text.matchAll(/export\s+(?:async\s+)?(?:function|const|let)\s+((?:reset|set)[A-Z]\w*)/g)].map((m) => m[1])).toEqual([
    'resetThings',
  ]);
});

test('no module of shared/ or functions/ says "sandbox"', () => {
  const named = app.filter((f) => /sandbox/i.test(readFileSync(f, 'utf8'))).map((f) => relative(ROOT, f));
  expect(named).toEqual([]);
});
