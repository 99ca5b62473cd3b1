import { startEntra, tokenShapeFor, type EntraEmulator } from '../../../local/emulators/entra';
import { invoke, captureLogs } from '../../helpers/invoke';
import { CLOUDSQL_RESOURCE, SANDBOX, startFixture, type Fixture } from '../../helpers/foundation';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const explain = testApp.handler('explain');

/**
 * Entra v1.0 and v2.0 access tokens spell the audience differently (#12.5): v2.0 "always the client ID of the API",
 * v1.0 the identifier asked for (App ID URI). The broker accepts both spellings of its own audience and of the APIs'
 * (the sandbox lists both), and refuses a wrong audience in either shape.
 */

let fx: Fixture;
const logs = captureLogs();
beforeAll(async () => {
  fx = await startFixture();
});
afterAll(async () => {
  await fx.stop();
  logs.restore();
});

const explainWith = (gatewayToken: string, subjectToken: string) =>
  invoke(explain, {
    headers: { authorization: `Bearer ${gatewayToken}` },
    form: { subject_token: subjectToken, resource: CLOUDSQL_RESOURCE },
  });

const OTHER_APP_ID = '0e0e0000-0000-4000-8000-00000000e0e0';

describe('the sandbox settings list both spellings', () => {
  test('BROKER_CLIENT_AUDIENCES and BROKER_SUBJECT_AUDIENCES', () => {
    expect(fx.sandbox.env.BROKER_CLIENT_AUDIENCES!.split(',')).toEqual([SANDBOX.clientAudience, SANDBOX.clientAppId]);
    expect(fx.sandbox.env.BROKER_SUBJECT_AUDIENCES!.split(',')).toEqual([SANDBOX.subjectAudience, SANDBOX.subjectAppId]);
  });
});

describe('gateway (client) token', () => {
  test.each([
    ['v1.0, aud = the broker App ID URI', { version: '1.0' as const, aud: SANDBOX.clientAudience }],
    ['v2.0, aud = the broker client id', { version: '2.0' as const, aud: SANDBOX.clientAppId }],
  ])('%s → accepted', async (_n, shape) => {
    const res = await explainWith(await fx.gateway(shape), await fx.caller({ version: '2.0', aud: SANDBOX.subjectAppId }));
    expect(res.status).toBe(200);
  });

  test.each([
    ['v1.0, another App ID URI', { version: '1.0' as const, aud: 'api://other-api' }],
    ["v1.0, the API's App ID URI (a caller token as the gateway's)", { version: '1.0' as const, aud: SANDBOX.subjectAudience }],
    ['v2.0, another client id', { version: '2.0' as const, aud: OTHER_APP_ID }],
    ["v2.0, the API's client id", { version: '2.0' as const, aud: SANDBOX.subjectAppId }],
  ])('%s → 401 token_audience_not_allowed', async (_n, shape) => {
    const res = await explainWith(await fx.gateway(shape), await fx.caller());
    expect(res.status).toBe(401);
    expect(res.json.code).toBe('token_audience_not_allowed');
  });
});

describe('subject (caller) token', () => {
  test.each([
    ['v1.0, aud = the API App ID URI', { version: '1.0' as const, aud: SANDBOX.subjectAudience }],
    ['v2.0, aud = the API client id', { version: '2.0' as const, aud: SANDBOX.subjectAppId }],
  ])('%s → accepted and judged', async (_n, shape) => {
    const res = await explainWith(await fx.gateway(), await fx.caller(shape));
    expect(res.status).toBe(200);
  });

  test.each([
    ['v1.0, another App ID URI', { version: '1.0' as const, aud: 'api://other-api' }],
    ["v1.0, the broker's App ID URI", { version: '1.0' as const, aud: SANDBOX.clientAudience }],
    ['v2.0, another client id', { version: '2.0' as const, aud: OTHER_APP_ID }],
    ["v2.0, the broker's client id", { version: '2.0' as const, aud: SANDBOX.clientAppId }],
  ])('%s → refused (token_audience_not_allowed)', async (_n, shape) => {
    const res = await explainWith(await fx.gateway(), await fx.caller(shape));
    expect(res.status).toBe(401);
    expect(res.json.code).toBe('token_audience_not_allowed');
  });
});

describe('Entra emulator: the resource decides version and aud, as Entra does', () => {
  let entra: EntraEmulator;
  const apps = [
    { appId: SANDBOX.subjectAppId, identifierUris: [SANDBOX.subjectAudience] },
    { appId: OTHER_APP_ID, identifierUris: ['api://v2-api'], accessTokenAcceptedVersion: 2 as const },
  ];
  beforeAll(async () => {
    entra = await startEntra({ tenants: [SANDBOX.tenantId], apps });
  });
  afterAll(async () => {
    await entra.close();
  });
  const claims = (jwt: string) =>
    JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;

  test('accessTokenAcceptedVersion null: v1.0, aud = the identifier as requested (URI or client id), appid', async () => {
    expect(claims(await entra.mint({ resource: SANDBOX.subjectAudience }))).toMatchObject({
      ver: '1.0',
      aud: SANDBOX.subjectAudience,
      iss: `https://sts.windows.net/${SANDBOX.tenantId}/`,
    });
    expect(claims(await entra.mint({ resource: `${SANDBOX.subjectAudience}/.default` }))).toMatchObject({
      ver: '1.0',
      aud: SANDBOX.subjectAudience,
    });
    expect(claims(await entra.mint({ resource: SANDBOX.subjectAppId }))).toMatchObject({
      ver: '1.0',
      aud: SANDBOX.subjectAppId,
      appid: expect.any(String),
    });
  });

  test('accessTokenAcceptedVersion 2: v2.0, aud = the client id even when the URI was requested, azp', async () => {
    const c = claims(await entra.mint({ resource: 'api://v2-api' }));
    expect(c).toMatchObject({
      ver: '2.0',
      aud: OTHER_APP_ID,
      iss: `https://login.microsoftonline.com/${SANDBOX.tenantId}/v2.0`,
      azp: expect.any(String),
    });
    expect(c).not.toHaveProperty('appid');
    expect(tokenShapeFor(apps, 'api://v2-api')).toEqual({ version: '2.0', aud: OTHER_APP_ID, appId: OTHER_APP_ID });
  });

  test('an unknown resource is refused (AADSTS500011)', async () => {
    await expect(entra.mint({ resource: 'api://nobody' })).rejects.toThrow(/AADSTS500011/);
  });
});
