import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { END, renderTable, START, TABLE_PAGE, withTable, type BenchResults } from '../../bench/readme-table';

const root = join(__dirname, '..', '..');
const results = JSON.parse(readFileSync(join(root, 'bench', 'results', 'latest.json'), 'utf8')) as BenchResults;
const readme = readFileSync(join(root, TABLE_PAGE), 'utf8');

describe('bench/README.md benchmark table', () => {
  it('lives in bench/README.md, and the front-page README no longer carries it', () => {
    expect(TABLE_PAGE).toBe(join('bench', 'README.md'));
    expect(readFileSync(join(root, 'README.md'), 'utf8')).not.toContain(START);
  });

  it('is exactly the table generated from bench/results/latest.json', () => {
    expect(withTable(readme, results)).toBe(readme);
  });

  it('latest.json is a full run with every measure and a verdict for every target', () => {
    expect(results.partial).toBeUndefined();
    const ids = new Set(results.rows.map((r) => r.id));
    for (const id of ['1', '2', '3', '4', '5', '6', '7', '8', '9']) expect(ids).toContain(id);
    for (const r of results.rows) if (r.target) expect(typeof r.pass).toBe('boolean');
  });

  it('the generator puts every row, with its verdict, between the markers, and refuses a page without them', () => {
    const t = renderTable(results);
    for (const r of results.rows) expect(t).toContain(r.value.replace(/\|/g, '\\|'));
    expect(t.split('\n').filter((l) => /\| \*\*FAIL\*\* \|$/.test(l))).toHaveLength(
      results.rows.filter((r) => r.pass === false).length,
    );
    expect(() => withTable('no markers here', results)).toThrow(/markers/);
    const edited = readme.replace(START, `${START}\n| edited by hand |`);
    expect(withTable(edited, results)).toBe(readme);
    expect(readme.indexOf(START)).toBeLessThan(readme.indexOf(END));
  });
});
