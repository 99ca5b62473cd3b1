import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { workerHost } from '../../helpers/loopback';

import { SANDBOX } from '../../../local/ids';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const queryHandler = testApp.handler('query');
const tokenHandler = testApp.handler('token');
const healthHandler = testApp.handler('health');

/**
 * The database failing under load (issue #19): killed, stopped (no answer at all), cut by the instance.
 * Real handlers, the unmodified connector and pg, real PostgreSQL; faults from outside the broker.
 */

const HOST = workerHost(50);
const FIXTURES = resolve(__dirname, 'fixtures');
const G = SANDBOX.google;
jest.setTimeout(90_000);

let sb: Sandbox;
const logs = captureLogs();
let restoreEnv: () => void;
let gatewayToken: string;
let readerToken: string;

beforeAll(async () => {
  sb = await startSandbox({
    cloudSql: { host: HOST },
    env: {
      BROKER_POLICY_PATH: resolve(FIXTURES, 'policy.json'),
      QUERY_CATALOG_PATH: resolve(FIXTURES, 'catalog.json'),
      QUERY_CONNECT_TIMEOUT_MS: '3000',
    },
  });
  restoreEnv = sb.applyEnv();
  gatewayToken = await sb.entra.mint({
    oid: SANDBOX.gatewayObjectId,
    appId: SANDBOX.gatewayAppId,
    aud: SANDBOX.clientAudience,
    version: '1.0',
  });
  readerToken = await sb.entra.mint({ aud: SANDBOX.subjectAudience, oid: SANDBOX.readerObjectId, roles: ['Orders.Read'] });
});

afterAll(async () => {
  logs.restore();
  await testApp.app.queryPools.closeAll();
  restoreEnv?.();
  await sb?.stop();
});

function query(name: string, body: unknown = {}): Promise<Result> {
  return invoke(queryHandler, {
    url: `http://127.0.0.1:7071/api/query/${name}`,
    params: { name },
    headers: { authorization: `Bearer ${gatewayToken}`, 'x-subject-token': readerToken },
    body,
  });
}

function exchange(): Promise<Result> {
  return invoke(tokenHandler, {
    url: 'http://127.0.0.1:7071/api/token',
    headers: { authorization: `Bearer ${gatewayToken}` },
    form: {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      subject_token: readerToken,
      resource: `cloudsql://${G.project}/${G.region}/${G.instance}/${G.database}`,
    },
  });
}

const health = () => invoke(healthHandler, { method: 'GET', url: 'http://127.0.0.1:7071/api/health' });

/** Run `workers` query loops until `stop()`; every answer is recorded with how long it took. */
function load(workers: number, name = 'order-count', body: unknown = {}) {
  const answers: { status: number; ms: number; retryAfter: string | null; code: unknown }[] = [];
  let running = true;
  const loops = Array.from({ length: workers }, async () => {
    while (running) {
      const t0 = performance.now();
      const r = await query(name, body);
      answers.push({ status: r.status, ms: performance.now() - t0, retryAfter: r.headers.get('retry-after'), code: r.json.code });
      // A quick refusal must not starve the timers of the test itself.
      await new Promise((r) => setTimeout(r, 5));
    }
  });
  return {
    answers,
    async stop() {
      running = false;
      await Promise.all(loops);
      return answers;
    },
  };
}

/** The postmaster and its children (backends, background workers). */
function serverProcesses(postmaster: number): number[] {
  const out = execFileSync('ps', ['-o', 'pid=', '--ppid', String(postmaster)], { encoding: 'utf8' });
  return [postmaster, ...out.split(/\s+/).filter(Boolean).map(Number)];
}

async function until(cond: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}

const okOrClean = (a: { status: number; retryAfter: string | null }) =>
  a.status === 200 || ((a.status === 503 || a.status === 504) && a.retryAfter !== null);

async function databaseCheck(): Promise<{ httpStatus: number; status: unknown; degraded: unknown }> {
  const h = await health();
  const checks = h.json.checks as Record<string, { status: string }>;
  return { httpStatus: h.status, status: checks.database?.status, degraded: h.json.degraded };
}

describe('PostgreSQL killed (SIGKILL) under concurrent load', () => {
  test('queries answer 200 or 503/504 with Retry-After, token exchange and health keep answering, then recover', async () => {
    expect((await query('order-count')).status).toBe(200);
    const l = load(8, 'slow-ok', { seconds: 0.2 });
    try {
      await until(async () => l.answers.filter((a) => a.status === 200).length >= 8, 20_000);
      process.kill(sb.postgres!.pid!, 'SIGKILL');
      const killedAt = performance.now();
      await until(async () => l.answers.some((a) => a.status === 503), 10_000);
      // While the database is gone, the rest of the broker answers, and health says which part is degraded.
      expect((await exchange()).status).toBe(200);
      expect(await databaseCheck()).toEqual({ httpStatus: 200, status: 'fail', degraded: ['database'] });
      const down = await query('order-count');
      expect(down.status).toBe(503);
      expect(down.json.code).toBe('db_unavailable');
      expect(down.headers.get('retry-after')).toBeTruthy();
      const answers = await l.stop();
      expect(answers.filter((a) => !okOrClean(a))).toEqual([]);
      // Within the documented bound: the connect timeout (3 s here) plus the query's own deadline.
      expect(Math.max(...answers.map((a) => a.ms))).toBeLessThan(3_000 + 2_000 + 2_000 + 1_000);
      expect(performance.now() - killedAt).toBeLessThan(30_000);
    } finally {
      await l.stop();
    }
    // Back: the next queries succeed without a broker restart; health shows it without a caller's query.
    await sb.postgres!.start();

    await until(async () => (await databaseCheck()).status === 'ok', 20_000);
    expect((await query('order-count')).status).toBe(200);
  });
});

describe('the instance stops answering (partition, SIGSTOP)', () => {
  test('emulated partition: every query answers within its deadline with 503/504 + Retry-After, then recovers', async () => {
    expect((await query('order-count')).status).toBe(200);
    sb.cloudSql!.setStalled(true);
    const l = load(4);
    try {
      await new Promise((r) => setTimeout(r, 6_000));
      expect((await exchange()).status).toBe(200);
      const answers = await l.stop();
      expect(answers.length).toBeGreaterThan(0);
      expect(answers.filter((a) => a.status === 200 || !okOrClean(a))).toEqual([]);
      expect(Math.max(...answers.map((a) => a.ms))).toBeLessThan(3_000 + 1_000 + 1_500);
    } finally {
      await l.stop();
      sb.cloudSql!.setStalled(false);
    }
    await until(async () => (await query('order-count')).status === 200, 15_000);
  });

  test('real SIGSTOP of PostgreSQL: a query in flight answers by its deadline, not when the server resumes', async () => {
    expect((await query('order-count')).status).toBe(200);
    // The whole server: the postmaster and every backend (a pooled connection talks to its backend only).
    const pids = serverProcesses(sb.postgres!.pid!);
    expect(pids.length).toBeGreaterThan(1);
    for (const pid of pids) process.kill(pid, 'SIGSTOP');
    const t0 = performance.now();
    let answer: Result;
    try {
      answer = await query('order-count');
    } finally {
      for (const pid of pids) process.kill(pid, 'SIGCONT');
    }
    expect([503, 504]).toContain(answer.status);
    expect(answer.headers.get('retry-after')).toBeTruthy();
    // order-count: 2 s statement timeout + 2 s grace, or the 3 s connect/preamble deadline.
    expect(performance.now() - t0).toBeLessThan(5_000);
    await until(async () => (await query('order-count')).status === 200, 15_000);
  });
});

describe('failover: the instance cuts every session', () => {
  test('in-flight queries answer 503 + Retry-After; the pool drops the dead connections and the next query succeeds', async () => {
    expect((await query('order-count')).status).toBe(200);
    const inFlight = Array.from({ length: 4 }, () => query('slow-ok', { seconds: 2 }));
    await new Promise((r) => setTimeout(r, 500));
    sb.cloudSql!.dropConnections();
    const cut = await Promise.all(inFlight);
    for (const r of cut) {
      expect(r.status).toBe(503);
      expect(r.headers.get('retry-after')).toBeTruthy();
    }
    // No dead connection is handed to the next requests.
    const next = await Promise.all(Array.from({ length: 6 }, () => query('order-count')));
    expect(next.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
  });
});
