import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SANDBOX } from '../../../local/ids';
import { SQL_LOGIN_SCOPE } from '../../../local/emulators/google/state';
import { SQL_ADMIN_SCOPE } from '../../../shared/google/scopes';
import { clearConnectInfoCache } from '../../../shared/cloudsql/connect-settings';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const tokenHandler = testApp.handler('token');

const G = SANDBOX.google;
const CONNECTION = `${G.project}:${G.region}:${G.instance}`;
const RESOURCE = `cloudsql://${G.project}/${G.region}/${G.instance}/${G.database}`;
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';

let sb: Sandbox;
let restoreEnv: () => void;
let gateway: string;
const logs = captureLogs();

beforeAll(async () => {
  sb = await startSandbox();
  restoreEnv = sb.applyEnv();
  gateway = await sb.entra.mint({ oid: SANDBOX.gatewayObjectId, appId: SANDBOX.gatewayAppId, aud: SANDBOX.clientAudience });
});

afterAll(async () => {
  restoreEnv();
  logs.restore();
  await sb.stop();
});

beforeEach(() => {
  testApp.renew();
  sb.google.sts.resetCalls();
  sb.google.iamcredentials.resetCalls();
  mintsBefore = sb.google.iamcredentials.issued.length;
  sb.msi.resetCalls();
});

const caller = (roles: string[], oid: string = SANDBOX.readerObjectId) =>
  sb.entra.mint({ oid, roles, aud: SANDBOX.subjectAudience });

async function exchange(subject: string, extra: Record<string, string> = {}): Promise<Result> {
  return invoke(tokenHandler, {
    headers: { authorization: `Bearer ${gateway}` },
    form: { grant_type: TOKEN_EXCHANGE, subject_token: subject, subject_token_type: ACCESS_TOKEN, resource: RESOURCE, ...extra },
  });
}

/** STS calls and the impersonations that minted a login token (the connect details take one Admin-API token besides). */
const counts = () => ({
  sts: sb.google.sts.count('sts.token'),
  iam: sb.google.iamcredentials.issued.slice(mintsBefore).filter((r) => r.scopes.length === 1 && r.scopes[0] === SQL_LOGIN_SCOPE)
    .length,
});
let mintsBefore = 0;

describe('POST /api/token for cloudsql:// targets', () => {
  test('a reader gets a sqlservice.login token of the reader service account, capped by the rule', async () => {
    const res = await exchange(await caller(['Orders.Read']));
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({
      issued_token_type: ACCESS_TOKEN,
      token_type: 'Bearer',
      scope: SQL_LOGIN_SCOPE,
      database_user: 'orders-reader@sandbox-project.iam',
      service_account: G.readerServiceAccount,
      instance_connection_name: CONNECTION,
      database: G.database,
    });
    const issued = sb.google.state.lookupToken(res.json.access_token as string);
    expect(issued).toBeDefined();
    expect(issued!.kind).toBe('access');
    expect(issued!.principal).toBe(G.readerServiceAccount);
    expect(issued!.scopes).toEqual([SQL_LOGIN_SCOPE]);
    // The reader rule caps at 900 s: the token was asked for 900 s, and expires_in comes from expireTime.
    const rec = sb.google.iamcredentials.issued.filter((r) => r.scopes.length === 1 && r.scopes[0] === SQL_LOGIN_SCOPE).at(-1)!;
    expect(rec.lifetimeSeconds).toBe(900);
    expect(rec.principal).toBe(sb.google.functionPrincipal);
    const expireMs = Date.parse(rec.expireTime);
    expect(res.json.expires_in).toBeLessThanOrEqual(900);
    expect(Math.abs(Date.now() + (res.json.expires_in as number) * 1000 - expireMs)).toBeLessThan(3000);
    expect(res.headers.get('cache-control')).toBe('no-store');
    // The answer's text is the one JSON.stringify makes of its fields (the connect details are serialised once per
    // looked-up settings and joined to the rest): every field once, connect details after the token's fields.
    expect(res.json.connect_details).toBe('included');
    expect(res.text).toBe(JSON.stringify(res.json));
    expect(Object.keys(res.json).slice(-6)).toEqual([
      'connect_details',
      'ip_addresses',
      'dns_name',
      'port',
      'server_ca_cert',
      'server_cert_common_name',
    ]);
    expect(counts()).toEqual({ sts: 1, iam: 1 });
    // The managed identity token went to STS, requested for the WIF app registration's App ID URI.
    expect(sb.msi.issued.at(-1)!.resource).toBe(SANDBOX.google.wifAppIdUri);
  });

  test('JSON bodies work too; an analyst gets the analyst service account with its 600 s cap', async () => {
    const res = await invoke(tokenHandler, {
      headers: { authorization: `Bearer ${gateway}` },
      body: {
        grant_type: TOKEN_EXCHANGE,
        subject_token: await caller(['Orders.Analyst']),
        subject_token_type: ACCESS_TOKEN,
        resource: RESOURCE,
      },
    });
    expect(res.status).toBe(200);
    expect(res.json.service_account).toBe(G.analystServiceAccount);
    expect(res.json.database_user).toBe('orders-analyst@sandbox-project.iam');
    expect(sb.google.state.lookupToken(res.json.access_token as string)!.principal).toBe(G.analystServiceAccount);
    expect(sb.google.iamcredentials.issued.at(-1)!.lifetimeSeconds).toBe(600);
    expect(res.json.expires_in).toBeLessThanOrEqual(600);
    expect(res.json.expires_in).toBeGreaterThan(590);
  });

  test('requested_lifetime below the rule cap is honoured; above it, the rule cap wins', async () => {
    const short = await exchange(await caller(['Orders.Read']), { requested_lifetime: '420' });
    expect(short.status).toBe(200);
    expect(sb.google.iamcredentials.issued.at(-1)!.lifetimeSeconds).toBe(420);
    expect(short.json.expires_in).toBeLessThanOrEqual(420);
    testApp.renew();
    const long = await exchange(await caller(['Orders.Read']), { requested_lifetime: '7200' });
    expect(long.status).toBe(200);
    expect(sb.google.iamcredentials.issued.at(-1)!.lifetimeSeconds).toBe(900);
    expect(long.json.expires_in).toBeLessThanOrEqual(900);
  });

  test('a caller without a grant gets 403 and nothing is asked of Google', async () => {
    const res = await exchange(await caller([], SANDBOX.strangerObjectId));
    expect(res.status).toBe(403);
    expect(res.json.error).toBe('access_denied');
    expect(res.json.reason).toBe('not_granted');
    expect(counts()).toEqual({ sts: 0, iam: 0 });
  });

  test('a database the rule does not list is not granted', async () => {
    const res = await invoke(tokenHandler, {
      headers: { authorization: `Bearer ${gateway}` },
      form: {
        grant_type: TOKEN_EXCHANGE,
        subject_token: await caller(['Orders.Read']),
        subject_token_type: ACCESS_TOKEN,
        resource: `cloudsql://${G.project}/${G.region}/${G.instance}/postgres`,
      },
    });
    expect(res.status).toBe(403);
    expect(counts()).toEqual({ sts: 0, iam: 0 });
  });

  test('a second request is served from the cache with no upstream call', async () => {
    const first = await exchange(await caller(['Orders.Read']));
    const second = await exchange(await caller(['Orders.Read'], '0b5e0000-0000-4000-8000-0000000000b2'));
    expect(second.status).toBe(200);
    expect(second.json.access_token).toBe(first.json.access_token);
    expect(counts()).toEqual({ sts: 1, iam: 1 });
    // The federated token is cached too: another service account needs only generateAccessToken.
    const analyst = await exchange(await caller(['Orders.Analyst']));
    expect(analyst.status).toBe(200);
    expect(counts()).toEqual({ sts: 1, iam: 2 });
  });

  test('1,000 concurrent requests for one service account make exactly one STS and one generateAccessToken call', async () => {
    const subject = await caller(['Orders.Read']);
    const results = await Promise.all(Array.from({ length: 1000 }, () => exchange(subject)));
    expect(results.every((r) => r.status === 200)).toBe(true);
    expect(new Set(results.map((r) => r.json.access_token)).size).toBe(1);
    expect(counts()).toEqual({ sts: 1, iam: 1 });
    // At most one managed identity token (MSAL may already hold one from an earlier test).
    expect(sb.msi.count('msi.token')).toBeLessThanOrEqual(1);
  });

  test('1,000 concurrent cold requests with the connect details uncached: one generateAccessToken per kind of token', async () => {
    // The exchange asks Google for two different tokens: the login token it hands out (sqlservice.login) and, for the
    // instance's connect details, the broker's own Admin-API token (sqlservice.admin): two calls, each coalesced.
    // (This sandbox has no SQL Admin API: the one look-up fails and is remembered; the answers say `unavailable`.)
    clearConnectInfoCache();
    const subject = await caller(['Orders.Read']);
    const results = await Promise.all(Array.from({ length: 1000 }, () => exchange(subject)));
    expect(results.every((r) => r.status === 200)).toBe(true);
    const minted = sb.google.iamcredentials.issued.slice(mintsBefore).map((r) => `${r.serviceAccount} ${r.scopes.join(' ')}`);
    expect(minted.sort()).toEqual(
      [`${G.readerServiceAccount} ${SQL_ADMIN_SCOPE}`, `${G.readerServiceAccount} ${SQL_LOGIN_SCOPE}`].sort(),
    );
    expect(sb.google.iamcredentials.count('iam.generateAccessToken')).toBe(2);
    expect(sb.google.sts.count('sts.token')).toBe(1);
  });

  test('getSqlLoginToken (for in-process callers such as the query function) shares the same cache', async () => {
    const res = await exchange(await caller(['Orders.Read']));
    const t = await testApp.app.google.sqlLoginToken({ serviceAccount: G.readerServiceAccount, lifetimeSeconds: 900 });
    expect(t).toMatchObject({ token: res.json.access_token, cached: true });
    expect(t.expiresAtMs).toBe(Date.parse(sb.google.iamcredentials.issued.at(-1)!.expireTime));
    expect(counts()).toEqual({ sts: 1, iam: 1 });
    const analyst = await testApp.app.google.sqlLoginToken({ serviceAccount: G.analystServiceAccount, lifetimeSeconds: 120 });
    expect(analyst.cached).toBe(false);
    expect(analyst.expiresInSeconds).toBeLessThanOrEqual(120);
    expect(sb.google.state.lookupToken(analyst.token)!.scopes).toEqual([SQL_LOGIN_SCOPE]);
  });

  test('no token reaches a log line', async () => {
    const res = await exchange(await caller(['Orders.Read']));
    expect(res.status).toBe(200);
    const text = JSON.stringify(logs.records);
    for (const t of sb.google.state.allTokens()) expect(text).not.toContain(t);
    for (const { token } of sb.msi.issued) expect(text).not.toContain(token);
    const grant = logs.records.find((r) => r.decision === 'grant' && r.action === 'token.cloudsql');
    expect(grant).toBeDefined();
  });
});
