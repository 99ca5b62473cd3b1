import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SANDBOX } from '../../../local/ids';
import { SQL_LOGIN_SCOPE } from '../../../local/emulators/google/state';
import { testLogger as createLogger } from '../../helpers/app';
import { policyServiceAccounts, prewarmGoogleTokens } from '../../../shared/google/prewarm';
import { parsePolicy } from '../../../shared/policy/load';
import { InvocationContext, type Timer } from '@azure/functions';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { TestApp, testContext } from '../../helpers/app';

const testApp = new TestApp();
const tokenHandler = testApp.handler('token');
const prewarmTimer = testApp.timer('prewarmTimer');

/** GOOGLE_TOKEN_PREWARM: the policy's service accounts are warmed so the first caller pays no Google round trip. */

const G = SANDBOX.google;
const RESOURCE = `cloudsql://${G.project}/${G.region}/${G.instance}/${G.database}`;
let sb: Sandbox;
let restoreEnv: () => void;
let gateway: string;
let dir: string;
const logs = captureLogs();
const log = createLogger({ correlationId: 'prewarm-test' });

beforeAll(async () => {
  sb = await startSandbox({ env: { GOOGLE_TOKEN_PREWARM: 'true' } });
  restoreEnv = sb.applyEnv();
  gateway = await sb.entra.mint({ oid: SANDBOX.gatewayObjectId, appId: SANDBOX.gatewayAppId, aud: SANDBOX.clientAudience });
  dir = mkdtempSync(join(tmpdir(), 'prewarm-'));
  // What the start-up prewarm of a new worker does (functions/app.ts, loaded by a test below) on an app context of its
  // own: the instances' connect details are cached before the tests count calls.
  await prewarmGoogleTokens(testContext(), log);
});

afterAll(async () => {
  logs.restore();
  restoreEnv();
  rmSync(dir, { recursive: true, force: true });
  await sb.stop();
});

beforeEach(() => {
  testApp.renew();
  sb.setEmulatorFaults(undefined);
  sb.google.sts.clearFaults();
  process.env.GOOGLE_TOKEN_PREWARM = 'true';
  process.env.BROKER_POLICY_PATH = sb.env.BROKER_POLICY_PATH!;
  for (const e of sb.emulators) e.resetCalls();
  mintsBefore = sb.google.iamcredentials.issued.length;
});

const exchange = (subject: string): Promise<Result> =>
  invoke(tokenHandler, {
    headers: { authorization: `Bearer ${gateway}` },
    form: {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: subject,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      resource: RESOURCE,
    },
  });
/** generateAccessToken calls that minted a login-only token (the exchange's), since the last resetCalls. */
const loginMints = () =>
  sb.google.iamcredentials.issued.slice(mintsBefore).filter((r) => r.scopes.length === 1 && r.scopes[0] === SQL_LOGIN_SCOPE);
let mintsBefore = 0;
const googleCalls = () => sb.google.sts.count('sts.token') + sb.google.iamcredentials.count('iam.generateAccessToken');

test('policyServiceAccounts: every Cloud SQL service account once, at the smallest cap of the grants naming it', () => {
  const policy = parsePolicy(readFileSync(sb.env.BROKER_POLICY_PATH!, 'utf8'));
  expect(policyServiceAccounts(policy)).toEqual([
    { serviceAccount: G.analystServiceAccount, lifetimeSeconds: 600 },
    { serviceAccount: G.readerServiceAccount, lifetimeSeconds: 900 },
  ]);
  const doubled = JSON.parse(readFileSync(sb.env.BROKER_POLICY_PATH!, 'utf8')) as {
    rules: { grants: { cloudsql: { serviceAccount: string; maxTtlSeconds: number }[] } }[];
  };
  doubled.rules[1]!.grants.cloudsql[0]!.serviceAccount = G.readerServiceAccount;
  expect(policyServiceAccounts(parsePolicy(JSON.stringify(doubled)))).toEqual([
    { serviceAccount: G.readerServiceAccount, lifetimeSeconds: 600 },
  ]);
});

test('after a prewarm the first caller of each service account makes no Google call', async () => {
  const r = await prewarmGoogleTokens(testApp.app, log);
  expect(r).toEqual({ warmed: 2, failed: 0 });
  expect(sb.google.iamcredentials.count('iam.generateAccessToken')).toBe(2);
  const before = googleCalls();
  const reader = await sb.entra.mint({ oid: SANDBOX.readerObjectId, roles: ['Orders.Read'], aud: SANDBOX.subjectAudience });
  const analyst = await sb.entra.mint({ oid: SANDBOX.strangerObjectId, roles: ['Orders.Analyst'], aud: SANDBOX.subjectAudience });
  const a = await exchange(reader);
  const b = await exchange(analyst);
  expect([a.status, b.status]).toEqual([200, 200]);
  expect(a.json.service_account).toBe(G.readerServiceAccount);
  expect(b.json.service_account).toBe(G.analystServiceAccount);
  expect(Number(a.json.expires_in)).toBeLessThanOrEqual(900);
  expect(Number(b.json.expires_in)).toBeLessThanOrEqual(600);
  expect(googleCalls()).toBe(before);
});

test('loading the function module prewarms on start', async () => {
  // A fresh module registry: a fresh token cache, as in a new worker.
  jest.isolateModules(() => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    require('../../../functions/app');
  });
  for (let i = 0; i < 100 && loginMints().length < 2; i++) await new Promise((r) => setTimeout(r, 20));
  // one login token per service account (the instance's connect details take one Admin-API token besides)
  expect(
    loginMints()
      .map((r) => r.serviceAccount)
      .sort(),
  ).toEqual([G.analystServiceAccount, G.readerServiceAccount].sort());
});

test('the prewarm timer does the same', async () => {
  await prewarmTimer(
    { isPastDue: false } as Timer,
    new InvocationContext({ invocationId: 'timer', functionName: 'prewarmTimer' }),
  );
  expect(loginMints()).toHaveLength(2);
});

test('a warmed token is still only handed out by the policy: a subject the deny list names is refused', async () => {
  await prewarmGoogleTokens(testApp.app, log);
  const policy = JSON.parse(readFileSync(sb.env.BROKER_POLICY_PATH!, 'utf8')) as { deny: unknown[] };
  policy.deny = [{ tenantId: SANDBOX.tenantId, objectId: SANDBOX.readerObjectId, reason: 'test' }];
  const file = join(dir, 'deny.json');
  writeFileSync(file, JSON.stringify(policy));
  process.env.BROKER_POLICY_PATH = file;
  const reader = await sb.entra.mint({ oid: SANDBOX.readerObjectId, roles: ['Orders.Read'], aud: SANDBOX.subjectAudience });
  const r = await exchange(reader);
  expect(r.status).toBe(403);
  expect(r.json.access_token).toBeUndefined();
});

test('off, or Google down: nothing warmed, nothing thrown, a warning logged', async () => {
  process.env.GOOGLE_TOKEN_PREWARM = 'false';
  expect(await prewarmGoogleTokens(testApp.app, log)).toMatchObject({
    skipped: expect.stringMatching(/GOOGLE_TOKEN_PREWARM/),
    warmed: 0,
  });
  expect(googleCalls()).toBe(0);
  process.env.GOOGLE_TOKEN_PREWARM = 'true';
  sb.setEmulatorFaults({ byName: { 'google-sts': { throttle: { every: 1 } } } });
  expect(await prewarmGoogleTokens(testApp.app, log)).toEqual({ warmed: 0, failed: 2 });
  expect(logs.records.some((l) => l.msg === 'token prewarm failed for a service account' && l.level === 'warn')).toBe(true);
});

test('no policy: skipped, not thrown', async () => {
  process.env.BROKER_POLICY_PATH = join(dir, 'missing.json');
  expect(await prewarmGoogleTokens(testApp.app, log)).toMatchObject({ skipped: 'configuration incomplete', warmed: 0 });
});
