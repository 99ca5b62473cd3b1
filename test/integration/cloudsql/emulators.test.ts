import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SANDBOX } from '../../../local/ids';
import { CLOUD_PLATFORM_SCOPE, SQL_LOGIN_SCOPE } from '../../../local/emulators/google/state';
import { compileAttributeCondition } from '../../../local/emulators/google/sts';

/** The Google STS and IAM Credentials emulators are strict where the real services are. */

let sb: Sandbox;
let audience: string;
let stsUrl: string;
let iamUrl: string;

beforeAll(async () => {
  sb = await startSandbox();
  audience = sb.env.GOOGLE_WIF_AUDIENCE!;
  stsUrl = `${sb.google.sts.url}/v1/token`;
  iamUrl = sb.google.iamcredentials.url;
});

afterAll(async () => {
  await sb.stop();
});

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';

/** A token shaped like the Function's managed identity token for the WIF app registration (v1.0, aud = its App ID URI). */
const miToken = (over: Parameters<Sandbox['entra']['mint']>[0] = {}) =>
  sb.entra.mint({
    oid: sb.msi.objectId,
    appId: sb.msi.clientId,
    aud: SANDBOX.google.wifAppIdUri,
    version: '1.0',
    ...over,
    extra: { sub: sb.msi.objectId, ...(over.extra ?? {}) },
  });

async function msiToken(
  resource: string,
): Promise<{ token: string; header: Record<string, unknown>; claims: Record<string, unknown> }> {
  const res = await fetch(`${sb.msi.endpoint}?api-version=2019-08-01&resource=${encodeURIComponent(resource)}`, {
    headers: { 'x-identity-header': sb.msi.secretHeader },
  });
  const { access_token } = (await res.json()) as { access_token: string };
  const [header, claims] = access_token
    .split('.')
    .slice(0, 2)
    .map((s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as Record<string, unknown>);
  return { token: access_token, header: header!, claims: claims! };
}

async function sts(fields: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(stsUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(fields),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const goodExchange = async (over: Record<string, string> = {}) => ({
  grant_type: TOKEN_EXCHANGE,
  audience,
  scope: CLOUD_PLATFORM_SCOPE,
  requested_token_type: ACCESS,
  subject_token: await miToken(),
  subject_token_type: JWT,
  ...over,
});

async function federated(): Promise<string> {
  const r = await sts(await goodExchange());
  expect(r.status).toBe(200);
  return r.body.access_token as string;
}

async function generate(
  sa: string,
  bearer: string | undefined,
  body: unknown,
): Promise<{ status: number; body: Record<string, unknown>; wwwAuthenticate: string | null }> {
  const res = await fetch(`${iamUrl}/v1/projects/-/serviceAccounts/${encodeURIComponent(sa)}:generateAccessToken`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
    body: JSON.stringify(body),
  });
  return {
    status: res.status,
    body: (await res.json()) as Record<string, unknown>,
    wwwAuthenticate: res.headers.get('www-authenticate'),
  };
}

describe('STS emulator', () => {
  test('exchanges a valid managed identity token for an opaque federated token of the pool principal', async () => {
    const r = await sts(await goodExchange());
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ issued_token_type: ACCESS, token_type: 'Bearer' });
    expect(r.body.expires_in).toBeGreaterThan(3500);
    const t = sb.google.state.lookupToken(r.body.access_token as string)!;
    expect(t.kind).toBe('federated');
    expect(t.principal).toBe(sb.google.functionPrincipal);
    expect(t.scopes).toEqual([CLOUD_PLATFORM_SCOPE]);
  });

  test('accepts the JSON form of the REST reference (camelCase)', async () => {
    const res = await fetch(stsUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        grantType: TOKEN_EXCHANGE,
        audience,
        scope: CLOUD_PLATFORM_SCOPE,
        requestedTokenType: ACCESS,
        subjectToken: await miToken(),
        subjectTokenType: JWT,
      }),
    });
    expect(res.status).toBe(200);
  });

  test.each([
    ['wrong grant type', 'unsupported_grant_type', { grant_type: 'client_credentials' }],
    ['missing subject_token', 'invalid_request', { subject_token: '' }],
    ['wrong requested_token_type', 'invalid_request', { requested_token_type: JWT }],
    ['wrong subject_token_type', 'invalid_request', { subject_token_type: 'urn:ietf:params:oauth:token-type:saml2' }],
    [
      'unknown pool provider',
      'invalid_target',
      {
        audience: `//iam.googleapis.com/projects/${SANDBOX.google.projectNumber}/locations/global/workloadIdentityPools/${SANDBOX.google.poolId}/providers/other`,
      },
    ],
    ['a subject token that is not a JWT', 'invalid_grant', { subject_token: 'not-a-jwt' }],
  ])('%s → 400 %s', async (_name, error, over) => {
    const r = await sts(await goodExchange(over));
    expect(r.status).toBe(400);
    expect(r.body.error).toBe(error);
    expect(typeof r.body.error_description).toBe('string');
  });

  test.each([
    ['expired', { expiresIn: -120 }],
    ['wrong audience', { aud: 'api://something-else' }],
    ['wrong issuer (a v2.0 token for the v1.0 provider)', { version: '2.0' as const }],
    [
      'an issuer without the trailing slash (not byte-equal to issuer_uri)',
      { iss: `https://sts.windows.net/${SANDBOX.tenantId}` },
    ],
    [
      'the client-id spelling of the audience (a v2.0-style aud for the URI the provider allows)',
      { aud: SANDBOX.google.wifAppId },
    ],
    ['signed by a key that is not published', { key: 'stray' as const }],
    ['another tenant', { iss: 'https://sts.windows.net/00000000-0000-4000-8000-000000000000/' }],
    ['without kid', { omitKid: true }],
    ['without iat', { omit: ['iat'] }],
    ['without exp', { omit: ['exp'] }],
    [
      'whose exp is 48 h or more after iat (though unexpired)',
      { extra: { iat: Math.floor(Date.now() / 1000) - 60, exp: Math.floor(Date.now() / 1000) - 60 + 48 * 3600 } },
    ],
    ['issued in the future (iat)', { extra: { iat: Math.floor(Date.now() / 1000) + 120 } }],
  ])('subject token %s → 400 invalid_grant', async (_name, over) => {
    const { key, ...rest } = over as { key?: 'stray' } & Record<string, unknown>;
    const token = await miToken({ ...rest, ...(key ? { key: sb.entra.strayKey() } : {}) });
    const r = await sts(await goodExchange({ subject_token: token }));
    expect(r.status).toBe(400);
    expect(r.body).toEqual({ error: 'invalid_grant', error_description: expect.any(String) });
  });

  test.each([
    [
      'of another identity of the same tenant (attribute_condition: sub)',
      { oid: '00000000-0000-4000-8000-0000000000aa', extra: { sub: '00000000-0000-4000-8000-0000000000aa' } },
    ],
    [
      'of the identity but another tid claim (attribute_condition: tid)',
      { extra: { tid: '00000000-0000-4000-8000-0000000000bb' } },
    ],
  ])('subject token %s → 400 unauthorized_client', async (_name, over) => {
    const r = await sts(await goodExchange({ subject_token: await miToken(over) }));
    expect(r.status).toBe(400);
    expect(r.body).toEqual({
      error: 'unauthorized_client',
      error_description: 'The given credential is rejected by the attribute condition.',
    });
  });

  test("the attribute condition refusal is in Google's words; a missing scope is invalid_request", async () => {
    const other = await miToken({
      oid: '00000000-0000-4000-8000-0000000000aa',
      extra: { sub: '00000000-0000-4000-8000-0000000000aa' },
    });
    // unauthorized_client, not invalid_grant (terraform-google-modules/terraform-example-foundation #1362, #1404).
    expect((await sts(await goodExchange({ subject_token: other }))).body).toEqual({
      error: 'unauthorized_client',
      error_description: 'The given credential is rejected by the attribute condition.',
    });
    expect((await sts(await goodExchange({ scope: '' }))).body).toEqual({
      error: 'invalid_request',
      error_description: 'Missing required parameter: "scope".',
    });
  });

  test("the managed identity token for the WIF app registration is the v1.0 shape Google's guide expects, and STS accepts it", async () => {
    const { token, header, claims } = await msiToken(sb.env.GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE!);
    expect(sb.env.GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE).toBe(SANDBOX.google.wifAppIdUri);
    expect(header).toMatchObject({ alg: 'RS256', kid: expect.any(String) });
    expect(claims).toMatchObject({
      iss: `https://sts.windows.net/${SANDBOX.tenantId}/`,
      ver: '1.0',
      aud: SANDBOX.google.wifAppIdUri,
      sub: sb.msi.objectId,
      oid: sb.msi.objectId,
      appid: sb.msi.clientId,
      tid: SANDBOX.tenantId,
      iat: expect.any(Number),
      exp: expect.any(Number),
    });
    // v1.0: appid, not azp; idtyp / xms_mirid are optional claims an app registration must configure
    for (const c of ['azp', 'idtyp', 'xms_mirid']) expect(claims).not.toHaveProperty(c);
    expect((await sts(await goodExchange({ subject_token: token }))).status).toBe(200);
  });

  test('a token for api://AzureADTokenExchange is v2.0 with the GUID audience, and the provider refuses it', async () => {
    const { token, claims } = await msiToken('api://AzureADTokenExchange');
    expect(claims).toMatchObject({
      iss: `https://login.microsoftonline.com/${SANDBOX.tenantId}/v2.0`,
      ver: '2.0',
      aud: 'fb60f99c-7a34-4190-8149-302f77469936',
      sub: sb.msi.objectId,
      azp: sb.msi.clientId,
      idtyp: 'app',
      xms_mirid: expect.stringMatching(
        /^\/subscriptions\/.+\/providers\/Microsoft\.ManagedIdentity\/userAssignedIdentities\/.+$/,
      ),
    });
    expect(claims).not.toHaveProperty('appid');
    const r = await sts(await goodExchange({ subject_token: token }));
    expect(r).toEqual({ status: 400, body: { error: 'invalid_grant', error_description: expect.any(String) } });
  });

  test('the sandbox provider trusts the issuer infra/gcp/main.tf writes', () => {
    expect(sb.google.wif.issuer).toBe(`https://sts.windows.net/${SANDBOX.tenantId}/`);
    expect(sb.google.wif.allowedAudiences).toEqual([SANDBOX.google.wifAppIdUri]);
  });

  test('the sandbox provider enforces the attribute_condition infra/gcp/main.tf writes', () => {
    expect(sb.google.wif.attributeCondition).toBe(
      `assertion.tid == '${SANDBOX.tenantId}' && assertion.sub == '${sb.msi.objectId}'`,
    );
    expect(() => compileAttributeCondition("assertion.sub.startsWith('x')")).toThrow(/unsupported term/);
    expect(compileAttributeCondition("assertion.a == 'x' && assertion.b == 'y'")({ a: 'x', b: 'y' })).toBe(true);
    expect(compileAttributeCondition("assertion.a == 'x' && assertion.b == 'y'")({ a: 'x', b: 'z' })).toBe(false);
  });

  test('rejects other content types', async () => {
    const res = await fetch(stsUrl, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toBe('invalid_request');
  });
});

describe('IAM Credentials emulator', () => {
  const reader = SANDBOX.google.readerServiceAccount;

  test('impersonates a bound service account with exactly the requested scope and lifetime', async () => {
    const before = Date.now();
    const r = await generate(reader, await federated(), { scope: [SQL_LOGIN_SCOPE], lifetime: '900s' });
    expect(r.status).toBe(200);
    expect(r.body.expireTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const exp = Date.parse(r.body.expireTime as string);
    expect(exp).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + 899_000);
    expect(exp).toBeLessThanOrEqual(Date.now() + 900_000);
    const t = sb.google.state.lookupToken(r.body.accessToken as string)!;
    expect(t).toMatchObject({ kind: 'access', principal: reader, scopes: [SQL_LOGIN_SCOPE] });
  });

  test('Google error shape for every refusal', async () => {
    const fed = await federated();
    const cases: [string | undefined, string, unknown, number, string][] = [
      [undefined, reader, { scope: [SQL_LOGIN_SCOPE] }, 401, 'UNAUTHENTICATED'],
      ['ya29.unknown', reader, { scope: [SQL_LOGIN_SCOPE] }, 401, 'UNAUTHENTICATED'],
      [fed, reader, { scope: [] }, 400, 'INVALID_ARGUMENT'],
      [fed, reader, { scope: [SQL_LOGIN_SCOPE], lifetime: '0s' }, 400, 'INVALID_ARGUMENT'],
      [fed, reader, { scope: [SQL_LOGIN_SCOPE], lifetime: '3601s' }, 400, 'INVALID_ARGUMENT'],
      [fed, reader, { scope: [SQL_LOGIN_SCOPE], lifetime: '15m' }, 400, 'INVALID_ARGUMENT'],
      [fed, 'nobody-here@sandbox-project.iam.gserviceaccount.com', { scope: [SQL_LOGIN_SCOPE] }, 404, 'NOT_FOUND'],
    ];
    for (const [bearer, sa, body, code, status] of cases) {
      const r = await generate(sa, bearer, body);
      expect([r.status, (r.body.error as { status: string }).status]).toEqual([code, status]);
      expect((r.body.error as { code: number }).code).toBe(code);
      expect(typeof (r.body.error as { message: string }).message).toBe('string');
    }
  });

  test('no IAM binding → 403 PERMISSION_DENIED', async () => {
    const other = 'orders-other@sandbox-project.iam.gserviceaccount.com';
    sb.google.state.addServiceAccount(other);
    const r = await generate(other, await federated(), { scope: [SQL_LOGIN_SCOPE] });
    expect(r.status).toBe(403);
    expect((r.body.error as { status: string }).status).toBe('PERMISSION_DENIED');
    // The ErrorInfo Google adds (google-github-actions/auth #340); no insufficient_scope challenge.
    expect((r.body.error as { details: unknown }).details).toEqual([
      {
        '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
        reason: 'IAM_PERMISSION_DENIED',
        domain: 'iam.googleapis.com',
        metadata: { permission: 'iam.serviceAccounts.getAccessToken' },
      },
    ]);
    expect(r.wwwAuthenticate ?? '').not.toContain('insufficient_scope');
  });

  test('a sqlservice.login token cannot itself call generateAccessToken (insufficient scopes)', async () => {
    const first = await generate(reader, await federated(), { scope: [SQL_LOGIN_SCOPE], lifetime: '60s' });
    sb.google.state.allowImpersonation(SANDBOX.google.analystServiceAccount, `serviceAccount:${reader}`);
    const r = await generate(SANDBOX.google.analystServiceAccount, first.body.accessToken as string, {
      scope: [SQL_LOGIN_SCOPE],
    });
    expect(r.status).toBe(403);
    expect((r.body.error as { message: string }).message).toMatch(/insufficient authentication scopes/);
    // The challenge and ErrorInfo Google adds (kwent/react-google-contacts #6, analogdotnow/Analog #296).
    expect(r.wwwAuthenticate).toMatch(/^Bearer realm="https:\/\/accounts.google.com\/", error="insufficient_scope", scope="/);
    const e = r.body.error as { details: { reason: string }[]; errors: { reason: string }[] };
    expect(e.details.map((d) => d.reason)).toEqual(['ACCESS_TOKEN_SCOPE_INSUFFICIENT']);
    expect(e.errors.map((d) => d.reason)).toEqual(['insufficientPermissions']);
  });

  test('a federated token past its expiry is rejected', async () => {
    const fed = await federated();
    const t = sb.google.state.tokens.get(fed)!;
    sb.google.state.tokens.set(fed, { ...t, expiresAtMs: Date.now() - 1 });
    const r = await generate(reader, fed, { scope: [SQL_LOGIN_SCOPE] });
    expect(r.status).toBe(401);
  });
});
