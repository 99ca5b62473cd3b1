import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { allSettings } from '../../shared/config/settings';
import { loadAllSections } from '../../local/settings-table';

/**
 * Deployment and code cannot drift: every app setting the code declares is either set by the Bicep that deploys
 * the Function, or listed here as deliberately left to its default / sandbox-only, with the reason; every app
 * setting the Bicep sets is one the code declares (or a platform setting); and every one is in docs/configuration.md.
 */

const root = join(__dirname, '..', '..');
const bicep = readFileSync(join(root, 'infra', 'modules', 'functionapp.bicep'), 'utf8');
const readme = readFileSync(join(root, 'docs', 'configuration.md'), 'utf8');

/** App settings in the Bicep: `{ name: 'X', value: ... }` entries. */
const bicepSettings = new Set([...bicep.matchAll(/\{ name: '([A-Za-z0-9_]+)', value: /g)].map((m) => m[1]!));

/** Read by the Functions platform or the Azure SDKs, not by shared/config. */
const PLATFORM = new Set([
  'AzureWebJobsStorage__accountName',
  'AzureWebJobsStorage__credential',
  'AzureWebJobsStorage__clientId',
  'APPLICATIONINSIGHTS_AUTHENTICATION_STRING',
]);

/** Declared settings the Bicep does not set, and why. */
const NOT_DEPLOYED: Record<string, string> = {
  KEY_VAULT_CA_FILE: 'sandbox only (loopback vault)',
  COSMOS_CA_FILE: 'sandbox only (loopback Cosmos emulator)',
  GOOGLE_SA_KEY_SECRET: 'set only when googleAuthMode is sa-key (conditional entry in the Bicep)',
  BROKER_POLICY_PATH: 'local use and tests: Azure reads the live policy from BROKER_POLICY_URL',
  BROKER_POLICY_CA_FILE: 'sandbox only (loopback Azurite)',
  BROKER_ADMIN_AUDIENCES: "default: the broker's own audience (BROKER_CLIENT_AUDIENCES)",
  QUERY_MASK_HASH_KEY:
    'only when a catalog entry declares a hash mask: the operator sets it as a Key Vault reference (docs/mcp.md), never a value in the Bicep',
  ROTATION_LOCK_URL: 'default: rotation-lock beside the policy blob (same container, same role assignment)',
};

function declared(): { name: string; required: boolean; hasDefault: boolean }[] {
  loadAllSections();
  return allSettings().map((s) => ({
    name: s.name,
    required: s.default === undefined && !s.optional,
    hasDefault: s.default !== undefined,
  }));
}

test('the Bicep sets every required setting, and every optional one without a default that production needs', () => {
  const missing = declared()
    .filter((s) => !s.hasDefault && !bicepSettings.has(s.name) && !(s.name in NOT_DEPLOYED))
    .map((s) => s.name);
  expect(missing).toEqual([]);
  expect(bicep).toMatch(/name: 'GOOGLE_SA_KEY_SECRET', value: googleSaKeySecret/);
});

test('every app setting the Bicep sets is declared by the code (or read by the platform)', () => {
  const names = new Set(declared().map((s) => s.name));
  expect(bicepSettings.size).toBeGreaterThan(15);
  const unknown = [...bicepSettings].filter((b) => !names.has(b) && !PLATFORM.has(b));
  expect(unknown).toEqual([]);
});

test('sandbox-only settings are never deployed', () => {
  for (const n of ['KEY_VAULT_CA_FILE', 'COSMOS_CA_FILE', 'BROKER_POLICY_CA_FILE', 'BROKER_POLICY_PATH'])
    expect(bicepSettings.has(n)).toBe(false);
  expect(bicep).not.toMatch(/IDENTITY_ENDPOINT|IDENTITY_HEADER|SANDBOX_/);
});

test('the policy lives in its container, versioned, with a container-scoped Storage Blob Data Contributor assignment', () => {
  const storage = readFileSync(join(root, 'infra', 'modules', 'storage.bicep'), 'utf8');
  expect(storage).toMatch(/isVersioningEnabled: true/);
  expect(storage).toMatch(/resource policyContainer [^\n]*containers@[^\n]*\n\s*parent: blobService\n\s*name: 'policy'/);
  // Contributor (ba92f5b4-…) scoped to the container, never the account.
  expect(storage).toMatch(
    /scope: policyContainer\n\s*name: guid\(policyContainer\.id, brokerPrincipalId, 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'\)/,
  );
  expect(bicep).toMatch(/name: 'BROKER_POLICY_URL', value: policyBlobUrl/);
});

test('no deployed setting carries a secret: keys stay in Key Vault', () => {
  expect(bicep).not.toMatch(/listKeys|AccountKey=|primaryMasterKey|connectionString\(/i);
  expect([...bicepSettings].filter((n) => /KEY$|SECRET$|PASSWORD/.test(n) && n !== 'GOOGLE_SA_KEY_SECRET')).toEqual([]);
});

test('every setting the code declares or the Bicep sets is documented in docs/configuration.md', () => {
  const undocumented = [
    ...new Set([...declared().map((s) => s.name), ...[...bicepSettings].filter((b) => !PLATFORM.has(b))]),
  ].filter((n) => !readme.includes(`\`${n}\``));
  expect(undocumented).toEqual([]);
});
