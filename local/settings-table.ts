import { readdirSync } from 'node:fs';
import { extname, join } from 'node:path';
import { allSettings } from '../shared/config/settings';

/**
 * Prints the configuration table of docs/configuration.md from the settings every shared/config/*.ts module declares,
 * so the table is generated from the code, not remembered. `npm run settings-table`.
 */
export function loadAllSections(dir = join(__dirname, '..', 'shared', 'config')): void {
  const ext = extname(__filename);
  for (const f of readdirSync(dir).sort()) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    if (extname(f) === ext && !f.endsWith('.d.ts')) require(join(dir, f));
  }
}

export function settingsTable(): string {
  loadAllSections();
  const rows = allSettings().map((s) => {
    const def = s.default !== undefined ? `\`${s.default}\`` : s.optional ? '(optional)' : '**required**';
    return `| \`${s.name}\` | ${s.section} | ${def} | ${s.doc.replace(/\|/g, '\\|')}${s.secret ? ' (secret: use a Key Vault reference)' : ''} |`;
  });
  return ['| Setting | Area | Default | Meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

if (require.main === module) process.stdout.write(settingsTable() + '\n');
