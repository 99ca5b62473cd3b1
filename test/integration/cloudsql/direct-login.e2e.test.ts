import { X509Certificate } from 'node:crypto';
import { Client, type ClientConfig } from 'pg';

import { SANDBOX } from '../../../local/ids';
import { createCa } from '../../../local/pki';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { CLOUD_PLATFORM_SCOPE, SQL_LOGIN_SCOPE } from '../../../local/emulators/google/state';
import { clearConnectInfoCache, refreshAfterSeconds } from '../../../shared/cloudsql/connect-settings';
import { prewarmGoogleTokens } from '../../../shared/google/prewarm';
import { testLogger as createLogger } from '../../helpers/app';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { workerHost } from '../../helpers/loopback';
import { ContractValidator, loadSpec } from '../../helpers/openapi';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const tokenHandler = testApp.handler('token');

/**
 * A backend without Google credentials: plain `pg` over TLS with only the broker's Cloud SQL answer (address,
 * server CA, database user, the token as the password), against the emulated instance's direct listener, which
 * verifies the password as a live sqlservice.login token of exactly that IAM database user (issue #12 item 6).
 */

const HOST = workerHost(50);
jest.setTimeout(60_000);
let sb: Sandbox;
let restoreEnv: () => void;
let gateway: string;
let reader: string;
const logs = captureLogs();

beforeAll(async () => {
  sb = await startSandbox({ cloudSql: { host: HOST } });
  restoreEnv = sb.applyEnv();
  gateway = await sb.entra.mint({
    oid: SANDBOX.gatewayObjectId,
    appId: SANDBOX.gatewayAppId,
    aud: SANDBOX.clientAudience,
    version: '1.0',
  });
  reader = await sb.entra.mint({ aud: SANDBOX.subjectAudience, oid: SANDBOX.readerObjectId, roles: ['Orders.Read'] });
});

afterAll(async () => {
  logs.restore();
  restoreEnv?.();
  testApp.renew();
  await sb?.stop();
});

function exchange(): Promise<Result> {
  return invoke(tokenHandler, {
    headers: { authorization: `Bearer ${gateway}` },
    form: {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: reader,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      resource: 'cloudsql://sandbox-project/europe-west1/orders-db/orders',
    },
  });
}

interface Answer {
  access_token: string;
  database_user: string;
  database: string;
  expires_in: number;
  refresh_after: number;
  connect_details: string;
  ip_addresses: { type: string; ip_address: string }[];
  port: number;
  server_ca_cert: string;
  server_cert_common_name: string;
}

/** What a backend does with only the answer: verify the CA and the instance's CN (verify-ca), the token as password. */
function pgConfig(a: Answer, password = a.access_token, user = a.database_user): ClientConfig {
  return {
    host: a.ip_addresses[0]!.ip_address,
    port: a.port,
    user,
    password,
    database: a.database,
    connectionTimeoutMillis: 5000,
    ssl: {
      ca: a.server_ca_cert,
      checkServerIdentity: (_host, cert) =>
        cert.subject.CN === a.server_cert_common_name
          ? undefined
          : new Error(`unexpected server certificate ${String(cert.subject.CN)}`),
    },
  };
}

async function login(cfg: ClientConfig): Promise<{ user?: string; error?: { code?: string; message: string } }> {
  const c = new Client(cfg);
  try {
    await c.connect();
    const r = await c.query('SELECT current_user AS u');
    return { user: r.rows[0].u as string };
  } catch (e) {
    return { error: { code: (e as { code?: string }).code, message: (e as Error).message } };
  } finally {
    await c.end().catch(() => undefined);
  }
}

let answer: Answer;

test('the Cloud SQL answer carries address, server CA, port and refresh_after (the connector’s rule)', async () => {
  const r = await exchange();
  expect(r.status).toBe(200);
  answer = r.json as unknown as Answer;
  expect(new ContractValidator(loadSpec()).check('/token', 'POST', r)).toEqual([]); // openapi.yaml describes the new fields
  expect(answer.connect_details).toBe('included');
  expect(answer.ip_addresses).toEqual([{ type: 'PRIMARY', ip_address: HOST }]);
  expect(answer.port).toBe(5432);
  expect(new X509Certificate(answer.server_ca_cert).ca).toBe(true);
  expect(answer.server_cert_common_name).toBe('sandbox-project:orders-db');
  expect(answer.refresh_after).toBe(refreshAfterSeconds(answer.expires_in));
  expect(answer.refresh_after).toBe(answer.expires_in - 240); // < 1 h left: four minutes before expiry
  // cached: a second exchange makes no second connectSettings call
  const before = sb.sqlAdmin!.count('sqladmin.connectSettings');
  expect((await exchange()).status).toBe(200);
  expect(sb.sqlAdmin!.count('sqladmin.connectSettings')).toBe(before);
});

test('refresh_after follows the Node connector: half the life from an hour up, 4 min before expiry below, now under 4 min', () => {
  expect(refreshAfterSeconds(3600)).toBe(1800);
  expect(refreshAfterSeconds(899)).toBe(659);
  expect(refreshAfterSeconds(239)).toBe(0);
});

test('a plain pg client holding only the answer logs in over TLS as the IAM database user', async () => {
  const r = await login(pgConfig(answer));
  expect(r).toEqual({ user: 'orders-reader@sandbox-project.iam' });
});

test('the reader role may only read: every write path is refused by PostgreSQL outside any READ ONLY transaction', async () => {
  // A backend holding the broker's answer talks to the database directly: the role's own privileges are the bound.
  const c = new Client(pgConfig(answer));
  await c.connect();
  const attempt = async (sql: string) => {
    try {
      await c.query(sql);
      return 'allowed';
    } catch (e) {
      return (e as { code?: string }).code ?? 'error';
    }
  };
  try {
    expect((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n).toBeGreaterThan(0);
    const writes = {
      insert: "INSERT INTO orders (id, customer_id, status, total, placed_at, items) VALUES (999, 1, 'x', 1, now(), 1)",
      update: "UPDATE orders SET status = 'x' WHERE id = 101",
      delete: 'DELETE FROM orders WHERE id = 101',
      truncate: 'TRUNCATE orders',
      nextval: "SELECT nextval('order_numbers')",
      setval: "SELECT setval('order_numbers', 42)",
      copyFrom: 'COPY orders (id) FROM STDIN',
      tempTable: 'CREATE TEMP TABLE scratch (x int)',
      table: 'CREATE TABLE public.scratch (x int)',
      largeObject: 'SELECT lo_create(0)',
      largeObjectFromBytea: "SELECT lo_from_bytea(0, '\\x00')",
    };
    const outcomes: Record<string, string> = {};
    for (const [name, sql] of Object.entries(writes)) outcomes[name] = await attempt(sql);
    // 42501 insufficient_privilege for every one of them
    expect(outcomes).toEqual(Object.fromEntries(Object.keys(writes).map((k) => [k, '42501'])));
    const admin = new Client(sb.postgres!.admin('orders'));
    await admin.connect();
    try {
      expect((await admin.query('SELECT is_called FROM order_numbers')).rows[0].is_called).toBe(false);
      expect((await admin.query('SELECT status FROM orders WHERE id = 101')).rows[0].status).toBe('shipped');
      expect((await admin.query('SELECT count(*)::int AS n FROM pg_largeobject_metadata')).rows[0].n).toBe(0);
    } finally {
      await admin.end();
    }
  } finally {
    await c.end().catch(() => undefined);
  }
});

test('refused with Cloud SQL’s error: expired, wrong-scope, other-account and unknown tokens', async () => {
  const state = sb.google.state;
  const expected = {
    code: '28P01',
    message: 'Cloud SQL IAM service account authentication failed for user "orders-reader@sandbox-project.iam"',
  };
  const expired = state.issueToken('access', SANDBOX.google.readerServiceAccount, [SQL_LOGIN_SCOPE], 1);
  const wrongScope = state.issueToken('access', SANDBOX.google.readerServiceAccount, [CLOUD_PLATFORM_SCOPE], 600);
  const otherAccount = state.issueToken('access', SANDBOX.google.analystServiceAccount, [SQL_LOGIN_SCOPE], 600);
  await new Promise((r) => setTimeout(r, 1100));
  for (const password of [expired.token, wrongScope.token, otherAccount.token, 'ya29.c.not-a-token-at-all-xxxxxxxx', '']) {
    expect((await login(pgConfig(answer, password))).error).toEqual(expected);
  }
  // the analyst's own token logs in as the analyst only
  expect((await login(pgConfig(answer, otherAccount.token, 'orders-analyst@sandbox-project.iam'))).user).toBe(
    'orders-analyst@sandbox-project.iam',
  );
});

test('no TLS is refused (28000), and a client that checks the host name instead of the instance CN fails as on Cloud SQL', async () => {
  const plain = await login({ ...pgConfig(answer), ssl: false });
  expect(plain.error?.code).toBe('28000');
  expect(plain.error?.message).toMatch(/no encryption/);
  const byHost = await login({ ...pgConfig(answer), ssl: { ca: answer.server_ca_cert } });
  expect(byHost.user).toBeUndefined();
  const wrongCa = await login({ ...pgConfig(answer), ssl: { ca: createCa('not the instance CA').certPem } });
  expect(wrongCa.user).toBeUndefined();
});

test('SQL Admin unavailable: the token is still issued (connector users need nothing else), without direct-connect details', async () => {
  clearConnectInfoCache();
  const undo = sb.sqlAdmin!.inject({ fault: { kind: 'status', status: 503 }, routes: ['sqladmin.connectSettings'] });
  try {
    const r = await exchange();
    expect(r.status).toBe(200);
    expect(r.json.connect_details).toBe('unavailable');
    expect(new ContractValidator(loadSpec()).check('/token', 'POST', r)).toEqual([]);
    expect(r.json.server_ca_cert).toBeUndefined();
    expect(r.json.instance_connection_name).toBe('sandbox-project:europe-west1:orders-db');
    // The failure is remembered: the next exchanges neither call SQL Admin again nor log the warning again.
    const calls = sb.sqlAdmin!.count('sqladmin.connectSettings');
    for (let i = 0; i < 3; i++) expect((await exchange()).json.connect_details).toBe('unavailable');
    expect(sb.sqlAdmin!.count('sqladmin.connectSettings')).toBe(calls);
    expect(logs.records.filter((l) => String(l.msg).startsWith('Cloud SQL connect settings unavailable'))).toHaveLength(1);
  } finally {
    undo();
    clearConnectInfoCache();
  }
  expect((await exchange()).json.connect_details).toBe('included');
});

test('the prewarm also fetches the instances’ connect details: the first exchange makes no SQL Admin call', async () => {
  clearConnectInfoCache();
  process.env.GOOGLE_TOKEN_PREWARM = 'true'; // the test sandbox turns it off; restored by restoreEnv
  expect(await prewarmGoogleTokens(testApp.app, createLogger({ fn: 'test' }))).toEqual({ warmed: 2, failed: 0 });
  const before = sb.sqlAdmin!.count('sqladmin.connectSettings');
  expect(before).toBeGreaterThan(0);
  const r = await exchange();
  expect(r.json.connect_details).toBe('included');
  expect(sb.sqlAdmin!.count('sqladmin.connectSettings')).toBe(before);
});
