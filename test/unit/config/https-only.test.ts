import { policyConfig } from '../../../shared/config/policy';
import { coreConfig } from '../../../shared/config/core';
import { googleConfig } from '../../../shared/config/google';
import { rotationConfig, saKeyConfig } from '../../../shared/config/rotation';
import { cloudSqlConfig } from '../../../shared/config/cloudsql';
import { keyVaultConfig } from '../../../shared/config/keyvault';
import { cosmosConfig } from '../../../shared/config/cosmos';
import { ConfigError } from '../../../shared/errors';
import { allSettings, type Env, type Section, type SettingSpec } from '../../../shared/config/settings';
import { mcpConfig } from '../../../shared/config/mcp';
import { toBrokerError } from '../../../shared/errors';

/**
 * #12.8: every production endpoint setting refuses plain HTTP outside loopback (a token sent to it would
 * travel in the clear), naming the setting; the sandbox's HTTP emulators on 127.0.0.1 stay allowed.
 */

const core: Env = {
  BROKER_ALLOWED_TENANTS: '72f988bf-0000-4000-8000-00000000c0de',
  BROKER_CLIENT_AUDIENCES: 'api://token-broker',
  BROKER_ALLOWED_CLIENT_OIDS: '9a7e0000-0000-4000-8000-0000000a9140',
  BROKER_SUBJECT_AUDIENCES: 'api://orders-api',
  BROKER_POLICY_PATH: '/tmp/policy.json',
  KEY_VAULT_URL: 'https://v.vault.azure.net',
  GOOGLE_SA_KEY_SECRET: 'sa-key',
  MCP_AUDIENCES: '6f1f0000-0000-4000-8000-00000000c0de',
  MCP_ALLOWED_CLIENT_APP_IDS: '6f1f0000-0000-4000-8000-0000000a9e47',
};

type AnySection = Section<Record<string, SettingSpec<unknown>>>;
const rows: [setting: string, section: AnySection, loopbackHttp: boolean, wrap?: (u: string) => string][] = [
  ['ENTRA_AUTHORITY_HOST', coreConfig, true],
  ['GOOGLE_STS_TOKEN_URL', googleConfig, true],
  ['GOOGLE_IAM_CREDENTIALS_ENDPOINT', googleConfig, true],
  ['GOOGLE_IAM_ENDPOINT', rotationConfig, true],
  ['GOOGLE_OAUTH_TOKEN_URL', saKeyConfig, true],
  ['CLOUDSQL_ADMIN_ENDPOINT', cloudSqlConfig, true],
  ['KEY_VAULT_URL', keyVaultConfig, false],
  ['COSMOS_ENDPOINTS', cosmosConfig, false, (u) => `orders=${u}`],
  ['COSMOS_MANAGEMENT_ENDPOINT', cosmosConfig, false],
  // Blob URLs (the live policy, the rotation lease): https only, loopback included (Azurite serves TLS).
  ['BROKER_POLICY_URL', policyConfig, false, (u) => `${u.replace(/\/$/, '')}/devstoreaccount1/policy/policy.json`],
  // The MCP resource URL: the origin an agent host connects to (plain HTTP only for a loopback development URL).
  ['MCP_RESOURCE_URL', mcpConfig, true, (u) => `${u.replace(/\/$/, '')}/api/mcp`],
  ['ROTATION_LOCK_URL', rotationConfig, false, (u) => `${u.replace(/\/$/, '')}/devstoreaccount1/policy/rotation-lock`],
];

function problemsOf(section: AnySection, env: Env): string[] {
  try {
    section.parse(env);
    return [];
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return [...(e as ConfigError).problems];
  }
}

describe('HTTPS only outside loopback (every production endpoint setting)', () => {
  test.each(rows)('%s: http: to a public host is refused, naming the setting', (name, section, _loopback, wrap = (u) => u) => {
    for (const bad of [
      'http://example.com',
      'http://sts.googleapis.com/v1/token',
      'http://10.0.0.5:8080',
      'http://127.0.0.1.nip.io',
    ]) {
      const problems = problemsOf(section, { ...core, [name]: wrap(bad) });
      expect(problems.some((p) => p.startsWith(`${name} `))).toBe(true);
      // the section error is the broker's config_invalid (503), still naming the setting
      let err: unknown;
      try {
        section.parse({ ...core, [name]: wrap(bad) });
      } catch (e) {
        err = e;
      }
      const be = toBrokerError(err);
      expect(be.code).toBe('config_invalid');
      expect(be.message).toContain(name);
    }
  });

  test.each(rows)(
    '%s: https: is accepted; http: on loopback only where the sandbox needs it',
    (name, section, loopbackHttp, wrap = (u) => u) => {
      expect(problemsOf(section, { ...core, [name]: wrap('https://example.com/') })).toEqual([]);
      for (const lo of ['http://127.0.0.1:7101', 'http://localhost:7101', 'http://[::1]:7101']) {
        const problems = problemsOf(section, { ...core, [name]: wrap(lo) });
        if (loopbackHttp) expect(problems).toEqual([]);
        else expect(problems.some((p) => p.startsWith(`${name} `))).toBe(true);
      }
    },
  );

  test('credentials in an endpoint URL are refused', () => {
    expect(
      problemsOf(googleConfig as unknown as AnySection, { GOOGLE_STS_TOKEN_URL: 'https://u:p@sts.googleapis.com/v1/token' }),
    ).toEqual(['GOOGLE_STS_TOKEN_URL must not carry credentials (user:password@)']);
  });

  test('the table covers every endpoint setting the broker declares', () => {
    const endpointSettings = allSettings()
      .filter((s) => /^https:\/\//.test(s.default ?? '') || /_(URL|ENDPOINT|ENDPOINTS|HOST)$/.test(s.name))
      .map((s) => s.name)
      .filter((n) => !/_CA_FILE$/.test(n));
    expect(endpointSettings.filter((n) => !rows.some(([r]) => r === n))).toEqual([]);
  });
});
