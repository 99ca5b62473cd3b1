import { rememberSubjectToken } from '../../../shared/auth/subject-token';
import type { Principal } from '../../../shared/auth/principal';
import type { ManagedIdentities } from '../../../shared/azure/managed-identity';
import { CallerLogins, TOKEN_EXCHANGE_SCOPE } from '../../../shared/cloudsql/caller-chain';
import { BrokerError } from '../../../shared/errors';

/**
 * The caller chain (issue #28) against stubbed upstreams: the requests it makes (OBO with the managed identity's
 * FIC assertion, STS workforce exchange with userProject), single-flight and refresh before expiry per caller, and
 * each refusal mapped to what is missing (never upstream text).
 */

const TID = '72f988bf-0000-4000-8000-00000000c0de';
const OID = '0b5e0000-0000-4000-8000-00000000ead1';
const ENV: Record<string, string> = {
  BROKER_ALLOWED_TENANTS: TID,
  BROKER_CLIENT_AUDIENCES: 'api://token-broker',
  BROKER_ALLOWED_CLIENT_OIDS: '9a7e0000-0000-4000-8000-0000000a9140',
  BROKER_SUBJECT_AUDIENCES: 'api://orders-api',
  BROKER_POLICY_PATH: '/tmp/policy.json',
  ENTRA_AUTHORITY_HOST: 'https://login.example',
  GOOGLE_STS_TOKEN_URL: 'https://sts.example/v1/token',
  CALLER_OBO_CLIENT_ID: '0a9e0000-0000-4000-8000-0000000a9101',
  CALLER_WORKFORCE_TOKEN_SCOPE: 'api://google-workforce/.default',
  CALLER_WORKFORCE_AUDIENCE: '//iam.googleapis.com/locations/global/workforcePools/callers/providers/entra-obo',
  CALLER_WORKFORCE_USER_PROJECT: 'my-project',
};
const saved = { ...process.env };
let now = 1_800_000_000_000;
let calls: { url: string; body: URLSearchParams }[] = [];
let answer: (url: string) => Response;

const jwt = (claims: Record<string, unknown>) => `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;
const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
const ok = (url: string) =>
  url.includes('login.example')
    ? json(200, { access_token: jwt({ oid: OID, tid: TID }), token_type: 'Bearer', expires_in: 3600 })
    : json(200, { access_token: `ya29.${calls.length}`, expires_in: 600, token_type: 'Bearer' });

const subject = (): Principal =>
  rememberSubjectToken(
    {
      tenantId: TID,
      objectId: OID,
      roles: [],
      scopes: [],
      groups: [],
      audience: 'api://orders-api',
      issuer: 'i',
      version: '1.0',
      expiresAt: 0,
    },
    'the-callers-token',
  );

const identities = {
  get: () => ({ getToken: async (scope: string) => ({ token: `mi-for-${scope}`, expiresOnTimestamp: now + 3_600_000 }) }),
} as unknown as ManagedIdentities;
const logins = () => new CallerLogins({ identities, now: () => now, settingsRecheckMs: 0 });

beforeEach(() => {
  Object.assign(process.env, ENV);
  calls = [];
  answer = ok;
  jest.spyOn(globalThis, 'fetch').mockImplementation(async (url, init) => {
    const u = url as string; // the chain passes URLs as strings and bodies as form strings
    calls.push({ url: u, body: new URLSearchParams(init?.body as string) });
    return answer(u);
  });
});
afterEach(() => {
  jest.restoreAllMocks();
  process.env = { ...saved };
});

test('OBO with the managed identity assertion, then STS at the workforce provider with userProject', async () => {
  const l = await logins().login(subject());
  expect(l).toMatchObject({ token: 'ya29.2', databaseUser: OID, cached: false });
  const [obo, sts] = calls;
  expect(obo!.url).toBe(`https://login.example/${TID}/oauth2/v2.0/token`);
  expect(Object.fromEntries(obo!.body)).toEqual({
    grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
    client_id: ENV.CALLER_OBO_CLIENT_ID,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: `mi-for-${TOKEN_EXCHANGE_SCOPE}`,
    assertion: 'the-callers-token',
    scope: 'api://google-workforce/.default',
    requested_token_use: 'on_behalf_of',
  });
  expect(sts!.url).toBe(ENV.GOOGLE_STS_TOKEN_URL);
  expect(Object.fromEntries(sts!.body)).toMatchObject({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    audience: ENV.CALLER_WORKFORCE_AUDIENCE,
    scope: 'https://www.googleapis.com/auth/sqlservice.login',
    requested_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
    options: '{"userProject":"my-project"}',
  });
});

test("an MCP caller's on-behalf-of request is made by the MCP resource app its token is for (CALLER_OBO_MCP_CLIENT_ID)", async () => {
  const MCP = '3c900000-0000-4000-8000-0000000003c9';
  process.env.CALLER_OBO_MCP_CLIENT_ID = MCP;
  const mcpCaller = (audience: string) => rememberSubjectToken({ ...subject(), version: '2.0', audience }, 'mcp-token');
  await logins().login(mcpCaller(MCP));
  expect(calls[0]!.body.get('client_id')).toBe(MCP);
  expect(calls[0]!.body.get('assertion')).toBe('mcp-token');
  calls = [];
  await logins().login(mcpCaller(`api://${MCP.toUpperCase()}`));
  expect(calls[0]!.body.get('client_id')).toBe(MCP);
  // Any other audience (the API's token, v1 App ID URI or not): CALLER_OBO_CLIENT_ID, as before.
  calls = [];
  await logins().login(subject());
  expect(calls[0]!.body.get('client_id')).toBe(ENV.CALLER_OBO_CLIENT_ID);
  // Unset: an MCP caller's token goes to CALLER_OBO_CLIENT_ID (the one-app set-up; Entra refuses another audience).
  delete process.env.CALLER_OBO_MCP_CLIENT_ID;
  calls = [];
  await logins().login(mcpCaller(MCP));
  expect(calls[0]!.body.get('client_id')).toBe(ENV.CALLER_OBO_CLIENT_ID);
});

test('concurrent logins of one caller share one chain; a cached login is refreshed in the background before expiry', async () => {
  const c = logins();
  const all = await Promise.all(Array.from({ length: 20 }, () => c.login(subject())));
  expect(calls).toHaveLength(2);
  expect(new Set(all.map((a) => a.token))).toEqual(new Set(['ya29.2']));
  now += 200_000; // 400 s left: served from the cache, no refresh yet
  expect((await c.login(subject())).cached).toBe(true);
  expect(calls).toHaveLength(2);
  now += 150_000; // 250 s left: still served, one background refresh starts
  expect((await c.login(subject())).token).toBe('ya29.2');
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  expect(calls).toHaveLength(4);
  expect((await c.login(subject())).token).toBe('ya29.4');
});

test.each([
  [
    'Entra: no consent (AADSTS65001)',
    'login',
    400,
    { error: 'invalid_grant', error_codes: [65001] },
    'caller_identity_refused',
    'consent_required',
  ],
  [
    'Entra: assertion refused (AADSTS50013)',
    'login',
    400,
    { error: 'invalid_grant', error_codes: [50013] },
    'caller_identity_refused',
    'assertion_rejected',
  ],
  [
    'Entra: no matching FIC (AADSTS700211)',
    'login',
    401,
    { error: 'invalid_client', error_codes: [700211] },
    'upstream_denied',
    'federated_credential',
  ],
  ['Entra: down', 'login', 503, {}, 'upstream_unavailable', undefined],
  ['STS: attribute condition', 'sts', 400, { error: 'unauthorized_client' }, 'caller_identity_refused', 'attribute_condition'],
  ['STS: token refused', 'sts', 400, { error: 'invalid_grant' }, 'caller_identity_refused', 'workforce_token_rejected'],
  ['STS: provider gone', 'sts', 400, { error: 'invalid_target' }, 'upstream_denied', 'workforce_provider'],
  ['STS: throttled', 'sts', 429, {}, 'upstream_throttled', undefined],
])('%s', async (_name, where, status, body, code, refusal) => {
  answer = (url) => (url.includes(where === 'login' ? 'login.example' : 'sts.example') ? json(status, body) : ok(url));
  const err = await logins()
    .login(subject())
    .catch((e: unknown) => e);
  expect(err).toBeInstanceOf(BrokerError);
  expect((err as BrokerError).code).toBe(code);
  expect((err as BrokerError).detail?.refusal).toBe(refusal);
  expect((err as BrokerError).message).not.toMatch(/AADSTS|unauthorized_client|invalid_grant/);
});

test('a missing setting is 503 config_invalid naming it', async () => {
  delete process.env.CALLER_WORKFORCE_AUDIENCE;
  const err = (await logins()
    .login(subject())
    .catch((e: unknown) => e)) as BrokerError;
  expect(err.code).toBe('config_invalid');
  expect(err.message).toMatch(/CALLER_WORKFORCE_AUDIENCE/);
});
