import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The benchmark table of bench/README.md, generated from bench/results/latest.json (`npm run bench` calls this
 * after a full run; `npm run bench:readme` regenerates it alone). test/bench/readme-table.test.ts checks they agree.
 */

export interface Row {
  id: string;
  what: string;
  value: string;
  target?: string;
  pass?: boolean;
}

export interface BenchResults {
  at: string;
  node: string;
  durationSeconds: number;
  connections: number;
  wallSeconds?: number;
  partial?: string[];
  rows: Row[];
  figures: Record<string, unknown>;
}

export const START =
  '<!-- bench-table:start (generated from bench/results/latest.json by bench/readme-table.ts; do not edit) -->';
export const END = '<!-- bench-table:end -->';

/** The page that holds the table, relative to the repository root. */
export const TABLE_PAGE = join('bench', 'README.md');

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

export function renderTable(r: BenchResults): string {
  const lines = [
    `Run of ${r.at.slice(0, 16).replace('T', ' ')} UTC, Node ${r.node}, ${r.durationSeconds}-second load runs, ${r.connections} connections${r.wallSeconds ? `, ${Math.round(r.wallSeconds)} s in all` : ''}.`,
    '',
    '| # | measure | figure | target | result |',
    '| --- | --- | --- | --- | --- |',
  ];
  for (const row of r.rows) {
    lines.push(
      `| ${row.id} | ${cell(row.what.trim())} | ${cell(row.value)} | ${cell(row.target ?? '')} | ${row.pass === undefined ? '' : row.pass ? 'PASS' : '**FAIL**'} |`,
    );
  }
  return lines.join('\n');
}

/** The page's text with the table between the markers replaced. */
export function withTable(readme: string, r: BenchResults): string {
  const a = readme.indexOf(START);
  const b = readme.indexOf(END);
  if (a < 0 || b < a) throw new Error(`${TABLE_PAGE} has no benchmark table markers (${START} … ${END})`);
  return readme.slice(0, a + START.length) + '\n' + renderTable(r) + '\n' + readme.slice(b);
}

export function updateReadme(readmePath: string, r: BenchResults): void {
  writeFileSync(readmePath, withTable(readFileSync(readmePath, 'utf8'), r));
}

if (require.main === module) {
  const root = join(__dirname, '..', '..');
  const results = JSON.parse(readFileSync(join(root, 'bench', 'results', 'latest.json'), 'utf8')) as BenchResults;
  updateReadme(join(root, TABLE_PAGE), results);
  process.stdout.write(`${TABLE_PAGE} benchmark table regenerated from bench/results/latest.json\n`);
}
