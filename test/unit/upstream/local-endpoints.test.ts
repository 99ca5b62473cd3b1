import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BrokerError } from '../../../shared/errors';
import { isLoopbackUrl, localEndpointCa } from '../../../shared/upstream/local-endpoints';

const dir = mkdtempSync(join(tmpdir(), 'sandbox-ca-'));
const pem = join(dir, 'ca.pem');
writeFileSync(pem, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const code = (f: () => unknown) => {
  try {
    f();
    return 'none';
  } catch (e) {
    return e instanceof BrokerError ? e.code : 'other';
  }
};

test('only loopback hosts count as the sandbox', () => {
  expect(isLoopbackUrl('https://127.0.0.1:7108')).toBe(true);
  expect(isLoopbackUrl('https://localhost/')).toBe(true);
  expect(isLoopbackUrl('https://[::1]:443/')).toBe(true);
  expect(isLoopbackUrl('https://my-vault.vault.azure.net')).toBe(false);
  expect(isLoopbackUrl('https://127.0.0.1.nip.io/')).toBe(false);
});

test('a sandbox CA is trusted only for a loopback endpoint, and an unreadable file is config_invalid', () => {
  const base = { setting: 'COSMOS_CA_FILE', service: 'CosmosDB' };
  expect(localEndpointCa({ ...base, caFile: undefined, url: 'https://acct.documents.azure.com:443/' })).toBeUndefined();
  expect(localEndpointCa({ ...base, caFile: pem, url: 'https://127.0.0.1:7107/' })).toContain('BEGIN CERTIFICATE');
  expect(code(() => localEndpointCa({ ...base, caFile: pem, url: 'https://acct.documents.azure.com:443/' }))).toBe(
    'config_invalid',
  );
  expect(code(() => localEndpointCa({ ...base, caFile: join(dir, 'missing.pem'), url: 'https://127.0.0.1:7107/' }))).toBe(
    'config_invalid',
  );
});
