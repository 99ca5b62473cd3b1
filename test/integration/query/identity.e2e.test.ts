import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Client } from 'pg';

import { SANDBOX } from '../../../local/ids';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { preamble, SESSION_SETTINGS, type SessionIdentity } from '../../../shared/query/session-identity';
import { runReadOnly } from '../../../shared/query/transaction';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { workerHost } from '../../helpers/loopback';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const handler = testApp.handler('query');

/**
 * The caller's identity reaches the data (issue #14), through the real sandbox: the sample catalog and policy
 * (plus two probe queries), the unmodified connector and pg, the emulated instance, real PostgreSQL with RLS.
 */

const HOST = workerHost(40);
const ROOT = resolve(__dirname, '..', '..', '..');
jest.setTimeout(60_000);

let sb: Sandbox;
let dir: string;
let restoreEnv: () => void;
const logs = captureLogs();
let gateway: string;
const tokens: Record<string, string> = {};

const PROBES = [
  {
    name: 'whoami',
    instance: 'sandbox-project:europe-west1:orders-db',
    database: 'orders',
    sql: "SELECT pg_backend_pid() AS pid, current_setting('broker.caller_oid', true) AS oid, current_setting('broker.caller_tid', true) AS tid, current_setting('broker.caller_app_id', true) AS app, current_setting('broker.rule_id', true) AS rule, current_setting('broker.correlation_id', true) AS cid, current_setting('application_name') AS appname, current_setting('transaction_read_only') AS ro, current_setting('statement_timeout') AS st",
    rowLimit: 1,
    timeoutMs: 3000,
  },
  {
    name: 'whoami-claim',
    instance: 'sandbox-project:europe-west1:orders-db',
    database: 'orders',
    sql: 'SELECT $1::text AS upn, $2::text AS tid',
    parameters: [
      { name: 'upn', from: 'claim', claim: 'preferred_username' },
      { name: 'tenant', from: 'caller.tid' },
    ],
    rowLimit: 1,
    timeoutMs: 2000,
  },
  {
    name: 'traceparent',
    instance: 'sandbox-project:europe-west1:orders-db',
    database: 'orders',
    sql: "SELECT current_setting('broker.traceparent', true) AS tp",
    rowLimit: 1,
    timeoutMs: 2000,
  },
  {
    name: 'sleepy',
    instance: 'sandbox-project:europe-west1:orders-db',
    database: 'orders',
    sql: 'SELECT pg_sleep($1) AS slept',
    parameters: [{ name: 'seconds', type: 'number', min: 0, max: 3 }],
    rowLimit: 1,
    timeoutMs: 5000,
  },
];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'identity-e2e-'));
  const catalog = JSON.parse(readFileSync(resolve(ROOT, 'local/queries.json'), 'utf8')) as { queries: unknown[] };
  catalog.queries.push(...PROBES);
  writeFileSync(join(dir, 'queries.json'), JSON.stringify(catalog));
  const policy = JSON.parse(readFileSync(resolve(ROOT, 'local/sample-policy.json'), 'utf8')) as {
    rules: { id: string; grants: { queries: string[] } }[];
  };
  for (const r of policy.rules)
    if (r.id === 'orders-readers' || r.id === 'ticket-owners')
      r.grants.queries.push('whoami', 'whoami-claim', 'sleepy', 'traceparent');
  writeFileSync(join(dir, 'policy.json'), JSON.stringify(policy));
  sb = await startSandbox({
    cloudSql: { host: HOST },
    env: {
      QUERY_CATALOG_PATH: join(dir, 'queries.json'),
      BROKER_POLICY_PATH: join(dir, 'policy.json'),
      QUERY_POOL_MAX: '1',
      QUERY_CONNECT_TIMEOUT_MS: '4000',
    },
  });
  restoreEnv = sb.applyEnv();
  const aud = SANDBOX.subjectAudience;
  gateway = await sb.entra.mint({
    oid: SANDBOX.gatewayObjectId,
    appId: SANDBOX.gatewayAppId,
    aud: SANDBOX.clientAudience,
    version: '1.0',
  });
  tokens.ada = await sb.entra.mint({
    aud,
    oid: SANDBOX.readerObjectId,
    roles: ['Orders.Read'],
    appId: '11110000-0000-4000-8000-00000000a001',
  });
  tokens.grace = await sb.entra.mint({ aud, oid: SANDBOX.secondReaderObjectId, roles: ['Orders.Read'], omit: ['azp', 'appid'] });
  tokens.adaTickets = await sb.entra.mint({ aud, oid: SANDBOX.readerObjectId, roles: ['Tickets.Read'] });
  tokens.graceTickets = await sb.entra.mint({ aud, oid: SANDBOX.secondReaderObjectId, roles: ['Tickets.Read'] });
  tokens.adaUpn = await sb.entra.mint({
    aud,
    oid: SANDBOX.readerObjectId,
    roles: ['Orders.Read'],
    extra: { preferred_username: 'ada@example.com' },
  });
  tokens.nobodyTickets = await sb.entra.mint({ aud, oid: '0b5e0000-0000-4000-8000-00000000beef', roles: ['Tickets.Read'] });
});

afterAll(async () => {
  logs.restore();
  await testApp.app.queryPools.closeAll();
  restoreEnv?.();
  await sb?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function query(name: string, caller: string, body: unknown = {}, headers: Record<string, string> = {}): Promise<Result> {
  return invoke(handler, {
    url: `http://127.0.0.1:7071/api/query/${name}`,
    params: { name },
    headers: { authorization: `Bearer ${gateway}`, 'x-subject-token': caller, ...headers },
    body,
  });
}

async function admin<T>(fn: (c: Client) => Promise<T>): Promise<T> {
  const c = new Client(sb.postgres!.admin('orders'));
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** A plain pg session as the reader's IAM database user (no broker, no settings of its own). */
async function readerSession(): Promise<Client> {
  const c = new Client({
    ...sb.postgres!.admin('orders'),
    user: 'orders-reader@sandbox-project.iam',
    password: sb.postgres!.iamPassword,
  });
  await c.connect();
  return c;
}

describe('identity-bound parameters', () => {
  test('orders-by-customer answers each caller only their own customer’s orders', async () => {
    const ada = await query('orders-by-customer', tokens.ada!);
    const grace = await query('orders-by-customer', tokens.grace!);
    expect(ada.status).toBe(200);
    expect((ada.json.rows as unknown[][]).map((r) => r[0]).sort()).toEqual(['101', '102', '104']);
    expect(new Set((ada.json.rows as unknown[][]).map((r) => r[8]))).toEqual(new Set(['Ada Lovelace']));
    expect((grace.json.rows as unknown[][]).map((r) => r[0])).toEqual(['103']);
  });

  test('the caller cannot supply or override the bound customer: 400 naming the parameter, nothing runs', async () => {
    const before = sb.cloudSql!.stats.admitted;
    for (const body of [
      { callerOid: SANDBOX.secondReaderObjectId },
      { callerOid: null },
      { callerOid: SANDBOX.readerObjectId, status: 'open' },
      { customerId: 2 },
    ]) {
      const r = await query('orders-by-customer', tokens.ada!, body);
      expect([r.status, r.json.code]).toEqual([400, 'invalid_parameter']);
      expect(r.json.parameter).toBe(Object.keys(body)[0]);
    }
    expect(sb.cloudSql!.stats.admitted).toBe(before);
    // the attempt is audited as a denial (with the rule, without the value)
    logs.records.length = 0;
    await query('orders-by-customer', tokens.ada!, { callerOid: SANDBOX.secondReaderObjectId });
    const ev = logs.records.find((l) => (l as unknown as Record<string, unknown>).event === 'audit') as unknown as Record<
      string,
      unknown
    >;
    expect(ev).toMatchObject({ action: 'query', decision: 'deny', reason: 'invalid_parameter', ruleId: 'orders-readers' });
    expect(JSON.stringify(ev)).not.toContain(SANDBOX.secondReaderObjectId);
  });
});

test('nor through headers, the query string, a second subject token or other claims: only the validated token binds', async () => {
  const other = SANDBOX.secondReaderObjectId;
  const isAda = (r: Result) => {
    expect(r.status).toBe(200);
    const row = (r.json.rows as unknown[][])[0]!;
    expect([row[1], row[2]]).toEqual([SANDBOX.readerObjectId, SANDBOX.tenantId]);
  };
  // Headers a platform or a proxy might be trusted for elsewhere: never read.
  isAda(
    await query(
      'whoami',
      tokens.ada!,
      {},
      {
        'x-ms-client-principal-id': other,
        'x-ms-client-principal-name': 'grace@example.com',
        'x-ms-token-aad-access-token': tokens.grace!,
        'x-caller-oid': other,
        'x-forwarded-user': other,
        'x-user-id': other,
      },
    ),
  );
  // The query string: never read as parameters (a repeated one is 400 before anything is judged).
  const qs = await invoke(handler, {
    url: `http://127.0.0.1:7071/api/query/whoami?callerOid=${other}&oid=${other}&caller.oid=${other}`,
    params: { name: 'whoami' },
    headers: { authorization: `Bearer ${gateway}`, 'x-subject-token': tokens.ada! },
    body: {},
  });
  isAda(qs);
  // Two subject tokens in one header (a repeated X-Subject-Token as a Headers object joins it): refused, never one of them.
  const two = await query('whoami', tokens.ada!, {}, { 'x-subject-token': `${tokens.grace!}, ${tokens.ada!}` });
  expect(two.status).toBe(401);
  expect(two.json.rows).toBeUndefined();
  // Other claims naming someone else: the identity is oid / tid / azp, nothing else the token says.
  const forged = await sb.entra.mint({
    aud: SANDBOX.subjectAudience,
    oid: SANDBOX.readerObjectId,
    roles: ['Orders.Read'],
    extra: { sub: other, callerOid: other, 'caller.oid': other, oid_: other, upn: 'grace@example.com', xms_tid: 'x' },
  });
  isAda(await query('whoami', forged));
  // The body: a parameter the query does not declare is refused, naming it.
  const body = await query('whoami', tokens.ada!, { oid: other });
  expect([body.status, body.json.parameter]).toEqual([400, 'oid']);
});

test('a parameter bound to a named claim takes the claim of the caller’s token; without the claim the query is refused', async () => {
  const r = await query('whoami-claim', tokens.adaUpn!);
  expect(r.status).toBe(200);
  expect(r.json.rows).toEqual([['ada@example.com', SANDBOX.tenantId]]);
  const forged = await query('whoami-claim', tokens.adaUpn!, { upn: 'grace@example.com' });
  expect([forged.status, forged.json.parameter]).toEqual([400, 'upn']);
  const missing = await query('whoami-claim', tokens.ada!);
  expect([missing.status, missing.json.code]).toEqual([403, 'not_granted']);
});

describe('row-level security on broker.caller_oid', () => {
  test('two callers with the same role and the same query get only their own rows', async () => {
    const ada = await query('my-tickets', tokens.adaTickets!);
    const grace = await query('my-tickets', tokens.graceTickets!);
    const nobody = await query('my-tickets', tokens.nobodyTickets!);
    expect(ada.status).toBe(200);
    expect((ada.json.rows as unknown[][]).map((r) => r[0])).toEqual(['1', '2']);
    expect((grace.json.rows as unknown[][]).map((r) => r[0])).toEqual(['3']);
    expect(nobody.json.rows).toEqual([]);
  });

  test('a session of the reader role without the setting sees no row; the table has rows', async () => {
    const c = await readerSession();
    try {
      expect((await c.query('SELECT count(*)::int AS n FROM support_tickets')).rows[0].n).toBe(0);
      // a session-level setting by the reader itself would work, which is why only the broker may log in as it
      await c.query('BEGIN READ ONLY');
      await c.query("SELECT set_config('broker.caller_oid', $1, true)", [SANDBOX.secondReaderObjectId]);
      expect((await c.query('SELECT id FROM support_tickets')).rows.map((r: { id: string }) => r.id)).toEqual(['3']);
      await c.query('ROLLBACK');
      expect((await c.query('SELECT count(*)::int AS n FROM support_tickets')).rows[0].n).toBe(0);
    } finally {
      await c.end();
    }
    expect(await admin(async (a) => (await a.query('SELECT count(*)::int AS n FROM support_tickets')).rows[0].n)).toBe(4);
  });
});

describe('per-transaction identity', () => {
  test('the transaction sees the caller, the rule, the correlation id, READ ONLY and the query’s timeout', async () => {
    const r = await query('whoami', tokens.ada!, {}, { 'x-correlation-id': 'corr-ada-0001' });
    expect(r.status).toBe(200);
    const [, oid, tid, app, rule, cid, appname, ro, st] = (r.json.rows as unknown[][])[0]!;
    expect([oid, tid, app, rule, cid]).toEqual([
      SANDBOX.readerObjectId,
      SANDBOX.tenantId,
      '11110000-0000-4000-8000-00000000a001',
      'orders-readers',
      'corr-ada-0001',
    ]);
    expect([appname, ro, st]).toEqual(['token-broker/whoami/corr-ada-0001', 'on', '3s']);
  });

  test('pool of one connection: the next caller on the same connection never sees the previous caller’s settings', async () => {
    const a = await query('whoami', tokens.ada!, {}, { 'x-correlation-id': 'corr-ada-0002' });
    const b = await query('whoami', tokens.grace!, {}, { 'x-correlation-id': 'corr-grace-0002' });
    const [pidA, oidA, , appA] = (a.json.rows as unknown[][])[0]!;
    const [pidB, oidB, , appB, , cidB] = (b.json.rows as unknown[][])[0]!;
    expect(pidB).toBe(pidA); // the same pooled connection
    expect(oidA).toBe(SANDBOX.readerObjectId);
    expect([oidB, cidB]).toEqual([SANDBOX.secondReaderObjectId, 'corr-grace-0002']);
    expect(appA).not.toBe('');
    expect(appB).toBe(''); // Grace's token has no app id: nothing of Ada's is left over
    // between requests the idle connection is back to its session values
    const idle = await admin(
      async (c) => (await c.query('SELECT application_name, state FROM pg_stat_activity WHERE pid = $1', [pidA])).rows[0],
    );
    expect(idle).toEqual({ application_name: 'token-broker-query', state: 'idle' });
  });

  test('set_config(…, true) settings are gone after the transaction on the same connection', async () => {
    const c = await readerSession();
    try {
      const id: SessionIdentity = {
        callerOid: 'oid-a',
        callerTid: 'tid-a',
        callerAppId: 'app-a',
        ruleId: 'rule-a',
        correlationId: 'cid-a',
        applicationName: 'app-name-a',
        statementTimeoutMs: 1234,
      };
      const deadlines = { preamble: 5000, query: 5000, rollback: 5000 };
      const sql = `SELECT ${SESSION_SETTINGS.map((s) => `current_setting('${s}', true)`).join(', ')}, current_setting('application_name'), current_setting('transaction_read_only'), current_setting('statement_timeout')`;
      // One round trip: BEGIN READ ONLY, the settings, the query, ROLLBACK
      const inside = await runReadOnly(c as never, { identity: id, comment: '', sql, values: [], maxRows: 10, deadlines });
      expect(inside.rows).toEqual([
        ['oid-a', 'tid-a', 'app-a', 'rule-a', 'cid-a', 'entra', '', '', '', '', 'app-name-a', 'on', '1234ms'],
      ]);
      expect(inside.suspended).toBe(false);
      // already rolled back in the same round trip: nothing is left on the connection
      expect((await c.query('SELECT now() = statement_timestamp() AS outside')).rows[0].outside).toBe(true);
      // the settings statement answers one row of no column (nothing echoed back), and still sets every value
      const pre = preamble(id, '');
      await c.query('BEGIN READ ONLY');
      const echoed = await c.query(pre.settings, pre.values);
      expect([echoed.rowCount, echoed.fields.length]).toEqual([1, 0]);
      const set = await c.query({
        text: `SELECT ${SESSION_SETTINGS.map((s) => `current_setting('${s}', true)`).join(', ')}, current_setting('application_name'), current_setting('statement_timeout')`,
        rowMode: 'array',
      });
      expect(set.rows[0]).toEqual([
        'oid-a',
        'tid-a',
        'app-a',
        'rule-a',
        'cid-a',
        'entra',
        '',
        '',
        '',
        '',
        'app-name-a',
        '1234ms',
      ]);
      await c.query('ROLLBACK');
      const after = await c.query(
        `SELECT ${SESSION_SETTINGS.map((s) => `coalesce(current_setting('${s}', true), '') AS "${s}"`).join(', ')}`,
      );
      expect(Object.values(after.rows[0])).toEqual(SESSION_SETTINGS.map(() => ''));
      // a failing preamble: the query never runs, the transaction is left aborted for the caller to roll back
      await expect(
        runReadOnly(c as never, {
          identity: { ...id, statementTimeoutMs: -5 },
          comment: '',
          sql: 'SELECT 1',
          values: [],
          maxRows: 1,
          deadlines,
        }),
      ).rejects.toThrow();
      expect(
        (await c.query('SELECT 1 AS one').catch((e: { code?: string }) => ({ code: e.code }))) as { code?: string },
      ).toMatchObject({ code: '25P02' });
      await c.query('ROLLBACK');
      expect((await c.query("SELECT coalesce(current_setting('broker.caller_oid', true), '') AS o")).rows[0].o).toBe('');
    } finally {
      await c.end();
    }
  });
});

describe('per-phase deadlines of the one round trip', () => {
  test('until a first answer the pipeline has the larger of the preamble’s and the query’s deadlines', async () => {
    const c = await readerSession();
    try {
      const id: SessionIdentity = {
        callerOid: 'oid-a',
        callerTid: 'tid-a',
        ruleId: 'rule-a',
        correlationId: 'cid-a',
        applicationName: 'app-name-a',
        statementTimeoutMs: 5000,
      };
      const sleep = (seconds: number, deadlines: { preamble: number; query: number; rollback: number }) =>
        runReadOnly(c as never, {
          identity: id,
          comment: '',
          sql: 'SELECT pg_sleep($1) AS slept',
          values: [String(seconds)],
          maxRows: 1,
          deadlines,
        });
      // PostgreSQL answers the whole pipeline at its Sync: the preamble's completion is not seen before the query's.
      // A query within its own deadline but past the preamble's is not cut (it was, before: a catalogued timeoutMs
      // above QUERY_CONNECT_TIMEOUT_MS answered 503).
      expect((await sleep(0.6, { preamble: 200, query: 3000, rollback: 3000 })).rows).toEqual([['']]);
      // Past both: nothing answered, so the server stopped answering (the preamble's phase: 503 database_unresponsive).
      const t0 = performance.now();
      await expect(sleep(3, { preamble: 200, query: 300, rollback: 3000 })).rejects.toMatchObject({
        name: 'DeadlineExceeded',
        phase: 'preamble',
        ms: 300,
      });
      expect(performance.now() - t0).toBeLessThan(2500);
    } finally {
      await c.end().catch(() => undefined);
    }
  });
});

describe('prepared statements', () => {
  test('each statement is parsed once per connection and then only bound and executed; an error leaves none half-known', async () => {
    const c = await readerSession();
    try {
      const id = (correlationId: string): SessionIdentity => ({
        callerOid: 'oid-a',
        callerTid: 'tid-a',
        ruleId: 'rule-a',
        correlationId,
        applicationName: `token-broker/q/${correlationId}`,
        statementTimeoutMs: 2000,
        traceparent: `00-${correlationId.padEnd(32, '0')}-00f067aa0ba902b7-01`,
      });
      const deadlines = { preamble: 5000, query: 5000, rollback: 5000 };
      const comment = "/*app='token-broker',query='q',rule='rule-a'*/";
      const sql = "SELECT current_setting('broker.correlation_id', true) AS cid, $1::int AS n";
      const run = (cid: string, n: string) =>
        runReadOnly(c as never, { identity: id(cid), comment, sql, values: [n], maxRows: 10, deadlines });
      const prepared = async () =>
        (
          await c.query<{ statement: string; generic_plans: string; custom_plans: string }>(
            "SELECT statement, generic_plans::int + custom_plans::int AS runs FROM pg_prepared_statements WHERE name LIKE 'tb\\_%' ORDER BY statement",
          )
        ).rows as unknown as { statement: string; runs: number }[];
      expect((await run('aaaa1', '1')).rows).toEqual([['aaaa1', '1']]);
      const once = await prepared();
      // BEGIN READ ONLY, the settings, the query, ROLLBACK: four named statements, each with the stable comment only
      expect(once.map((p) => p.statement).sort()).toEqual([
        `BEGIN READ ONLY ${comment}`,
        `ROLLBACK ${comment}`,
        expect.stringMatching(
          /^SELECT FROM \(SELECT set_config\('statement_timeout', \$1, true\), .*set_config\('broker\.traceparent', \$\d+, true\)\) AS settings \/\*app=/,
        ),
        `${sql} ${comment}`,
      ]);
      // Other ids, other values: the same four statements, run again without a new Parse
      expect((await run('bbbb2', '2')).rows).toEqual([['bbbb2', '2']]);
      const twice = await prepared();
      expect(twice.map((p) => p.statement)).toEqual(once.map((p) => p.statement));
      const q = twice.find((p) => p.statement.startsWith('SELECT current_setting'))!;
      expect(Number(q.runs)).toBe(2);
      // A failing query (a bad cast): the pipeline stops, the transaction is rolled back by the caller; the next run
      // closes and parses again whatever was not known to be prepared, and works
      await expect(run('cccc3', 'not-a-number')).rejects.toThrow();
      await c.query('ROLLBACK');
      expect((await run('dddd4', '4')).rows).toEqual([['dddd4', '4']]);
      expect((await prepared()).length).toBe(4);
      // writes are still refused inside the prepared read-only transaction
      await expect(
        runReadOnly(c as never, {
          identity: id('eeee5'),
          comment,
          sql: 'UPDATE orders SET status = status WHERE false',
          values: [],
          maxRows: 1,
          deadlines,
        }),
      ).rejects.toThrow(/read-only transaction/);
      await c.query('ROLLBACK');
    } finally {
      await c.end();
    }
  });
});

describe('correlation into the database', () => {
  /** The first pg_stat_activity row of another backend matching `where` while `pending` runs. */
  async function watch(
    where: string,
    pending: Promise<Result>,
  ): Promise<{ seen?: { query: string; application_name: string }; r: Result }> {
    let seen: { query: string; application_name: string } | undefined;
    for (let i = 0; i < 100 && !seen; i++) {
      seen = await admin(
        async (c) =>
          (await c.query(`SELECT query, application_name FROM pg_stat_activity WHERE ${where} AND pid <> pg_backend_pid()`))
            .rows[0],
      );
      if (!seen) await new Promise((r) => setTimeout(r, 30));
    }
    return { seen, r: await pending };
  }

  test('the stable sqlcommenter tags and the per-request application_name reach PostgreSQL (pg_stat_activity); traceparent is continued and returned', async () => {
    const incoming = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const { seen, r } = await watch(
      "application_name = 'token-broker/sleepy/corr-sleepy-0001' AND query LIKE '%pg_sleep%'",
      query('sleepy', tokens.ada!, { seconds: 1.5 }, { 'x-correlation-id': 'corr-sleepy-0001', traceparent: incoming }),
    );
    expect(r.status).toBe(200);
    const tp = r.headers.get('traceparent')!;
    expect(tp).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
    expect(tp).not.toBe(incoming);
    expect(seen).toBeDefined();
    // The text is the same for every request of this query and rule (prepared once per connection): the
    // per-request ids are in application_name and the transaction-local settings, not in the comment.
    expect(seen!.query).toBe("SELECT pg_sleep($1) AS slept /*app='token-broker',query='sleepy',rule='orders-readers'*/");
    expect(seen!.application_name).toBe('token-broker/sleepy/corr-sleepy-0001');
  });

  test('the transaction-local settings carry the correlation id and the traceparent', async () => {
    const incoming = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const r = await query('whoami', tokens.ada!, {}, { 'x-correlation-id': 'corr-whoami-0001', traceparent: incoming });
    expect(r.status).toBe(200);
    const row = (r.json.rows as unknown[][])[0]!;
    expect(row[5]).toBe('corr-whoami-0001');
    expect(row[6]).toBe('token-broker/whoami/corr-whoami-0001');
    const probe = await query('traceparent', tokens.ada!, {}, { traceparent: incoming });
    expect(probe.status).toBe(200);
    expect((probe.json.rows as unknown[][])[0]![0]).toBe(probe.headers.get('traceparent'));
  });

  test('QUERY_SQL_COMMENT_TRACEPARENT=true keeps the traceparent in the comment (Query Insights trace linking)', async () => {
    process.env.QUERY_SQL_COMMENT_TRACEPARENT = 'true';
    try {
      const incoming = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
      const { seen, r } = await watch(
        "application_name = 'token-broker/sleepy/corr-sleepy-0002' AND query LIKE '%pg_sleep%'",
        query('sleepy', tokens.ada!, { seconds: 1.2 }, { 'x-correlation-id': 'corr-sleepy-0002', traceparent: incoming }),
      );
      expect(r.status).toBe(200);
      const tp = r.headers.get('traceparent')!;
      expect(seen!.query).toBe(
        `SELECT pg_sleep($1) AS slept /*app='token-broker',query='sleepy',rule='orders-readers',traceparent='${tp}'*/`,
      );
    } finally {
      delete process.env.QUERY_SQL_COMMENT_TRACEPARENT;
    }
  });

  test('hostile traceparent, tracestate and x-correlation-id: nothing of them reaches the SQL text', async () => {
    // A valid future version whose extra fields carry SQL: the trace is continued, the extra fields never travel.
    const incoming = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-'*/; DROP TABLE orders; --";
    for (const traceInComment of [false, true]) {
      if (traceInComment) process.env.QUERY_SQL_COMMENT_TRACEPARENT = 'true';
      try {
        const { seen, r } = await watch(
          "application_name LIKE 'token-broker/sleepy/4bf92f3577b34da6a3ce929d0e0e4736%' AND query LIKE '%pg_sleep%'",
          query(
            'sleepy',
            tokens.ada!,
            { seconds: 1.2 },
            {
              traceparent: incoming,
              tracestate: "congo='*/ DROP TABLE orders; /*,rojo=00f067aa0ba902b7",
              'x-correlation-id': "x'*/; DROP TABLE orders; --",
            },
          ),
        );
        expect(r.status).toBe(200);
        const tp = r.headers.get('traceparent')!;
        expect(tp).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
        // The malformed correlation id is replaced by the trace id: one trace named everywhere.
        expect(r.headers.get('x-correlation-id')).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
        expect(seen!.application_name).toBe('token-broker/sleepy/4bf92f3577b34da6a3ce929d0e0e4736');
        expect(seen!.query).toBe(
          `SELECT pg_sleep($1) AS slept /*app='token-broker',query='sleepy',rule='orders-readers'${traceInComment ? `,traceparent='${tp}'` : ''}*/`,
        );
        expect(seen!.query).not.toMatch(/DROP|congo|rojo/);
      } finally {
        delete process.env.QUERY_SQL_COMMENT_TRACEPARENT;
      }
    }
  });

  test('an invalid traceparent starts a new trace; every response (errors too) carries one', async () => {
    const r = await query('whoami', tokens.ada!, {}, { traceparent: '00-00000000000000000000000000000000-00f067aa0ba902b7-01' });
    expect(r.headers.get('traceparent')).toMatch(/^00-(?!0{32})[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const bad = await query('orders-by-customer', tokens.ada!, { callerOid: 'x' });
    expect(bad.headers.get('traceparent')).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
  });

  test('the audit event names the parameters given, the identity-bound ones, the rows and the duration — never values', async () => {
    logs.records.length = 0;
    const r = await query('orders-by-customer', tokens.ada!, { status: 'shipped' }, { 'x-correlation-id': 'corr-audit-0001' });
    expect(r.status).toBe(200);
    const ev = logs.records.find((l) => (l as unknown as Record<string, unknown>).event === 'audit') as unknown as Record<
      string,
      unknown
    >;
    expect(ev).toMatchObject({
      action: 'query',
      decision: 'grant',
      ruleId: 'orders-readers',
      parameters: ['status'],
      identityParameters: ['callerOid'],
      rows: 1,
    });
    // One line per request: the audit event is on the wrapper's request line (its durationMs is the request's),
    // with the database step's own time beside it.
    expect(ev.msg).toBe('request');
    expect(logs.records.filter((l) => l.correlationId === 'corr-audit-0001')).toHaveLength(1);
    expect([typeof ev.durationMs, typeof ev.dbDurationMs]).toEqual(['number', 'number']);
    expect(ev.dbDurationMs as number).toBeLessThanOrEqual(ev.durationMs as number);
    expect(JSON.stringify(ev)).not.toContain('shipped');
  });
});
