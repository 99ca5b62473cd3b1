import { coreConfig } from '../../../shared/config/core';
import { ConfigError } from '../../../shared/errors';
import { allSettings, defineSection } from '../../../shared/config/settings';
import { str } from '../../../shared/config/setting-types';
import { loadAllSections } from '../../../local/settings-table';
import { testContext } from '../../helpers/app';
import type { AppContext } from '../../../shared/app/context';

let app: AppContext = testContext();
const policyStore = () => app.policy.store();
const resetPolicyStore = () => {
  app = testContext();
};

const valid = {
  BROKER_ALLOWED_TENANTS: '72f988bf-0000-4000-8000-00000000c0de',
  BROKER_CLIENT_AUDIENCES: 'api://token-broker',
  BROKER_ALLOWED_CLIENT_OIDS: '9a7e0000-0000-4000-8000-0000000a9140',
  BROKER_SUBJECT_AUDIENCES: 'api://orders-api',
  BROKER_POLICY_PATH: '/tmp/policy.json',
};

describe('configuration', () => {
  test('valid settings load, with defaults', () => {
    const cfg = coreConfig.parse(valid);
    expect(cfg.authorityHost).toBe('https://login.microsoftonline.com');
    expect(cfg.clockSkewSeconds).toBe(60);
    expect(cfg.allowedTenants).toEqual(['72f988bf-0000-4000-8000-00000000c0de']);
  });

  test('every missing setting is reported at once, by name', () => {
    let err: ConfigError | undefined;
    try {
      coreConfig.parse({});
    } catch (e) {
      err = e as ConfigError;
    }
    expect(err).toBeInstanceOf(ConfigError);
    for (const name of [
      'BROKER_ALLOWED_TENANTS',
      'BROKER_CLIENT_AUDIENCES',
      'BROKER_ALLOWED_CLIENT_OIDS',
      'BROKER_SUBJECT_AUDIENCES',
    ]) {
      expect(err!.message).toContain(`${name} is required`);
    }
    expect(err!.problems).toHaveLength(4);
  });

  test('the policy source: BROKER_POLICY_URL or BROKER_POLICY_PATH, exactly one (503 naming them otherwise)', async () => {
    const saved = { ...process.env };
    try {
      Object.assign(process.env, valid);
      delete process.env.BROKER_POLICY_PATH;
      delete process.env.BROKER_POLICY_URL;
      resetPolicyStore();
      await expect(policyStore()).rejects.toMatchObject({
        code: 'config_invalid',
        message: expect.stringMatching(/BROKER_POLICY_URL.*BROKER_POLICY_PATH/),
      });
      process.env.BROKER_POLICY_PATH = '/tmp/policy.json';
      process.env.BROKER_POLICY_URL = 'https://acct.blob.core.windows.net/policy/policy.json';
      resetPolicyStore();
      await expect(policyStore()).rejects.toMatchObject({ code: 'config_invalid', message: expect.stringMatching(/only one/) });
      process.env.BROKER_POLICY_URL = 'https://acct.blob.core.windows.net/policy.json?sig=x';
      delete process.env.BROKER_POLICY_PATH;
      resetPolicyStore();
      await expect(policyStore()).rejects.toMatchObject({
        code: 'config_invalid',
        message: expect.stringMatching(/BROKER_POLICY_URL must be a plain blob URL/),
      });
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
      resetPolicyStore();
    }
  });

  test('invalid values name the setting and say what is expected', () => {
    let message = '';
    try {
      coreConfig.parse({
        ...valid,
        BROKER_ALLOWED_TENANTS: 'contoso',
        BROKER_CLOCK_SKEW_SECONDS: '9000',
        ENTRA_AUTHORITY_HOST: 'ftp://x',
        LOG_LEVEL: 'loud',
      });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain('BROKER_ALLOWED_TENANTS has an invalid entry "contoso": each must be a tenant GUID');
    expect(message).toContain('ENTRA_AUTHORITY_HOST must use https: (http: only on a loopback host), got ftp:');
    expect(message).toContain('BROKER_CLOCK_SKEW_SECONDS must be between 0 and 300, got 9000');
    expect(message).toContain('LOG_LEVEL must be one of debug, info, warn, error');
  });

  test('importing every function module with no settings does not throw (loading is lazy)', () => {
    const saved = { ...process.env };
    try {
      for (const k of Object.keys(process.env)) if (k.startsWith('BROKER_')) delete process.env[k];
      jest.isolateModules(() => {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        expect(() => require('../../../functions/token')).not.toThrow();
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        expect(() => require('../../../functions/explain')).not.toThrow();
      });
    } finally {
      process.env = saved;
    }
  });

  test('every declared setting has a name and a description', () => {
    for (const s of allSettings()) {
      expect(s.name).toMatch(/^[A-Z][A-Z0-9_]+$/);
      expect(s.doc.length).toBeGreaterThan(5);
    }
  });
});

describe('each setting is declared once (issue #18 item 5)', () => {
  test('a second declaration of a setting under another spec is refused at load, naming both sections', () => {
    defineSection('probe-a', { x: str('PROBE_DECLARED_ONCE', { doc: 'a', default: 'x' }) });
    expect(() => defineSection('probe-b', { y: str('PROBE_DECLARED_ONCE', { doc: 'b', default: 'y' }) })).toThrow(
      'setting PROBE_DECLARED_ONCE is declared twice (sections probe-a and probe-b): share one spec',
    );
  });

  test('the app declares every setting once (shared specs: AZURE_CLIENT_ID, GOOGLE_OAUTH_TOKEN_URL, LOG_LEVEL)', () => {
    loadAllSections(); // every shared/config module: a duplicate would have thrown here
    const names = allSettings().map((s) => s.name);
    expect(names.length).toBe(new Set(names).size);
    for (const n of ['AZURE_CLIENT_ID', 'GOOGLE_OAUTH_TOKEN_URL', 'LOG_LEVEL'])
      expect(names.filter((x) => x === n)).toHaveLength(1);
  });

  test('the logger reads LOG_LEVEL through the config loader; an invalid value logs at info instead of failing', () => {
    const lines: string[] = [];
    const ctx = testContext({ logSink: (r) => lines.push(`${r.level}:${r.msg}`) });
    const createLogger = () => ctx.logger();
    const saved = process.env.LOG_LEVEL;
    try {
      process.env.LOG_LEVEL = 'warn';
      createLogger().info('hidden at warn');
      createLogger().warn('shown at warn');
      process.env.LOG_LEVEL = 'loud';
      createLogger().debug('hidden at the info fallback');
      createLogger().info('shown at the info fallback');
    } finally {
      if (saved === undefined) delete process.env.LOG_LEVEL;
      else process.env.LOG_LEVEL = saved;
    }
    expect(lines).toEqual(['warn:shown at warn', 'info:shown at the info fallback']);
  });
});
