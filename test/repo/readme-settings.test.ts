import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { allSettings } from '../../shared/config/settings';
import { loadAllSections, settingsTable } from '../../local/settings-table';

const root = join(__dirname, '..', '..');

test('every setting the code declares is in the configuration table of docs/configuration.md, as generated', () => {
  loadAllSections();
  const readme = readFileSync(join(root, 'docs', 'configuration.md'), 'utf8');
  const names = allSettings().map((s) => s.name);
  expect(names.length).toBeGreaterThan(30);
  const missing = names.filter((n) => !readme.includes(`| \`${n}\` |`));
  expect(missing).toEqual([]);
  // The table is pasted from `npm run settings-table`: regenerate it when a setting or its default changes.
  for (const row of settingsTable().split('\n').slice(2)) expect(readme).toContain(row);
});

test('local.settings.json.template sets every required setting of the sandbox', () => {
  loadAllSections();
  const tpl = JSON.parse(readFileSync(join(root, 'local.settings.json.template'), 'utf8')) as { Values: Record<string, string> };
  for (const n of [
    'BROKER_ALLOWED_TENANTS',
    'BROKER_CLIENT_AUDIENCES',
    'BROKER_ALLOWED_CLIENT_OIDS',
    'BROKER_SUBJECT_AUDIENCES',
    'BROKER_POLICY_PATH',
    'ROTATION_SCHEDULE',
  ]) {
    expect(tpl.Values[n]).toBeTruthy();
  }
  expect(tpl.Values.FUNCTIONS_WORKER_RUNTIME).toBe('node');
});
