import { resolve } from 'node:path';
import { workerHost } from '../../helpers/loopback';
import { Client } from 'pg';

import { SANDBOX } from '../../../local/ids';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SQL_LOGIN_SCOPE } from '../../../local/emulators/google/state';
import { SQL_ADMIN_SCOPE } from '../../../local/emulators/google/sqladmin';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const handler = testApp.handler('query');

/**
 * End to end: real handler, real Entra emulator tokens, the unmodified Cloud SQL connector and pg talking
 * to the SQL Admin emulator and the Cloud SQL TLS endpoint on <worker loopback>:3307, real PostgreSQL.
 */

const HOST = workerHost(10);
const FIXTURES = resolve(__dirname, 'fixtures');
jest.setTimeout(60_000);

let sb: Sandbox;
const logs = captureLogs();
let restoreEnv: () => void;
let gatewayToken: string;
let readerToken: string;
let analystToken: string;
let strangerToken: string;

beforeAll(async () => {
  sb = await startSandbox({
    cloudSql: { host: HOST },
    env: {
      BROKER_POLICY_PATH: resolve(FIXTURES, 'policy.json'),
      QUERY_CATALOG_PATH: resolve(FIXTURES, 'catalog.json'),
      // Room for the connector's own bounded retries of a 5xx connectSettings (~3 s on a quiet machine; more on a
      // loaded CI runner, where 4 s once turned the 'sqladmin_unavailable' answer into 'connect_timeout').
      QUERY_CONNECT_TIMEOUT_MS: '9000',
    },
  });
  restoreEnv = sb.applyEnv();
  const subject = { aud: SANDBOX.subjectAudience };
  gatewayToken = await sb.entra.mint({
    oid: SANDBOX.gatewayObjectId,
    appId: SANDBOX.gatewayAppId,
    aud: SANDBOX.clientAudience,
    version: '1.0',
  });
  readerToken = await sb.entra.mint({ ...subject, oid: SANDBOX.readerObjectId, roles: ['Orders.Read'] });
  analystToken = await sb.entra.mint({
    ...subject,
    oid: '0b5e0000-0000-4000-8000-0000a4a1y575'.replace(/[^0-9a-f-]/g, '0'),
    roles: ['Orders.Analyst'],
  });
  strangerToken = await sb.entra.mint({ ...subject, oid: SANDBOX.strangerObjectId, roles: [] });
});

afterAll(async () => {
  logs.restore();
  await testApp.app.queryPools.closeAll();
  restoreEnv?.();
  await sb?.stop();
});

function query(
  name: string,
  body: unknown = {},
  caller: string = readerToken,
  headers: Record<string, string> = {},
): Promise<Result> {
  return invoke(handler, {
    url: `http://127.0.0.1:7071/api/query/${name}`,
    params: { name },
    headers: { authorization: `Bearer ${gatewayToken}`, 'x-subject-token': caller, ...headers },
    body,
  });
}

const allTokens = () => sb.google.state.allTokens();

function expectNoLeak(r: Result): void {
  for (const t of allTokens()) expect(r.text).not.toContain(t);
  expect(r.text).not.toMatch(
    /permission denied for|syntax error at|cannot execute|read-only transaction|canceling statement|terminating connection|Ada Lovelace/i,
  );
}

describe('happy path', () => {
  test('a caller runs a sample query and gets typed rows', async () => {
    const r = await query('orders-by-customer', {});
    expect(r.status).toBe(200);
    expect(r.json.columns).toEqual([
      { name: 'id', type: 'int8' },
      { name: 'status', type: 'text' },
      { name: 'total', type: 'numeric' },
      { name: 'placed_at', type: 'timestamptz' },
      { name: 'ship_date', type: 'date' },
      { name: 'items', type: 'int4' },
      { name: 'big_counter', type: 'int8' },
      { name: 'attributes', type: 'jsonb' },
      { name: 'customer', type: 'text' },
    ]);
    expect(r.json.rowCount).toBe(3);
    expect(r.json.truncated).toBe(false);
    const rows = r.json.rows as unknown[][];
    expect(rows[2]).toEqual([
      '101',
      'shipped',
      '1234.50',
      '2024-05-01T10:00:00Z',
      '2024-05-03',
      3,
      '9007199254740993',
      { gift: true },
      'Ada Lovelace',
    ]);
    expect(rows[0]![0]).toBe('104');
    expect(r.headers.get('x-correlation-id')).toBeTruthy();
    for (const t of allTokens()) expect(r.text).not.toContain(t);
  });

  test('an optional parameter narrows; order-count runs with and without it', async () => {
    const shipped = await query('orders-by-customer', { status: 'shipped' });
    expect(shipped.status).toBe(200);
    expect((shipped.json.rows as unknown[][]).map((x) => x[0])).toEqual(['101']);
    const all = await query('order-count', {});
    expect(all.status).toBe(200);
    expect(all.json.rows).toEqual([
      ['cancelled', '1'],
      ['open', '1'],
      ['shipped', '2'],
    ]);
    const since = await query('order-count', { since: '2024-06-02' });
    expect(since.json.rows).toEqual([
      ['cancelled', '1'],
      ['shipped', '1'],
    ]);
  });

  test('the row limit cuts the result and says so', async () => {
    const r = await query('many-rows', { count: 25 });
    expect(r.status).toBe(200);
    expect(r.json.rowCount).toBe(10);
    expect(r.json.truncated).toBe(true);
    // the same structured notice as the MCP tools (one query path): which limit, rows returned
    expect(r.json.notice).toEqual({ limit: 'rowLimit', value: 10, rowsReturned: 10 });
    const exact = await query('many-rows', { count: 10 });
    expect(exact.json.truncated).toBe(false);
    expect(exact.json.notice).toBeUndefined();
    expect(exact.json.rowCount).toBe(10);
    const eleven = await query('many-rows', { count: 11 });
    expect({ rowCount: eleven.json.rowCount, truncated: eleven.json.truncated }).toEqual({ rowCount: 10, truncated: true });
  });

  test('the row limit bounds the work on the server: rows past limit + 1 are never computed', async () => {
    // Row 12 divides by zero: a broker that fetched every row and then cut would fail with 400 (SQLSTATE 22012).
    const r = await query('row-11-fails');
    expect(r.status).toBe(200);
    expect(r.json.rowCount).toBe(10);
    expect(r.json.truncated).toBe(true);
    // The connection is fine for the next caller (the suspended portal ended with the transaction).
    expect((await query('order-count')).status).toBe(200);
  });

  test('the query ran as the IAM database user of the mapped service account, admitted by the instance', async () => {
    const before = sb.cloudSql!.stats.admitted;
    await testApp.app.queryPools.closeAll();
    const r = await query('order-count');
    expect(r.status).toBe(200);
    expect(sb.cloudSql!.stats.admitted).toBe(before + 1);
    expect(sb.sqlAdmin!.count('sqladmin.generateEphemeralCert')).toBeGreaterThan(0);
    // the connector's token came from the broker's token service (STS + IAM Credentials impersonation) with exactly the
    // Admin API's scope and the login scope: nothing broader (never cloud-platform)
    expect(sb.google.iamcredentials.count('iam.generateAccessToken')).toBeGreaterThan(0);
    const issued = [...sb.google.state.tokens.values()].filter((t) => t.principal === SANDBOX.google.readerServiceAccount);
    const connectorTokens = issued.filter((t) => t.scopes.length === 2);
    expect(connectorTokens.length).toBeGreaterThan(0);
    expect(
      connectorTokens.every((t) => [...t.scopes].sort().join(' ') === [SQL_ADMIN_SCOPE, SQL_LOGIN_SCOPE].sort().join(' ')),
    ).toBe(true);
    expect(issued.every((t) => t.scopes.every((x) => x === SQL_LOGIN_SCOPE || x === SQL_ADMIN_SCOPE))).toBe(true);
  });

  test('concurrent first requests share one connector set-up; connections stay within the pool bound', async () => {
    await testApp.app.queryPools.closeAll();
    sb.sqlAdmin!.resetCalls();
    const admittedBefore = sb.cloudSql!.stats.admitted;
    const results = await Promise.all(Array.from({ length: 20 }, () => query('order-count')));
    expect(results.map((r) => r.status)).toEqual(Array(20).fill(200));
    expect(sb.sqlAdmin!.count('sqladmin.connectSettings')).toBe(1);
    expect(sb.cloudSql!.stats.admitted - admittedBefore).toBeLessThanOrEqual(5); // QUERY_POOL_MAX default
  });
});

describe('authorization', () => {
  test('a caller mapped to the narrower analyst identity is refused by PostgreSQL itself (403)', async () => {
    const ok = await query('order-count', {}, analystToken);
    expect(ok.status).toBe(200); // column privileges allow counting
    const r = await query('orders-by-customer', {}, analystToken);
    expect(r.status).toBe(403);
    expect(r.json.code).toBe('db_permission_denied');
    expectNoLeak(r);
  });

  test('a caller without the query grant gets 403 not_granted, before any parameter is looked at', async () => {
    const r = await query('orders-by-customer', { status: 'nonsense' }, strangerToken);
    expect(r.status).toBe(403);
    expect(r.json.code).toBe('not_granted');
  });

  test('a granted query on a database the caller has no identity for is 403', async () => {
    const r = await query('billing-total');
    expect(r.status).toBe(403);
    expect(r.json.code).toBe('not_granted');
  });

  test('unknown query 404; missing gateway or caller token 401', async () => {
    expect((await query('no-such-query')).status).toBe(404);
    expect((await query('Bad Name!')).status).toBe(404);
    const noCaller = await invoke(handler, {
      params: { name: 'order-count' },
      headers: { authorization: `Bearer ${gatewayToken}` },
      body: {},
    });
    expect(noCaller.status).toBe(401);
    expect(noCaller.json.party).toBe('subject');
    const noGateway = await invoke(handler, {
      params: { name: 'order-count' },
      headers: { 'x-subject-token': readerToken },
      body: {},
    });
    expect(noGateway.status).toBe(401);
    // the caller's token is not a gateway token
    const swapped = await query('order-count', {}, readerToken, { authorization: `Bearer ${readerToken}` });
    expect(swapped.status).toBe(401);
  });
});

describe('bad input and SQL safety', () => {
  test('missing or bad parameters are 400 naming the parameter', async () => {
    const missing = await query('many-rows', {});
    expect(missing.status).toBe(400);
    expect(missing.json.parameter).toBe('count');
    const wrongType = await query('orders-by-customer', { status: 1 });
    expect(wrongType.status).toBe(400);
    expect(wrongType.json.parameter).toBe('status');
    const outOfEnum = await query('orders-by-customer', { status: 'lost' });
    expect(outOfEnum.json.parameter).toBe('status');
    // the customer is the caller: a customer id from the body is not a parameter any more
    const customerId = await query('orders-by-customer', { customerId: 2 });
    expect(customerId.status).toBe(400);
    expect(customerId.json.parameter).toBe('customerId');
    const extra = await query('orders-by-customer', { sql: 'DROP TABLE orders' });
    expect(extra.status).toBe(400);
    expect(extra.json.parameter).toBe('sql');
    const notObject = await invoke(handler, {
      params: { name: 'order-count' },
      headers: { authorization: `Bearer ${gatewayToken}`, 'x-subject-token': readerToken, 'content-type': 'application/json' },
      raw: '[1,2]',
    });
    expect(notObject.status).toBe(400);
  });

  test('an injection attempt in a parameter is just data', async () => {
    const bobby = "Robert'); DROP TABLE orders;--";
    const r = await query('customer-by-name', { name: bobby });
    expect(r.status).toBe(200);
    expect(r.json.rows).toEqual([['3', bobby]]);
    const tautology = await query('customer-by-name', { name: "' OR '1'='1" });
    expect(tautology.status).toBe(200);
    expect(tautology.json.rows).toEqual([]);
    const admin = new Client(sb.postgres!.admin('orders'));
    await admin.connect();
    const count = await admin.query('SELECT count(*)::int AS n FROM orders');
    await admin.end();
    expect(count.rows[0].n).toBe(4);
  });

  test('a write hidden in a catalogued query fails under READ ONLY (403), the sequence does not move', async () => {
    const r = await query('hidden-write');
    expect(r.status).toBe(403);
    expect(r.json.code).toBe('db_permission_denied');
    expectNoLeak(r);
    const admin = new Client(sb.postgres!.admin('orders'));
    await admin.connect();
    const seq = await admin.query('SELECT is_called FROM order_numbers');
    await admin.end();
    expect(seq.rows[0].is_called).toBe(false);
    // the connection went back to the pool in a usable state
    expect((await query('order-count')).status).toBe(200);
  });

  test('the statement timeout gives 504 with Retry-After', async () => {
    const r = await query('slow', { seconds: 2 });
    expect(r.status).toBe(504);
    expect(r.json.code).toBe('query_timeout');
    expect(r.headers.get('retry-after')).toBeTruthy();
    expectNoLeak(r);
    expect((await query('order-count')).status).toBe(200);
  });

  test('parameter fuzz (seeded): random types, sizes, unicode and nulls give only 200 or 400', async () => {
    let seed = 0x5eed;
    const rnd = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = seed;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const chars = [
      'a',
      'Z',
      '0',
      ' ',
      "'",
      '"',
      ';',
      '\\',
      '%',
      '_',
      '$1',
      '\0',
      'é',
      '漢',
      '😀',
      '\uD800',
      '\uDFFF',
      '\u202E',
      '\n',
      '--',
      '/*',
    ];
    const str = () => Array.from({ length: Math.floor(rnd() ** 3 * 400) }, () => pick(chars)).join('');
    const value = (): unknown =>
      pick([
        () => null,
        () => str(),
        () => Math.floor((rnd() - 0.5) * 4000),
        () => (rnd() - 0.5) * 1e12,
        () => pick([0, -0, 1e308, -1e-308, 2 ** 53, 2147483648, 1.5]),
        () => rnd() < 0.5,
        () =>
          pick([
            '2024-02-29',
            '2023-02-29',
            '0000-01-01',
            '2024-13-01',
            '2024-05-01T10:00:00Z',
            '2024-05-01T25:00:00+01:00',
            'AB-12',
            'ab-12',
          ]),
        () => pick(['8f14e45f-ceea-467f-a0e4-6b1b7e3a1f9a', '8f14e45f-ceea-467f-a0e4-6b1b7e3a1f9', '{}']),
        () => [str()],
        () => ({ nested: str() }),
        () => String(Math.floor(rnd() * 100)),
      ])();
    const names = ['i', 's', 'b', 'd', 't', 'u', 'f', 'p', 'customerId', 'status', 'x', ''];
    const seen = new Map<number, number>();
    for (let n = 0; n < 150; n++) {
      const body: Record<string, unknown> = {};
      const k = Math.floor(rnd() * 4);
      for (let j = 0; j < k; j++) body[pick(names)] = value();
      const target = rnd() < 0.75 ? 'fuzz-all' : 'orders-by-customer';
      const r = await query(target, body);
      seen.set(r.status, (seen.get(r.status) ?? 0) + 1);
      if (r.status !== 200 && r.status !== 400) throw new Error(`fuzz case ${n} ${JSON.stringify(body)} → ${r.status} ${r.text}`);
      if (r.status === 400) expect(r.json.code).toBe('invalid_parameter');
    }
    expect(seen.get(200)).toBeGreaterThan(5);
    expect(seen.get(400)).toBeGreaterThan(5);
  });
});

/** Wait until a pg_sleep statement is active on the server (observable, instead of sleeping and hoping). */
async function sleepRunning(): Promise<void> {
  const admin = new Client(sb.postgres!.admin(SANDBOX.google.database));
  await admin.connect();
  try {
    for (const end = Date.now() + 10_000; Date.now() < end;) {
      const r = await admin.query(
        "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(%' AND pid <> pg_backend_pid()",
      );
      if (r.rowCount) return;
      await new Promise((ok) => setTimeout(ok, 20));
    }
    throw new Error('the slow query never reached the server');
  } finally {
    await admin.end();
  }
}

describe('faults', () => {
  test('PostgreSQL stopped mid-run gives 503 with Retry-After and a reason, and recovers when it is back', async () => {
    expect((await query('order-count')).status).toBe(200);
    const inFlight = query('slow-ok', { seconds: 3 });
    await sleepRunning(); // the query is on the server, not still connecting
    await sb.postgres!.stop();
    const cut = await inFlight;
    expect(cut.status).toBe(503);
    expect(cut.json.code).toBe('db_unavailable');
    expect(cut.headers.get('retry-after')).toBeTruthy();
    const down = await query('order-count');
    expect(down.status).toBe(503);
    expect(down.json.reason).toBe('database_unavailable');
    expectNoLeak(down);
    await sb.postgres!.start();
    const back = await query('order-count');
    expect(back.status).toBe(200);
  });

  test('instance endpoint down gives 503 instance_unreachable; recovers when it is back', async () => {
    await testApp.app.queryPools.closeAll();
    await sb.cloudSql!.setDown(true);
    try {
      const r = await query('order-count');
      expect(r.status).toBe(503);
      expect(r.json.code).toBe('db_unavailable');
      expect(r.json.reason).toBe('instance_unreachable');
      expect(r.headers.get('retry-after')).toBeTruthy();
    } finally {
      await sb.cloudSql!.setDown(false);
    }
    expect((await query('order-count')).status).toBe(200);
  });

  test('a login token revoked upstream is refused once, then the login is retried with a fresh token: 200', async () => {
    expect((await query('order-count')).status).toBe(200); // a cached sqlservice.login token
    await testApp.app.queryPools.closeAll();
    const sa = SANDBOX.google.readerServiceAccount;
    const revoked = [...sb.google.state.tokens.values()].filter((t) => t.principal === sa && t.scopes.includes(SQL_LOGIN_SCOPE));
    expect(revoked.length).toBeGreaterThan(0);
    for (const t of revoked) sb.google.state.tokens.delete(t.token);
    const minted = sb.google.iamcredentials.count('iam.generateAccessToken');
    const r = await query('order-count');
    expect(r.status).toBe(200);
    // exactly one fresh token: the refused one was forgotten, not served again from the cache
    expect(sb.google.iamcredentials.count('iam.generateAccessToken')).toBe(minted + 1);
    expect(
      logs.records.some(
        (l) => l.msg === 'database login failed; retrying once with a fresh connector and token' && l.reason === 'token_refused',
      ),
    ).toBe(true);
    for (const t of revoked) expect(JSON.stringify(logs.records)).not.toContain(t.token);
  });

  test('a service account without roles/cloudsql.client on the instance is refused: 503 token_refused', async () => {
    await testApp.app.queryPools.closeAll();
    const inst = sb.sqlAdmin!.instances.get(`${SANDBOX.google.project}:${SANDBOX.google.region}:${SANDBOX.google.instance}`)!;
    inst.clients.delete(SANDBOX.google.readerServiceAccount);
    try {
      const r = await query('order-count');
      expect(r.status).toBe(503);
      expect(r.json.reason).toBe('token_refused');
    } finally {
      inst.clients.add(SANDBOX.google.readerServiceAccount);
    }
    expect((await query('order-count')).status).toBe(200);
  });

  test('SQL Admin answering 5xx gives 503 sqladmin_unavailable (after the connector’s own bounded retries)', async () => {
    await testApp.app.queryPools.closeAll();
    const undo = sb.sqlAdmin!.inject({ fault: { kind: 'status', status: 503 }, routes: ['sqladmin.connectSettings'] });
    try {
      const r = await query('order-count');
      expect(r.status).toBe(503);
      expect(r.json.reason).toBe('sqladmin_unavailable');
      expect(r.headers.get('retry-after')).toBeTruthy();
    } finally {
      undo();
    }
    expect((await query('order-count')).status).toBe(200);
  });
});

test('no token of any kind reaches a log line', () => {
  const text = JSON.stringify(logs.records);
  expect(logs.records.length).toBeGreaterThan(10);
  for (const t of [...allTokens(), gatewayToken, readerToken, analystToken, sb.postgres!.iamPassword])
    expect(text).not.toContain(t);
});
