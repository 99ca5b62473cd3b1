import { settle } from '../../../local/emulators/harness';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SANDBOX } from '../../../local/ids';
import { googleConfig } from '../../../shared/config/google';
import { invoke } from '../../helpers/invoke';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const healthHandler = testApp.handler('health');
const tokenHandler = testApp.handler('token');

/** Google settings: validation, the keyless/sa-key mode switch, and the readiness check. */

const G = SANDBOX.google;
let sb: Sandbox;
let restoreEnv: () => void;
let gateway: string;
let reader: string;

beforeAll(async () => {
  sb = await startSandbox();
  restoreEnv = sb.applyEnv();
  gateway = await sb.entra.mint({ oid: SANDBOX.gatewayObjectId, appId: SANDBOX.gatewayAppId, aud: SANDBOX.clientAudience });
  reader = await sb.entra.mint({ oid: SANDBOX.readerObjectId, roles: ['Orders.Read'], aud: SANDBOX.subjectAudience });
});

afterAll(async () => {
  restoreEnv();
  await sb.stop();
});

beforeEach(() => testApp.renew());

async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const prev: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(vars)) {
    prev[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(prev)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

const exchange = () =>
  invoke(tokenHandler, {
    headers: { authorization: `Bearer ${gateway}` },
    form: {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: reader,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      resource: `cloudsql://${G.project}/${G.region}/${G.instance}/${G.database}`,
    },
  });

const health = () => invoke(healthHandler, { method: 'GET', url: 'http://127.0.0.1:7071/api/health' });

test('defaults point at Google; every bad setting is reported by name at once', () => {
  const cfg = googleConfig.parse({});
  expect(cfg).toMatchObject({
    authMode: 'keyless',
    stsTokenUrl: 'https://sts.googleapis.com/v1/token',
    iamCredentialsEndpoint: 'https://iamcredentials.googleapis.com',
    minRemainingSeconds: 300,
    refreshAheadSeconds: 600,
  });
  expect(() =>
    googleConfig.parse({
      GOOGLE_AUTH_MODE: 'password',
      GOOGLE_WIF_AUDIENCE: 'projects/1/pools/x',
      GOOGLE_STS_TOKEN_URL: 'not a url',
    }),
  ).toThrow(/GOOGLE_AUTH_MODE.*GOOGLE_WIF_AUDIENCE.*GOOGLE_STS_TOKEN_URL/);
});

test("GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE: no default; Entra's token exchange audience (either spelling) and non-URIs are refused by name", () => {
  expect(googleConfig.parse({}).subjectTokenAudience).toBeUndefined();
  expect(
    googleConfig.parse({ GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE: 'api://6f1f0000-0000-4000-8000-000000009e1f' }).subjectTokenAudience,
  ).toBe('api://6f1f0000-0000-4000-8000-000000009e1f');
  for (const bad of [
    'api://AzureADTokenExchange',
    'api://azureadtokenexchange/.default',
    'api://AzureADTokenExchange/',
    'fb60f99c-7a34-4190-8149-302f77469936',
    'orders',
  ]) {
    expect(() => googleConfig.parse({ GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE: bad })).toThrow(/GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE/);
  }
});

test('keyless without GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE → 503 config_invalid naming it, readiness fails; the managed identity is not asked', async () => {
  const wifTokens = () => sb.msi.issued.filter((t) => t.resource === SANDBOX.google.wifAppIdUri).length;
  const before = wifTokens();
  await withEnv({ GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE: undefined }, async () => {
    const res = await exchange();
    expect(res.status).toBe(503);
    expect(res.json.reason).toBe('config_invalid');
    const h = await health();
    expect((h.json.checks as Record<string, { status: string; detail: string }>).google).toEqual({
      status: 'fail',
      detail: expect.stringContaining('GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE'),
    });
  });
  expect(wifTokens()).toBe(before);
});

test('keyless without GOOGLE_WIF_AUDIENCE → 503 config_invalid, and readiness says "skipped"', async () => {
  await withEnv({ GOOGLE_WIF_AUDIENCE: undefined }, async () => {
    const res = await exchange();
    expect(res.status).toBe(503);
    expect(res.json.reason).toBe('config_invalid');
    expect(res.headers.get('retry-after')).toBeTruthy();
    const h = await health();
    expect((h.json.checks as Record<string, { status: string }>).google!.status).toBe('skipped');
  });
});

test('an invalid Google setting → 503 config_invalid naming no secret, readiness fails', async () => {
  await withEnv({ GOOGLE_TOKEN_CACHE_MAX_ENTRIES: '0' }, async () => {
    const res = await exchange();
    expect(res.status).toBe(503);
    expect(res.json.reason).toBe('config_invalid');
    const h = await health();
    expect(h.status).toBe(503);
    expect((h.json.checks as Record<string, { status: string; detail: string }>).google).toMatchObject({ status: 'fail' });
  });
});

test('GOOGLE_AUTH_MODE=sa-key without GOOGLE_SA_KEY_SECRET is a 503 config_invalid naming it', async () => {
  await withEnv({ GOOGLE_AUTH_MODE: 'sa-key' }, async () => {
    const res = await exchange();
    expect(res.status).toBe(503);
    expect(res.json.reason).toBe('config_invalid');
    expect(sb.google.sts.count('sts.token')).toBe(0);
  });
});

test('readiness: ok with the emulators up, fail when STS is unreachable', async () => {
  const ok = await health();
  expect((ok.json.checks as Record<string, { status: string }>).google!.status).toBe('ok');
  sb.google.sts.inject({ fault: { kind: 'down' } });
  await settle(sb.google.sts);
  try {
    // A different timeout makes a different cache key, so the check runs again.
    await withEnv({ BROKER_UPSTREAM_TIMEOUT_MS: '1500' }, async () => {
      const h = await health();
      expect(h.status).toBe(503);
      expect((h.json.checks as Record<string, { status: string; detail: string }>).google).toMatchObject({ status: 'fail' });
    });
  } finally {
    sb.google.sts.clearFaults();
    await settle(sb.google.sts);
  }
});

test('the happy path still works after the settings are restored', async () => {
  expect((await exchange()).status).toBe(200);
});
