import { Client } from 'pg';

import { SANDBOX } from '../../../local/ids';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SQL_LOGIN_SCOPE } from '../../../local/emulators/google/state';
import { clearConnectInfoCache } from '../../../shared/cloudsql/connect-settings';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { workerHost } from '../../helpers/loopback';
import { TestApp } from '../../helpers/app';

/**
 * Caller identity mode (issue #28) through the sandbox: Entra on-behalf-of with a managed-identity federated
 * credential, Google STS workforce exchange (infra/gcp/workforce.tf), the instance admitting the person as their own
 * database user; the token exchange and the query function as the caller; the chain's faults.
 */

const HOST = workerHost(70);
jest.setTimeout(90_000);
const testApp = new TestApp();
const tokenHandler = testApp.handler('token');
const queryHandler = testApp.handler('query');
const logs = captureLogs();

let sb: Sandbox;
let restoreEnv: () => void;
let gateway: string;
const people: Record<'ada' | 'grace' | 'stranger' | 'noRole' | 'adaAsReader', string> = {} as never;

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';
const RESOURCE = 'cloudsql://sandbox-project/europe-west1/orders-db/orders';

beforeAll(async () => {
  sb = await startSandbox({
    cloudSql: { host: HOST },
    env: { QUERY_CONNECT_TIMEOUT_MS: '4000', BROKER_UPSTREAM_TIMEOUT_MS: '1500' },
  });
  restoreEnv = sb.applyEnv();
  clearConnectInfoCache();
  gateway = await sb.entra.mint({
    oid: SANDBOX.gatewayObjectId,
    appId: SANDBOX.gatewayAppId,
    aud: SANDBOX.clientAudience,
    version: '1.0',
  });
  const person = (oid: string, roles: string[] = [SANDBOX.personRole]) =>
    sb.entra.mint({
      aud: SANDBOX.subjectAudience,
      version: '1.0',
      oid,
      roles,
      scp: 'access_as_user',
      extra: { upn: `${oid.slice(-4)}@contoso.com` },
    });
  people.ada = await person(SANDBOX.readerObjectId);
  people.grace = await person(SANDBOX.secondReaderObjectId);
  people.stranger = await person(SANDBOX.strangerObjectId);
  people.noRole = await person(SANDBOX.workforce.noRoleObjectId);
  people.adaAsReader = await person(SANDBOX.readerObjectId, ['Orders.Read']);
});

afterAll(async () => {
  logs.restore();
  await testApp.app.close();
  restoreEnv?.();
  await sb?.stop();
});

/** The managed identity's token for Entra's token exchange audience (the FIC client assertion). */
async function miAssertion(): Promise<string> {
  const res = await fetch(
    `${sb.msi.endpoint}?api-version=2019-08-01&resource=${encodeURIComponent('api://AzureADTokenExchange')}`,
    {
      headers: { 'x-identity-header': sb.msi.secretHeader },
    },
  );
  return ((await res.json()) as { access_token: string }).access_token;
}

async function obo(over: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${sb.entra.url}/${SANDBOX.tenantId}/oauth2/v2.0/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: JWT_BEARER,
      client_id: SANDBOX.subjectAppId,
      client_assertion_type: ASSERTION_TYPE,
      client_assertion: await miAssertion(),
      assertion: people.ada,
      scope: `${SANDBOX.workforce.appIdUri}/.default`,
      requested_token_use: 'on_behalf_of',
      ...over,
    }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function sts(subjectToken: string, over: Record<string, string | undefined> = {}) {
  const fields: Record<string, string> = {
    grant_type: TOKEN_EXCHANGE,
    audience: sb.env.CALLER_WORKFORCE_AUDIENCE!,
    scope: SQL_LOGIN_SCOPE,
    requested_token_type: ACCESS,
    subject_token_type: JWT,
    subject_token: subjectToken,
    options: JSON.stringify({ userProject: SANDBOX.workforce.userProject }),
  };
  for (const [k, v] of Object.entries(over))
    if (v === undefined) delete fields[k];
    else fields[k] = v;
  const res = await fetch(`${sb.google.sts.url}/v1/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(fields),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** A direct login (plain pg over TLS, the token as the password) to the instance's port 5432. */
async function directLogin(user: string, password: string): Promise<{ ok: boolean; currentUser?: string; code?: string }> {
  const instance = [...sb.sqlAdmin!.instances.values()][0]!;
  const c = new Client({
    host: HOST,
    port: 5432,
    user,
    password,
    database: 'orders',
    ssl: { ca: instance.ca.certPem, checkServerIdentity: () => undefined },
    connectionTimeoutMillis: 4000,
  });
  try {
    await c.connect();
    const r = await c.query<{ u: string }>('SELECT current_user::text AS u');
    return { ok: true, currentUser: r.rows[0]!.u };
  } catch (e) {
    return { ok: false, code: (e as { code?: string }).code };
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function workforceToken(caller = people.ada): Promise<string> {
  const o = await obo({ assertion: caller });
  expect(o.status).toBe(200);
  const s = await sts(o.body.access_token as string);
  expect(s.status).toBe(200);
  return s.body.access_token as string;
}

function exchange(subject: string): Promise<Result> {
  return invoke(tokenHandler, {
    headers: { authorization: `Bearer ${gateway}` },
    form: { grant_type: TOKEN_EXCHANGE, subject_token: subject, subject_token_type: ACCESS, resource: RESOURCE },
  });
}

function query(name: string, subject: string): Promise<Result> {
  return invoke(queryHandler, {
    url: `http://127.0.0.1:7071/api/query/${name}`,
    params: { name },
    headers: { authorization: `Bearer ${gateway}`, 'x-subject-token': subject },
    body: {},
  });
}

describe('Entra on-behalf-of emulator (FIC client assertion)', () => {
  test('a user token for the broker app and the managed identity assertion give a v2.0 token for the workforce app', async () => {
    const r = await obo();
    expect(r.status).toBe(200);
    const claims = JSON.parse(Buffer.from((r.body.access_token as string).split('.')[1]!, 'base64url').toString()) as Record<
      string,
      unknown
    >;
    expect(claims).toMatchObject({
      aud: SANDBOX.workforce.appId,
      iss: `https://login.microsoftonline.com/${SANDBOX.tenantId}/v2.0`,
      oid: SANDBOX.readerObjectId,
      azp: SANDBOX.subjectAppId,
    });
  });

  test('refusals carry Entra codes: no consent 65001, wrong assertion audience 50013, secret 7000215, no assertion 7000218', async () => {
    const client = sb.entra.oboClients.find((c) => c.appId === SANDBOX.subjectAppId)!;
    const consented = [...client.consentedResources];
    client.consentedResources.length = 0;
    try {
      const r = await obo();
      expect(r.status).toBe(400);
      expect(r.body).toMatchObject({ error: 'invalid_grant', error_codes: [65001], suberror: 'consent_required' });
    } finally {
      client.consentedResources.push(...consented);
    }
    const wrongAud = await obo({ assertion: gateway });
    expect(wrongAud.body).toMatchObject({ error: 'invalid_grant', error_codes: [50013] });
    expect(String(wrongAud.body.error_description)).toMatch(/^AADSTS50013: Assertion audience does not match/);
    expect((await obo({ client_secret: 'x' })).body).toMatchObject({ error: 'invalid_client', error_codes: [7000215] });
    expect((await obo({ client_assertion: '' })).body).toMatchObject({ error: 'invalid_client', error_codes: [7000218] });
  });

  test('a deleted federated credential (no match for the assertion) is AADSTS70021 / 700211; a disabled app 7000112', async () => {
    const client = sb.entra.oboClients.find((c) => c.appId === SANDBOX.subjectAppId)!;
    const fics = client.federatedCredentials;
    client.federatedCredentials = [{ ...fics[0]!, subject: '00000000-0000-4000-8000-000000000000' }];
    try {
      expect((await obo()).body).toMatchObject({ error: 'invalid_request', error_codes: [70021] });
      client.federatedCredentials = [];
      expect((await obo()).body).toMatchObject({ error: 'invalid_client', error_codes: [700211] });
    } finally {
      client.federatedCredentials = fics;
    }
    client.disabled = true;
    try {
      expect((await obo()).body).toMatchObject({ error: 'unauthorized_client', error_codes: [7000112] });
    } finally {
      client.disabled = false;
    }
  });
});

describe('Google STS workforce exchange emulator (infra/gcp/workforce.tf)', () => {
  test('the OBO token becomes a token of principal://…/workforcePools/POOL/subject/OID with only the asked scope', async () => {
    const t = await workforceToken();
    const g = sb.google.state.lookupToken(t)!;
    expect(g.principal).toBe(
      `principal://iam.googleapis.com/locations/global/workforcePools/${SANDBOX.workforce.poolId}/subject/${SANDBOX.readerObjectId}`,
    );
    expect(g.scopes).toEqual([SQL_LOGIN_SCOPE]);
  });

  test('userProject is required; a token of another audience, or one the condition rejects, is refused', async () => {
    const o = await obo();
    const oboToken = o.body.access_token as string;
    const noProject = await sts(oboToken, { options: undefined });
    expect(noProject).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
    expect(String(noProject.body.error_description)).toMatch(/userProject/);
    const wrongAudience = await sts(people.ada);
    expect(wrongAudience).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    const otherTenant = await sb.entra.mint({
      aud: SANDBOX.workforce.appId,
      version: '2.0',
      oid: SANDBOX.readerObjectId,
      extra: { tid: '00000000-0000-4000-8000-0000000000aa' },
    });
    expect(await sts(otherTenant)).toMatchObject({ status: 400, body: { error: 'unauthorized_client' } });
    expect(await sts(oboToken, { audience: `${sb.env.CALLER_WORKFORCE_AUDIENCE!}x` })).toMatchObject({
      status: 400,
      body: { error: 'invalid_target' },
    });
  });
});

describe('Cloud SQL admits a workforce principal as its own database user only', () => {
  test('the person logs in as their object id; current_user is the person', async () => {
    const r = await directLogin(SANDBOX.readerObjectId, await workforceToken());
    expect(r).toEqual({ ok: true, currentUser: SANDBOX.readerObjectId });
  });

  test('another user name, a principal not added as a database user, one without instanceUser: all 28P01', async () => {
    expect(await directLogin(SANDBOX.secondReaderObjectId, await workforceToken())).toMatchObject({ ok: false, code: '28P01' });
    expect(await directLogin(SANDBOX.strangerObjectId, await workforceToken(people.stranger))).toMatchObject({
      ok: false,
      code: '28P01',
    });
    expect(await directLogin(SANDBOX.workforce.noRoleObjectId, await workforceToken(people.noRole))).toMatchObject({
      ok: false,
      code: '28P01',
    });
  });
});

describe('the token exchange as the caller', () => {
  test("hands out the caller's own login token and database user, capped by the rule's maxTtlSeconds", async () => {
    const r = await exchange(people.ada);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ database_user: SANDBOX.readerObjectId, identity: 'caller', scope: SQL_LOGIN_SCOPE });
    expect(r.json.service_account).toBeUndefined();
    expect(r.json.expires_in as number).toBeLessThanOrEqual(900);
    const login = await directLogin(SANDBOX.readerObjectId, r.json.access_token as string);
    expect(login).toEqual({ ok: true, currentUser: SANDBOX.readerObjectId });
  });

  test('the service-account mode is unchanged for a rule without identity', async () => {
    const r = await exchange(people.adaAsReader);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({
      database_user: 'orders-reader@sandbox-project.iam',
      service_account: SANDBOX.google.readerServiceAccount,
    });
  });
});

describe('the query function as the caller', () => {
  test('two people each see only their own rows (RLS on current_user) and run under their own grants', async () => {
    const ada = await query('my-documents', people.ada);
    const grace = await query('my-documents', people.grace);
    expect(ada.status).toBe(200);
    expect((ada.json.rows as unknown[][]).map((r) => r[0])).toEqual(['1', '2']);
    expect(new Set((ada.json.rows as unknown[][]).map((r) => r[2]))).toEqual(new Set([SANDBOX.readerObjectId]));
    expect(grace.status).toBe(200);
    expect((grace.json.rows as unknown[][]).map((r) => r[0])).toEqual(['3']);
    expect((grace.json.rows as unknown[][])[0]![2]).toBe(SANDBOX.secondReaderObjectId);
    // Ada's own grant includes orders; Grace's does not: PostgreSQL decides, per person.
    const adaOrders = await query('orders-total', people.ada);
    expect(adaOrders.status).toBe(200);
    expect(adaOrders.json.rows).toEqual([[4, SANDBOX.readerObjectId]]);
    const graceOrders = await query('orders-total', people.grace);
    expect(graceOrders.status).toBe(403);
    expect(graceOrders.json.code ?? graceOrders.json.error).toBeDefined();
    expect(JSON.stringify(graceOrders.json)).toMatch(/db_permission_denied/);
    expect(testApp.app.callerPools.size).toBe(2);
  });

  test('a caller not added as a database user gets a clear 403 naming it (never PostgreSQL text)', async () => {
    const r = await query('my-documents', people.stranger);
    expect(r.status).toBe(403);
    const text = JSON.stringify(r.json);
    expect(text).toMatch(/caller_identity_refused/);
    expect(text).toMatch(/not_database_user/);
    expect(text).toMatch(/not added as a database user/);
    expect(text).not.toMatch(/authentication failed|28P01/);
  });

  test('a database user without roles/cloudsql.instanceUser gets a 403 naming the IAM role', async () => {
    const r = await query('my-documents', people.noRole);
    expect(r.status).toBe(403);
    const text = JSON.stringify(r.json);
    expect(text).toMatch(/no_instance_user_role/);
    expect(text).toMatch(/roles\/cloudsql\.instanceUser/);
  });
});

describe('faults of the chain: the right error, no hang', () => {
  const adaFresh = () =>
    sb.entra.mint({
      aud: SANDBOX.subjectAudience,
      version: '1.0',
      oid: SANDBOX.readerObjectId,
      roles: [SANDBOX.personRole],
      scp: 'x',
    });

  // A cold caller: no cached login, no pool (the chain runs).
  beforeEach(async () => {
    testApp.app.callerLogins.forget({ tenantId: SANDBOX.tenantId, objectId: SANDBOX.readerObjectId });
    await testApp.app.callerPools.closeAll();
  });

  test('Entra OBO down: 503; hanging: 504 within the upstream timeout', async () => {
    const off = sb.entra.inject({ fault: { kind: 'status', status: 503 }, routes: ['token'] });
    try {
      const r = await exchange(await adaFresh());
      expect(r.status).toBe(503);
    } finally {
      off();
    }
    const hang = sb.entra.inject({ fault: { kind: 'hang' }, routes: ['token'] });
    const started = Date.now();
    try {
      const r = await query('my-documents', await adaFresh());
      expect(r.status).toBe(504);
      expect(Date.now() - started).toBeLessThan(6000);
    } finally {
      hang();
    }
  });

  test('Entra OBO refusing consent: 403 consent_required', async () => {
    const client = sb.entra.oboClients.find((c) => c.appId === SANDBOX.subjectAppId)!;
    const consented = [...client.consentedResources];
    client.consentedResources.length = 0;
    try {
      const r = await exchange(await adaFresh());
      expect(r.status).toBe(403);
      expect(JSON.stringify(r.json)).toMatch(/consent_required/);
    } finally {
      client.consentedResources.push(...consented);
    }
  });

  test("the broker's federated credential gone: 403 upstream_denied naming it (an operator problem, not the caller's)", async () => {
    const client = sb.entra.oboClients.find((c) => c.appId === SANDBOX.subjectAppId)!;
    const fics = client.federatedCredentials;
    client.federatedCredentials = [];
    try {
      const r = await exchange(await adaFresh());
      expect(r.status).toBe(403);
      expect(JSON.stringify(r.json)).toMatch(/upstream_denied/);
      expect(JSON.stringify(r.json)).toMatch(/federated_credential/);
      expect(JSON.stringify(r.json)).not.toMatch(/AADSTS/);
    } finally {
      client.federatedCredentials = fics;
    }
  });

  test('Google STS hanging: 504 within the upstream timeout, no hang', async () => {
    const hang = sb.google.sts.inject({ fault: { kind: 'hang' }, routes: ['sts.token'] });
    const started = Date.now();
    try {
      const r = await exchange(await adaFresh());
      expect(r.status).toBe(504);
      expect(Date.now() - started).toBeLessThan(6000);
    } finally {
      hang();
    }
  });

  test('STS refusing the attribute condition: 403 attribute_condition', async () => {
    const off = sb.google.sts.inject({
      fault: {
        kind: 'status',
        status: 400,
        body: { error: 'unauthorized_client', error_description: 'rejected by the attribute condition' },
      },
      routes: ['sts.token'],
      times: 1,
    });
    try {
      const r = await query('my-documents', await adaFresh());
      expect(r.status).toBe(403);
      expect(JSON.stringify(r.json)).toMatch(/attribute_condition/);
    } finally {
      off();
    }
  });

  test('a login token that expires mid-pool: the next connection gets a fresh one (one retry), no error', async () => {
    const first = await query('my-documents', people.ada);
    expect(first.status).toBe(200);
    // Google ends every token of Ada's principal early; the instance cuts open sessions.
    const principal = `principal://iam.googleapis.com/locations/global/workforcePools/${SANDBOX.workforce.poolId}/subject/${SANDBOX.readerObjectId}`;
    for (const [k, t] of sb.google.state.tokens)
      if (t.principal === principal) sb.google.state.tokens.set(k, { ...t, expiresAtMs: 0 });
    sb.cloudSql!.dropConnections();
    await new Promise((r) => setTimeout(r, 200)); // the idle connections see the server close them
    const again = await query('my-documents', people.ada);
    expect(again.status).toBe(200);
    expect((again.json.rows as unknown[][]).map((r) => r[0])).toEqual(['1', '2']);
  });
});
