import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { CosmosClient, type ErrorResponse } from '@azure/cosmos';
import { InvocationContext, type Timer } from '@azure/functions';

import {
  planCosmosKeys,
  retireAfterMs,
  COSMOS_KEY_TAG,
  type CosmosRotationStep,
} from '../../../shared/rotation/cosmos-keys/plan';
import { COSMOS_MAX_TTL_SECONDS } from '../../../shared/cosmos/provider';
import { cosmosRotationDepsFromSettings, runCosmosKeyRotationUnderLease } from '../../../shared/rotation/cosmos-keys/deps';
import type { SecretValue } from '../../../shared/keyvault/client';
import { testLogger as createLogger } from '../../helpers/app';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { ACCESS_TOKEN_TYPE, SANDBOX, TOKEN_EXCHANGE } from '../../helpers/foundation';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const timerHandler = testApp.timer('rotationTimer');
const tokenHandler = testApp.handler('token');

/**
 * Account-key rotation of a resource-token Cosmos account by the dual-key procedure, through the management-plane
 * emulator (listKeys, regenerateKey answered 202 and polled) and the data-plane emulator (both keys authorize;
 * resource tokens die with the key that signed them). The broker keeps issuing throughout; a crash after every
 * step and a re-run leave a working key and lose nothing.
 */

const C = SANDBOX.cosmos;
const PROFILES = `cosmos://${C.account}/${C.database}/${C.container}`;
const DAY = 86_400_000;
const never = () => new Promise<never>(() => undefined);
const fast = () => new Promise<void>((r) => setImmediate(r));

/** The sandbox with Blob Storage (Azurite): the rotation lease lives there. */
let fx: { sandbox: Sandbox; restore: () => void; caller: () => Promise<string> };
let gateway: string;
let agent: Agent;
let clock = Date.now();
const logs = captureLogs();
const log = createLogger({ fn: 'test' });

beforeAll(async () => {
  const sandbox = await startSandbox({
    storage: true,
    env: { BROKER_JWKS_COOLDOWN_SECONDS: '0', COSMOS_KEY_REFRESH_SECONDS: '1' },
  });
  fx = {
    sandbox,
    restore: sandbox.applyEnv(),
    caller: () => sandbox.entra.mint({ oid: SANDBOX.readerObjectId, aud: SANDBOX.subjectAudience, roles: ['Orders.Read'] }),
  };
  gateway = await sandbox.entra.mint({
    oid: SANDBOX.gatewayObjectId,
    appId: SANDBOX.gatewayAppId,
    aud: SANDBOX.clientAudience,
    version: '1.0',
  });
  agent = new Agent({ ca: readFileSync(fx.sandbox.env.COSMOS_CA_FILE!, 'utf8') });
});

afterAll(async () => {
  await testApp.close();
  agent.destroy();
  logs.restore();
  fx.restore();
  await fx.sandbox.stop();
});

beforeEach(() => {
  fx.sandbox.cosmosManagement.clearFaults();
  fx.sandbox.cosmosManagement.resetCalls();
  fx.sandbox.keyVault.clearFaults();
});

const secret = () => fx.sandbox.cosmos.keySecret;
const vault = () => cosmosRotationDepsFromSettings(testApp.app, log).vault;

async function run(afterStep?: (s: CosmosRotationStep) => void | Promise<void>) {
  const deps = cosmosRotationDepsFromSettings(testApp.app, log, {
    now: () => clock,
    sleep: fast,
    ...(afterStep ? { afterStep: (s: CosmosRotationStep) => afterStep(s) } : {}),
  });
  return runCosmosKeyRotationUnderLease(deps, { dryRun: false });
}

async function exchange(extra: Record<string, string> = {}): Promise<Result> {
  return invoke(tokenHandler, {
    headers: { authorization: `Bearer ${gateway}` },
    form: {
      grant_type: TOKEN_EXCHANGE,
      subject_token: await fx.caller(),
      subject_token_type: ACCESS_TOKEN_TYPE,
      resource: PROFILES,
      ...extra,
    },
  });
}

/** Which master key signed a sandbox resource token. */
const signedWith = (token: string) =>
  (JSON.parse(Buffer.from(token.split(';')[1]!, 'base64').toString('utf8')) as { key: string }).key;

async function works(token: string): Promise<boolean> {
  const client = new CosmosClient({
    endpoint: fx.sandbox.cosmos.endpoint,
    resourceTokens: { [`dbs/${C.database}/colls/${C.container}`]: token },
    agent,
    connectionPolicy: { retryOptions: { maxRetryAttemptCount: 0, fixedRetryIntervalInMilliseconds: 0, maxWaitTimeInSeconds: 0 } },
  });
  try {
    await client.database(C.database).container(C.container).items.upsert({ id: 'rot', pk: SANDBOX.readerObjectId });
    return true;
  } catch (e) {
    if ((e as ErrorResponse).code === 401 || (e as ErrorResponse).code === 403) return false;
    throw e;
  } finally {
    client.dispose();
  }
}

/** A fresh exchange (new instance: no cached client or token) succeeds and its token works. */
async function issuanceWorks(): Promise<string> {
  testApp.renew();
  const r = await exchange();
  expect(r.status).toBe(200);
  const token = r.json.access_token as string;
  expect(await works(token)).toBe(true);
  return token;
}

/** A dead run's blob lease ends (what the Blob service does once it is not renewed). */
async function expireLease(): Promise<void> {
  const blob = fx.sandbox.storage!.admin().getContainerClient(SANDBOX.storage.container).getBlobClient('rotation-lock-cosmos');
  await blob.getBlobLeaseClient().breakLease(0);
}

async function latest() {
  return (await vault().get(secret()))!;
}

describe('plan (pure)', () => {
  const settings = { periodDays: 90, refreshSeconds: 300 };
  const keys = { primary: 'P', secondary: 'S' };
  const version = (value: string, tags: Record<string, string>, createdOn = new Date(0)): SecretValue => ({
    name: 's',
    version: 'v',
    enabled: true,
    tags,
    createdOn,
    value,
  });
  const st = (v: ReturnType<typeof version> | undefined) => ({
    account: 'a',
    resourceId: '/r',
    secretName: 's',
    latest: v,
    keys,
  });

  test('the previous key is regenerated only after refresh + the longest resource-token lifetime; a rotation only when due', () => {
    expect(retireAfterMs(settings)).toBeGreaterThanOrEqual((COSMOS_MAX_TTL_SECONDS + settings.refreshSeconds) * 1000);
    const switched = version('S', {
      [COSMOS_KEY_TAG.keyKind]: 'secondary',
      [COSMOS_KEY_TAG.storedAt]: new Date(0).toISOString(),
    });
    expect(planCosmosKeys(st(switched), settings, COSMOS_MAX_TTL_SECONDS * 1000).actions).toEqual([]);
    expect(planCosmosKeys(st(switched), settings, retireAfterMs(settings)).actions).toEqual([
      { kind: 'retire', keyKind: 'primary', inUse: 'secondary' },
    ]);
    const retired = version('S', {
      [COSMOS_KEY_TAG.keyKind]: 'secondary',
      [COSMOS_KEY_TAG.storedAt]: new Date(0).toISOString(),
      [COSMOS_KEY_TAG.otherRegeneratedAt]: 'x',
    });
    expect(planCosmosKeys(st(retired), settings, 89 * DAY).actions).toEqual([]);
    expect(planCosmosKeys(st(retired), settings, 90 * DAY).actions).toEqual([
      { kind: 'rotate', from: 'secondary', to: 'primary' },
    ]);
  });

  test('no secret is initial, a stored key that is neither account key (or disabled) is repaired with the primary', () => {
    expect(planCosmosKeys(st(undefined), settings, 0).actions).toEqual([{ kind: 'store', keyKind: 'primary', why: 'initial' }]);
    expect(planCosmosKeys(st(version('old', {})), settings, 0).actions).toEqual([
      { kind: 'store', keyKind: 'primary', why: 'repair' },
    ]);
    expect(planCosmosKeys(st({ ...version('P', {}), enabled: false }), settings, 0).actions).toEqual([
      { kind: 'store', keyKind: 'primary', why: 'repair' },
    ]);
    // the value decides which key is in use, not a tag that lies
    expect(
      planCosmosKeys(
        st(version('P', { [COSMOS_KEY_TAG.keyKind]: 'secondary', [COSMOS_KEY_TAG.otherRegeneratedAt]: 'x' })),
        settings,
        0,
      ).inUse,
    ).toBe('primary');
  });
});

describe('dual-key rotation through the emulated management plane', () => {
  test('full cycle: retire the unused key, switch to the freshly regenerated one, retire the old one after its tokens expired', async () => {
    clock = Date.now();
    const primary0 = fx.sandbox.cosmos.masterKey;
    const t1 = await issuanceWorks();
    expect(signedWith(t1)).toBe('primary');

    // Nothing is due at first (the broker has used the primary since the sandbox stored it).
    expect((await run())![0]!.actions).toEqual([]);

    // After the longest token lifetime, the never-used secondary is regenerated (202 + polling) and recorded.
    clock += retireAfterMs({ periodDays: 90, refreshSeconds: 1 }) + 1000;
    const secondary0 = fx.sandbox.cosmos.secondaryKey;
    const r1 = (await run())![0]!;
    expect(r1.actions).toEqual([{ action: { kind: 'retire', keyKind: 'secondary', inUse: 'primary' }, outcome: 'done' }]);
    expect(fx.sandbox.cosmos.secondaryKey).not.toBe(secondary0);
    expect(fx.sandbox.cosmos.masterKey).toBe(primary0);
    expect(fx.sandbox.cosmosManagement.count('arm.operation')).toBeGreaterThanOrEqual(1);
    expect((await latest()).tags[COSMOS_KEY_TAG.otherRegeneratedAt]).toBeDefined();
    expect(await works(t1)).toBe(true);

    // Due: the secondary is regenerated, proved, stored; issuance switches to it; the primary (and t1) keep working.
    clock += 90 * DAY;
    const r2 = (await run())![0]!;
    expect(r2.actions.map((a) => [a.action.kind, a.outcome])).toEqual([['rotate', 'done']]);
    const v = await latest();
    expect(v.value).toBe(fx.sandbox.cosmos.secondaryKey);
    expect(v.tags[COSMOS_KEY_TAG.keyKind]).toBe('secondary');
    expect(fx.sandbox.cosmos.masterKey).toBe(primary0);
    expect(await works(t1)).toBe(true);
    // A running instance switches within COSMOS_KEY_REFRESH_SECONDS, without a failed request.
    await testApp.clearCosmosTokens();
    await new Promise((r) => setTimeout(r, 1100));
    const after = await exchange();
    expect(after.status).toBe(200);
    expect(signedWith(after.json.access_token as string)).toBe('secondary');

    // The old primary is not regenerated while tokens signed with it may live …
    clock += (COSMOS_MAX_TTL_SECONDS - 60) * 1000;
    expect((await run())![0]!.actions).toEqual([]);
    expect(fx.sandbox.cosmos.masterKey).toBe(primary0);
    // … and is once they cannot: then tokens signed with it stop working, the new ones do not.
    clock += retireAfterMs({ periodDays: 90, refreshSeconds: 1 });
    const r3 = (await run())![0]!;
    expect(r3.actions).toEqual([{ action: { kind: 'retire', keyKind: 'primary', inUse: 'secondary' }, outcome: 'done' }]);
    expect(fx.sandbox.cosmos.masterKey).not.toBe(primary0);
    expect(await works(t1)).toBe(false);
    expect(await works(after.json.access_token as string)).toBe(true);
    await issuanceWorks();
  });

  test.each(['regenerated-other', 'proved', 'stored', 'retired'] as const)(
    'a crash after "%s", then a re-run: a working key at every moment, nothing lost',
    async (step) => {
      let crashed = false;
      let signal: () => void = () => undefined;
      const crashSignal = new Promise<'crashed'>((r) => (signal = () => r('crashed')));
      const crashAt = (s: CosmosRotationStep) => {
        if (!crashed && s === step) {
          crashed = true;
          signal();
          return never(); // the process dies: the run never continues, its lease is never released
        }
        return undefined;
      };
      // Through one whole cycle from wherever the previous test left the account: a rotation and a retirement.
      for (const advance of [90 * DAY, retireAfterMs({ periodDays: 90, refreshSeconds: 1 }) + 1000]) {
        clock += advance;
        const running = run(crashAt).then(() => 'done' as const);
        const outcome = crashed ? await running : await Promise.race([running, crashSignal]);
        await issuanceWorks(); // the stored key works, crash or not
        if (outcome === 'crashed') {
          expect(await run()).toBeUndefined(); // the dead run's lease still holds …
          await expireLease(); // … until the Blob service lets it lapse (it is never renewed again)
          const rerun = (await run())![0]!;
          expect(rerun.error).toBeUndefined();
        }
        const v = await latest();
        expect([fx.sandbox.cosmos.masterKey, fx.sandbox.cosmos.secondaryKey]).toContain(v.value);
        expect(v.tags[COSMOS_KEY_TAG.keyKind]).toBe(v.value === fx.sandbox.cosmos.masterKey ? 'primary' : 'secondary');
        await issuanceWorks();
      }
      expect(crashed).toBe(true);
    },
  );

  test('management-plane faults: a failed or stalled regeneration stores nothing and issuance keeps working', async () => {
    clock += 90 * DAY;
    const before = await latest();
    fx.sandbox.cosmosManagement.inject({ fault: { kind: 'status', status: 500 }, routes: ['arm.cosmos.keys'] });
    const failed = (await run())![0]!;
    expect(failed.error).toBe('upstream_error');
    expect((await latest()).version).toBe(before.version);
    await issuanceWorks();
    fx.sandbox.cosmosManagement.clearFaults();
    const prev = process.env.BROKER_UPSTREAM_TIMEOUT_MS;
    process.env.BROKER_UPSTREAM_TIMEOUT_MS = '500';
    fx.sandbox.cosmosManagement.inject({ fault: { kind: 'hang' }, routes: ['arm.cosmos.keys'] });
    try {
      const started = Date.now();
      const hung = (await run())![0]!;
      expect(hung.error).toBe('upstream_timeout');
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      if (prev === undefined) delete process.env.BROKER_UPSTREAM_TIMEOUT_MS;
      else process.env.BROKER_UPSTREAM_TIMEOUT_MS = prev;
      fx.sandbox.cosmosManagement.clearFaults();
    }
    expect((await latest()).version).toBe(before.version);
    await issuanceWorks();
    // Without the operation-status read at the subscription, the regeneration cannot be confirmed: refused, nothing stored.
    const m = fx.sandbox.cosmosManagement;
    m.revokeAll(fx.sandbox.msi.objectId);
    m.grantKeyOperator(fx.sandbox.msi.objectId, C.resourceId);
    try {
      const denied = (await run())![0]!;
      expect(denied.error).toBe('upstream_denied');
      expect((await latest()).version).toBe(before.version);
    } finally {
      m.grantOperationReader(fx.sandbox.msi.objectId, C.resourceId.split('/')[2]!);
    }
    await issuanceWorks();
  });

  test('Key Vault down while an instance re-checks the key version: the request still succeeds with the current key', async () => {
    await testApp.clearCosmosTokens();
    testApp.renew();
    expect((await exchange()).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1100));
    await testApp.clearCosmosTokens();
    fx.sandbox.keyVault.inject({ fault: { kind: 'status', status: 503 } });
    try {
      const r = await exchange();
      expect(r.status).toBe(200);
      expect(await works(r.json.access_token as string)).toBe(true);
    } finally {
      fx.sandbox.keyVault.clearFaults();
    }
  });

  test('the rotation timer runs the Cosmos rotation (its own lease, after the Google keys) and never throws', async () => {
    const start = logs.records.length;
    const timer: Timer = {
      isPastDue: false,
      schedule: { adjustForDST: false },
      scheduleStatus: { last: '', next: '', lastUpdated: '' },
    };
    await expect(timerHandler(timer, new InvocationContext({ functionName: 'rotationTimer' }))).resolves.toBeUndefined();
    expect(fx.sandbox.cosmosManagement.count('arm.cosmos.keys')).toBeGreaterThanOrEqual(1); // listKeys: it observed the account
    const mine = logs.records.slice(start);
    expect(mine.some((l) => l.event === 'cosmos-rotation.error' || l.event === 'cosmos-rotation.observe-failed')).toBe(false);
    await issuanceWorks();
  });

  test('no key or token reaches a log line', () => {
    const text = logs.records.map((l) => JSON.stringify(l)).join('\n');
    expect(text).not.toContain(fx.sandbox.cosmos.masterKey);
    expect(text).not.toContain(fx.sandbox.cosmos.secondaryKey);
  });
});

describe('the management-plane emulator (ARM)', () => {
  const post = async (
    path: string,
    authorization: string | undefined,
    body?: unknown,
  ): Promise<{ status: number; json: { error?: { code: string; message: string } }; headers: Record<string, unknown> }> =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? '' : JSON.stringify(body);
      const req = request(
        `${fx.sandbox.cosmosManagement.endpoint}${path}`,
        { method: 'POST', agent, headers: { ...(authorization ? { authorization } : {}), 'content-type': 'application/json' } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const t = Buffer.concat(chunks).toString('utf8');
            resolve({
              status: res.statusCode ?? 0,
              json: t ? (JSON.parse(t) as { error?: { code: string; message: string } }) : {},
              headers: res.headers,
            });
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  const arm = (o: Parameters<typeof fx.sandbox.entra.mint>[0] = {}) =>
    fx.sandbox.entra.mint({
      oid: fx.sandbox.msi.objectId,
      appId: fx.sandbox.msi.clientId,
      aud: 'https://management.azure.com',
      version: '1.0',
      ...o,
    });
  const keysPath = `${C.resourceId}/listKeys?api-version=2024-11-15`;

  test('its own audience, a role on that account, an api-version; 202 with an operation to poll for regenerateKey', async () => {
    expect((await post(keysPath, undefined)).status).toBe(401);
    const vaultAud = await post(keysPath, `Bearer ${await arm({ aud: 'https://vault.azure.net' })}`);
    expect([vaultAud.status, vaultAud.json.error?.code]).toEqual([401, 'InvalidAuthenticationTokenAudience']);
    expect((await post(keysPath, `Bearer ${await arm({ expiresIn: -10 })}`)).json.error?.code).toBe('ExpiredAuthenticationToken');
    const stranger = await post(keysPath, `Bearer ${await arm({ oid: '0dd00000-0000-4000-8000-0000000000cc' })}`);
    expect([stranger.status, stranger.json.error?.code]).toEqual([403, 'AuthorizationFailed']);
    expect(stranger.json.error?.message).toContain('Microsoft.DocumentDB/databaseAccounts/listKeys/action');
    expect((await post(`${C.resourceId}/listKeys`, `Bearer ${await arm()}`)).json.error?.code).toBe('MissingApiVersionParameter');
    expect((await post(keysPath, `Bearer ${await arm()}`)).status).toBe(200);
    const other = C.resourceId.replace(/sandbox-cosmos$/, 'elsewhere');
    expect((await post(`${other}/listKeys?api-version=2024-11-15`, `Bearer ${await arm()}`)).status).toBe(404);
    const bad = await post(`${C.resourceId}/regenerateKey?api-version=2024-11-15`, `Bearer ${await arm()}`, {
      keyKind: 'tertiary',
    });
    expect(bad.status).toBe(400);
    const accepted = await post(`${C.resourceId}/regenerateKey?api-version=2024-11-15`, `Bearer ${await arm()}`, {
      keyKind: 'secondaryReadonly',
    });
    expect(accepted.status).toBe(202);
    expect(String(accepted.headers['azure-asyncoperation'])).toContain('/operationsStatus/');
    expect(String(accepted.headers.location)).toBe(String(accepted.headers['azure-asyncoperation']));
    expect(accepted.headers['retry-after']).toBeUndefined();
    // Polling: the operation path is under the subscription, and only the original caller may read it.
    const statusPath = new URL(String(accepted.headers['azure-asyncoperation']));
    const get = async (token: string) =>
      new Promise<number>((resolve, reject) => {
        const req = request(statusPath, { method: 'GET', agent, headers: { authorization: `Bearer ${token}` } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end();
      });
    const keyOnly = '0dd00000-0000-4000-8000-0000000000dd';
    fx.sandbox.cosmosManagement.grantKeyOperator(keyOnly, C.resourceId);
    expect(await get(await arm({ oid: keyOnly }))).toBe(403); // no operation-status read at the subscription
    fx.sandbox.cosmosManagement.grantOperationReader(keyOnly, C.resourceId.split('/')[2]!);
    expect(await get(await arm({ oid: keyOnly }))).toBe(403); // not the original caller
    expect(await get(await arm())).toBe(200);
    fx.sandbox.cosmosManagement.revokeAll(keyOnly);
  });
});
