import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CosmosClient, PermissionMode, type ErrorResponse } from '@azure/cosmos';

import { COSMOS_RESOURCE_TOKEN_TYPE, resourceTokenCacheKey } from '../../../shared/cosmos/provider';
import { cosmosUserId } from '../../../shared/cosmos/ids';
import { ACCESS_TOKEN_TYPE, SANDBOX, startFixture, TOKEN_EXCHANGE, type Fixture } from '../../helpers/foundation';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const tokenHandler = testApp.handler('token');

const C = SANDBOX.cosmos;
const PROFILES = `cosmos://${C.account}/${C.database}/${C.container}`;
const CATALOG = `cosmos://${C.account}/${C.database}/${C.catalogContainer}`;
const OTHER_OID = '0b5e0000-0000-4000-8000-0000000000b2';

let fx: Fixture;
let gateway: string;
let agent: Agent;
let dir: string;
const logs = captureLogs();

beforeAll(async () => {
  fx = await startFixture();
  gateway = await fx.gateway();
  agent = new Agent({ ca: readFileSync(fx.sandbox.env.COSMOS_CA_FILE!, 'utf8') });
  dir = mkdtempSync(join(tmpdir(), 'cosmos-test-'));
});

afterAll(async () => {
  await testApp.close();
  agent.destroy();
  logs.restore();
  rmSync(dir, { recursive: true, force: true });
  await fx.stop();
});

beforeEach(() => {
  testApp.renew();
  fx.sandbox.cosmos.clearFaults();
  fx.sandbox.cosmos.resetCalls();
  fx.sandbox.keyVault.resetCalls();
});

async function exchange(resource: string, subject?: string, extra: Record<string, string> = {}): Promise<Result> {
  return invoke(tokenHandler, {
    headers: { authorization: `Bearer ${gateway}` },
    form: {
      grant_type: TOKEN_EXCHANGE,
      subject_token: subject ?? (await fx.caller()),
      subject_token_type: ACCESS_TOKEN_TYPE,
      resource,
      ...extra,
    },
  });
}

/** A plain @azure/cosmos client holding nothing but the resource token (what a SPA or mobile client does). */
function clientWith(res: Result): CosmosClient {
  const body = res.json as { access_token: string; account_endpoint: string; database: string; container: string };
  return new CosmosClient({
    endpoint: body.account_endpoint,
    resourceTokens: { [`dbs/${body.database}/colls/${body.container}`]: body.access_token },
    agent,
    connectionPolicy: { retryOptions: { maxRetryAttemptCount: 0, fixedRetryIntervalInMilliseconds: 0, maxWaitTimeInSeconds: 0 } },
  });
}

async function statusOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (e) {
    return (e as ErrorResponse).code as number;
  }
}

/** Point the broker at a policy whose one rule grants the profiles container with these cosmos grants. */
function withRules(grants: readonly Record<string, unknown>[]): () => void {
  const policy = {
    version: 1,
    deny: [],
    rules: [
      {
        id: 'multi',
        subject: { tenantId: SANDBOX.tenantId, roles: ['Orders.Read'] },
        grants: {
          cosmos: grants.map((g) => ({
            account: C.account,
            database: C.database,
            container: C.container,
            maxTtlSeconds: 3600,
            ...g,
          })),
        },
      },
    ],
  };
  const file = join(dir, `rules-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(policy));
  const prev = process.env.BROKER_POLICY_PATH;
  process.env.BROKER_POLICY_PATH = file;
  return () => {
    process.env.BROKER_POLICY_PATH = prev;
  };
}

/** The emulator's resource token carries its claims after the signature (sandbox format). */
function claimsOf(token: string): { res: string; pk: unknown[] | null; mode: string; user: string; exp: number } {
  return JSON.parse(Buffer.from(token.split(';')[1]!, 'base64').toString('utf8')) as ReturnType<typeof claimsOf>;
}

const cosmosCalls = (route: string) => fx.sandbox.cosmos.count(route);
/** Successful Key Vault reads (the SDK's first, token-less call of each client is answered by the 401 challenge). */
const keyReads = () => fx.sandbox.keyVault.calls.filter((c) => c.route === 'secrets.get' && c.status === 200).length;

describe('POST /api/token for cosmos:// targets', () => {
  test('a caller gets a resource token for its own partition, and a plain SDK client can use only that', async () => {
    const res = await exchange(PROFILES);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.json).toMatchObject({
      issued_token_type: COSMOS_RESOURCE_TOKEN_TYPE,
      token_type: 'N_A',
      account_endpoint: fx.sandbox.cosmos.endpoint,
      database: C.database,
      container: C.container,
      partition_key: SANDBOX.readerObjectId,
      mode: 'all',
    });
    expect(res.json.expires_in).toBeGreaterThan(3590);
    expect(res.json.expires_in).toBeLessThanOrEqual(3600);
    const userId = cosmosUserId(
      { tenantId: SANDBOX.tenantId, objectId: SANDBOX.readerObjectId },
      { database: C.database, container: C.container, mode: 'all', partitionKey: SANDBOX.readerObjectId },
    );
    expect(fx.sandbox.cosmos.users(C.database)).toContain(userId);
    expect(fx.sandbox.cosmos.permissions(C.database, userId)).toEqual([
      expect.objectContaining({
        permissionMode: 'All',
        resource: `dbs/${C.database}/colls/${C.container}`,
        resourcePartitionKey: [SANDBOX.readerObjectId],
      }),
    ]);

    const container = clientWith(res).database(C.database).container(C.container);
    const own = SANDBOX.readerObjectId;
    // writes and reads its own partition
    const created = await container.items.create({ id: 'settings', pk: own, theme: 'dark' });
    expect(created.statusCode).toBe(201);
    const read = await container.item('settings', own).read<{ theme: string }>();
    expect(read.resource?.theme).toBe('dark');
    const q = await container.items
      .query<{ id: string }>(
        { query: 'SELECT * FROM c WHERE c.theme = @t', parameters: [{ name: '@t', value: 'dark' }] },
        { partitionKey: own },
      )
      .fetchAll();
    expect(q.resources.map((d) => d.id)).toEqual(['settings']);
    // is refused another partition, for reads and for writes
    expect(await statusOf(container.item('settings', OTHER_OID).read())).toBe(403);
    expect(await statusOf(container.items.create({ id: 'x', pk: OTHER_OID }))).toBe(403);
    // and every other container
    const misuse = new CosmosClient({
      endpoint: fx.sandbox.cosmos.endpoint,
      resourceTokens: { [`dbs/${C.database}/colls/${C.catalogContainer}`]: res.json.access_token as string },
      agent,
    });
    expect(await statusOf(misuse.database(C.database).container(C.catalogContainer).item('a', own).read())).toBe(403);
    expect(await statusOf(misuse.database(C.database).container(C.catalogContainer).items.create({ id: 'a', pk: own }))).toBe(
      403,
    );
    misuse.dispose();
    // Only 'settings' was written (the sandbox seeds a 'profile' per reader).
    expect(fx.sandbox.cosmos.documents(C.database, C.container).filter((d) => d.id !== 'profile')).toHaveLength(1);
  });

  test('a read grant gives a token that reads but cannot write', async () => {
    // seed the public catalog partition with the master key (as an operator would)
    const admin = new CosmosClient({ endpoint: fx.sandbox.cosmos.endpoint, key: fx.sandbox.cosmos.masterKey, agent });
    await admin.database(C.database).container(C.catalogContainer).items.upsert({ id: 'p1', pk: 'public', name: 'Widget' });
    admin.dispose();

    const res = await exchange(CATALOG);
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ mode: 'read', partition_key: 'public', container: C.catalogContainer });
    const container = clientWith(res).database(C.database).container(C.catalogContainer);
    expect((await container.item('p1', 'public').read<{ name: string }>()).resource?.name).toBe('Widget');
    expect(await statusOf(container.items.create({ id: 'p2', pk: 'public' }))).toBe(403);
    expect(await statusOf(container.item('p1', 'public').replace({ id: 'p1', pk: 'public', name: 'Gadget' }))).toBe(403);
    expect(await statusOf(container.item('p1', 'public').delete())).toBe(403);
  });

  test('a request may narrow the mode to read; the token then refuses writes', async () => {
    const res = await exchange(`${PROFILES}?mode=read`);
    expect(res.status).toBe(200);
    expect(res.json.mode).toBe('read');
    expect(claimsOf(res.json.access_token as string).mode).toBe('Read');
    const container = clientWith(res).database(C.database).container(C.container);
    expect(await statusOf(container.items.create({ id: 'n', pk: SANDBOX.readerObjectId }))).toBe(403);
  });

  test('a request can never widen the grant: mode=all on a read rule, or another partition, is 403 access_denied', async () => {
    const wider = await exchange(`${CATALOG}?mode=all`);
    expect(wider.status).toBe(403);
    expect(wider.json).toMatchObject({ error: 'access_denied', reason: 'not_granted' });
    const other = await exchange(`${PROFILES}?partitionKey=${OTHER_OID}`);
    expect(other.status).toBe(403);
    expect(other.json).toMatchObject({ error: 'access_denied' });
    const stranger = await exchange(PROFILES, await fx.caller({ roles: [] }));
    expect(stranger.status).toBe(403);
    expect(cosmosCalls('cosmos.permission')).toBe(0);
  });

  test('lifetime = min(requested_lifetime, rule max, 18000): never raised above what was asked; below 10 s is 400', async () => {
    const now = Math.floor(Date.now() / 1000);
    const short = await exchange(PROFILES, undefined, { requested_lifetime: '60' });
    expect(short.status).toBe(200);
    expect(claimsOf(short.json.access_token as string).exp - now).toBeGreaterThanOrEqual(59);
    expect(claimsOf(short.json.access_token as string).exp - now).toBeLessThanOrEqual(61);
    expect(short.json.expires_in).toBeLessThanOrEqual(60);
    const floor = await exchange(PROFILES, undefined, { requested_lifetime: '10' });
    expect(floor.status).toBe(200);
    expect(floor.json.expires_in).toBeLessThanOrEqual(10);
    const mid = await exchange(PROFILES, undefined, { requested_lifetime: '1200' });
    expect(claimsOf(mid.json.access_token as string).exp - now).toBeGreaterThanOrEqual(1199);
    expect(mid.json.expires_in).toBeLessThanOrEqual(1200);
    const long = await exchange(PROFILES, undefined, { requested_lifetime: '86400' });
    expect(claimsOf(long.json.access_token as string).exp - now).toBeLessThanOrEqual(3601); // the rule's maxTtlSeconds
    const before = cosmosCalls('cosmos.permission');
    const tooShort = await exchange(PROFILES, undefined, { requested_lifetime: '9' });
    expect(tooShort.status).toBe(400);
    expect(tooShort.json).toMatchObject({
      error: 'invalid_request',
      reason: 'invalid_parameter',
      parameter: 'requested_lifetime',
    });
    expect(String(tooShort.json.error_description)).toMatch(/at least 10 seconds/);
    expect(cosmosCalls('cosmos.permission')).toBe(before);
  });

  test('the emulator enforces the documented bounds: 10-18000 s accepted, 9 and 18001 refused', async () => {
    const admin = new CosmosClient({ endpoint: fx.sandbox.cosmos.endpoint, key: fx.sandbox.cosmos.masterKey, agent });
    const db = admin.database(C.database);
    await db.users.upsert({ id: 'bounds-user' });
    const perm = { id: 'p', permissionMode: PermissionMode.Read, resource: `dbs/${C.database}/colls/${C.catalogContainer}` };
    try {
      for (const [ttl, want] of [
        [9, 400],
        [10, 200],
        [18000, 200],
        [18001, 400],
      ] as const) {
        expect(await statusOf(db.user('bounds-user').permissions.upsert(perm, { resourceTokenExpirySeconds: ttl }))).toBe(want);
      }
    } finally {
      await db.user('bounds-user').delete();
      admin.dispose();
    }
  });

  test('one permission per (user, resource): a second permission on the same container is 409 in the emulator', async () => {
    const admin = new CosmosClient({ endpoint: fx.sandbox.cosmos.endpoint, key: fx.sandbox.cosmos.masterKey, agent });
    const db = admin.database(C.database);
    await db.users.upsert({ id: 'conflict-user' });
    const resource = `dbs/${C.database}/colls/${C.container}`;
    try {
      expect(
        await statusOf(db.user('conflict-user').permissions.create({ id: 'a', permissionMode: PermissionMode.Read, resource })),
      ).toBe(200);
      // same container, other mode / other partition: Conflict, as on the service
      expect(
        await statusOf(db.user('conflict-user').permissions.create({ id: 'b', permissionMode: PermissionMode.All, resource })),
      ).toBe(409);
      expect(
        await statusOf(
          db
            .user('conflict-user')
            .permissions.upsert({ id: 'c', permissionMode: PermissionMode.Read, resource, resourcePartitionKey: ['x'] }),
        ),
      ).toBe(409);
      // the same id may be replaced; another container is another resource
      expect(
        await statusOf(db.user('conflict-user').permissions.upsert({ id: 'a', permissionMode: PermissionMode.All, resource })),
      ).toBe(200);
      expect(
        await statusOf(
          db.user('conflict-user').permissions.create({
            id: 'd',
            permissionMode: PermissionMode.Read,
            resource: `dbs/${C.database}/colls/${C.catalogContainer}`,
          }),
        ),
      ).toBe(200);
    } finally {
      await db.user('conflict-user').delete();
      admin.dispose();
    }
  });

  test('a caller holding a read grant and an all grant on one container gets both, and both tokens keep working', async () => {
    const restore = withRules([
      { mode: 'read', partitionKey: { type: 'claim', claim: 'oid' } },
      { mode: 'all', partitionKey: { type: 'none' } },
    ]);
    try {
      const read = await exchange(`${PROFILES}?mode=read`);
      const all = await exchange(`${PROFILES}?mode=all`);
      const narrowed = await exchange(`${PROFILES}?mode=all&partitionKey=${OTHER_OID}`);
      for (const r of [read, all, narrowed]) expect(r.status).toBe(200);
      expect(read.json).toMatchObject({ mode: 'read', partition_key: SANDBOX.readerObjectId });
      expect(all.json).toMatchObject({ mode: 'all', partition_key: null });
      expect(narrowed.json).toMatchObject({ mode: 'all', partition_key: OTHER_OID });
      // each grant has its own Cosmos user holding one permission on the container
      const users = [read, all, narrowed].map((r) => claimsOf(r.json.access_token as string).user);
      expect(new Set(users).size).toBe(3);
      for (const u of users) expect(fx.sandbox.cosmos.permissions(C.database, u)).toHaveLength(1);
      // all three tokens work at once (none was replaced by the next)
      const whole = clientWith(all).database(C.database).container(C.container);
      expect(await statusOf(whole.items.upsert({ id: 'w', pk: OTHER_OID }))).toBe(200);
      expect(await statusOf(clientWith(narrowed).database(C.database).container(C.container).item('w', OTHER_OID).read())).toBe(
        200,
      );
      const own = clientWith(read).database(C.database).container(C.container);
      expect((await own.item('w', SANDBOX.readerObjectId).read()).statusCode).toBe(404); // readable partition, no such item
      expect(await statusOf(own.item('w', OTHER_OID).read())).toBe(403);
      expect(await statusOf(own.items.create({ id: 'r', pk: SANDBOX.readerObjectId }))).toBe(403);
    } finally {
      restore();
    }
  });

  test('cache keys are structured: a partition-scoped and a whole-container request never share an entry', async () => {
    const base = { user: 'u', account: 'a', database: 'd', container: 'c', mode: 'all', ttlSeconds: 600 } as const;
    expect(resourceTokenCacheKey({ ...base, partitionKey: null })).not.toBe(
      resourceTokenCacheKey({ ...base, partitionKey: '\u0000' }),
    );
    expect(resourceTokenCacheKey({ ...base, partitionKey: 'x|y' })).not.toBe(
      resourceTokenCacheKey({ ...base, container: 'c|x', partitionKey: 'y' }),
    );
    const restore = withRules([{ mode: 'all', partitionKey: { type: 'none' } }]);
    try {
      const whole = await exchange(PROFILES);
      const part = await exchange(`${PROFILES}?partitionKey=${OTHER_OID}`);
      const wholeAgain = await exchange(PROFILES);
      const partAgain = await exchange(`${PROFILES}?partitionKey=${OTHER_OID}`);
      expect(whole.json.partition_key).toBeNull();
      expect(claimsOf(whole.json.access_token as string).pk).toBeNull();
      expect(part.json.partition_key).toBe(OTHER_OID);
      expect(claimsOf(part.json.access_token as string).pk).toEqual([OTHER_OID]);
      expect(part.json.access_token).not.toBe(whole.json.access_token);
      expect(wholeAgain.json.access_token).toBe(whole.json.access_token);
      expect(partAgain.json.access_token).toBe(part.json.access_token);
      expect(cosmosCalls('cosmos.permission')).toBe(2);
      // the caller cannot spell "no partition": control characters in a partition key are 400, before any Cosmos call
      for (const pk of ['%00', '%0A', '%7F', '%C2%85', '%E2%80%A8', 'a%09b']) {
        const r = await exchange(`${PROFILES}?partitionKey=${pk}`);
        expect(r.status).toBe(400);
        expect(r.json).toMatchObject({ error: 'invalid_target' });
      }
      expect(cosmosCalls('cosmos.permission')).toBe(2);
    } finally {
      restore();
    }
  });

  test('the remembered user and cache key (per grant and caller): same shape, same token; mode, partition, lifetime or caller, never', async () => {
    const restore = withRules([{ mode: 'all', partitionKey: { type: 'none' } }]);
    try {
      const mine = await fx.caller();
      const shapes = [
        [PROFILES, {}],
        [`${PROFILES}?mode=read`, {}],
        [`${PROFILES}?partitionKey=${OTHER_OID}`, {}],
        [`${PROFILES}?mode=read&partitionKey=${OTHER_OID}`, {}],
        [PROFILES, { requested_lifetime: '600' }],
      ] as const;
      const first: string[] = [];
      for (const [target, extra] of shapes) {
        const r = await exchange(target, mine, extra);
        expect(r.status).toBe(200);
        first.push(r.json.access_token as string);
      }
      expect(new Set(first).size).toBe(shapes.length);
      expect(cosmosCalls('cosmos.permission')).toBe(shapes.length);
      // the same caller and token again (the hit path's remembered ids), then a new token (another exp) of the same caller
      for (const subject of [mine, mine, await fx.caller({ expiresIn: 3000 })])
        for (const [i, [target, extra]] of shapes.entries()) {
          const r = await exchange(target, subject, extra);
          expect(r.json.access_token).toBe(first[i]);
        }
      expect(cosmosCalls('cosmos.permission')).toBe(shapes.length);
      // another caller shares none of them
      const other = await fx.caller({ oid: OTHER_OID });
      for (const [i, [target, extra]] of shapes.entries()) {
        const r = await exchange(target, other, extra);
        expect(r.status).toBe(200);
        expect(r.json.access_token).not.toBe(first[i]);
      }
      expect(cosmosCalls('cosmos.permission')).toBe(2 * shapes.length);
    } finally {
      restore();
    }
  });

  test('the token is refused once expired', async () => {
    const res = await exchange(PROFILES, undefined, { requested_lifetime: '600' });
    const container = clientWith(res).database(C.database).container(C.container);
    await container.items.upsert({ id: 'e', pk: SANDBOX.readerObjectId });
    const real = fx.sandbox.cosmos.clock.now;
    fx.sandbox.cosmos.clock.now = () => real() + 601_000;
    try {
      expect(await statusOf(container.item('e', SANDBOX.readerObjectId).read())).toBe(403);
    } finally {
      fx.sandbox.cosmos.clock.now = real;
    }
  });

  test('tokens are cached per subject and target; different subjects get their own user and partition', async () => {
    const a = await exchange(PROFILES);
    const b = await exchange(PROFILES);
    expect(b.json.access_token).toBe(a.json.access_token);
    expect(cosmosCalls('cosmos.permission')).toBe(1);
    expect(cosmosCalls('cosmos.user')).toBe(1);
    const other = await exchange(PROFILES, await fx.caller({ oid: OTHER_OID }));
    expect(other.status).toBe(200);
    expect(other.json.partition_key).toBe(OTHER_OID);
    expect(other.json.access_token).not.toBe(a.json.access_token);
    expect(cosmosCalls('cosmos.permission')).toBe(2);
    expect(fx.sandbox.cosmos.users(C.database)).toContain(
      cosmosUserId(
        { tenantId: SANDBOX.tenantId, objectId: OTHER_OID },
        { database: C.database, container: C.container, mode: 'all', partitionKey: OTHER_OID },
      ),
    );
    // The key was read from Key Vault once for the account.
    expect(keyReads()).toBe(1);
  });

  test('concurrent identical requests share one Cosmos permission call', async () => {
    const subject = await fx.caller();
    const results = await Promise.all(Array.from({ length: 40 }, () => exchange(PROFILES, subject)));
    expect(results.every((r) => r.status === 200)).toBe(true);
    expect(new Set(results.map((r) => r.json.access_token)).size).toBe(1);
    expect(cosmosCalls('cosmos.permission')).toBe(1);
    expect(cosmosCalls('cosmos.user')).toBe(1);
    expect(keyReads()).toBe(1);
  });

  test('a regenerated account key is picked up from Key Vault on the 401, without a failed request', async () => {
    expect((await exchange(PROFILES)).status).toBe(200);
    const newKey = fx.sandbox.cosmos.regenerateKey();
    fx.sandbox.keyVault.seed(fx.sandbox.cosmos.keySecret, newKey);
    await testApp.clearCosmosTokens(); // force a miss; the client still holds the old key
    const res = await exchange(PROFILES);
    expect(res.status).toBe(200);
    expect(keyReads()).toBe(2);
    const container = clientWith(res).database(C.database).container(C.container);
    expect(await statusOf(container.items.upsert({ id: 'k', pk: SANDBOX.readerObjectId }))).toBe(200);
  });

  test('a subject on the deny list gets no new token (resource tokens cannot be revoked early)', async () => {
    const policy = JSON.parse(readFileSync(fx.sandbox.env.BROKER_POLICY_PATH!, 'utf8')) as { deny: unknown[] };
    policy.deny = [{ tenantId: SANDBOX.tenantId, objectId: SANDBOX.readerObjectId, reason: 'offboarded' }];
    const file = join(dir, 'deny-policy.json');
    writeFileSync(file, JSON.stringify(policy));
    const prev = process.env.BROKER_POLICY_PATH;
    process.env.BROKER_POLICY_PATH = file;
    try {
      const res = await exchange(PROFILES);
      expect(res.status).toBe(403);
      expect(res.json).toMatchObject({ error: 'access_denied', reason: 'subject_denied' });
      expect(cosmosCalls('cosmos.permission')).toBe(0);
    } finally {
      process.env.BROKER_POLICY_PATH = prev;
    }
  });
});

describe('Cosmos faults', () => {
  function withPolicy(grant: Record<string, unknown>): () => void {
    const policy = {
      version: 1,
      deny: [],
      rules: [
        {
          id: 'r',
          subject: { tenantId: SANDBOX.tenantId, roles: ['Orders.Read'] },
          grants: { cosmos: [{ mode: 'all', partitionKey: { type: 'claim', claim: 'oid' }, maxTtlSeconds: 3600, ...grant }] },
        },
      ],
    };
    const file = join(dir, `policy-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(file, JSON.stringify(policy));
    const prev = process.env.BROKER_POLICY_PATH;
    process.env.BROKER_POLICY_PATH = file;
    return () => {
      process.env.BROKER_POLICY_PATH = prev;
    };
  }

  function withEnv(vars: Record<string, string>): () => void {
    const prev = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
    Object.assign(process.env, vars);
    testApp.renew();
    return () => {
      for (const [k, v] of Object.entries(prev)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      testApp.renew();
    };
  }

  test('429 with x-ms-retry-after-ms is honoured and the request succeeds within the budget', async () => {
    fx.sandbox.cosmos.inject({
      fault: { kind: 'status', status: 429, headers: { 'x-ms-retry-after-ms': '50' } },
      routes: ['cosmos.permission'],
      times: 2,
    });
    const res = await exchange(PROFILES);
    expect(res.status).toBe(200);
    expect(cosmosCalls('cosmos.permission')).toBe(3);
  });

  test('429 beyond the throttle budget is 503 temporarily_unavailable with Retry-After', async () => {
    const restore = withEnv({ COSMOS_THROTTLE_BUDGET_MS: '1000' });
    fx.sandbox.cosmos.inject({
      fault: { kind: 'status', status: 429, headers: { 'x-ms-retry-after-ms': '400' } },
      routes: ['cosmos.permission'],
    });
    try {
      const res = await exchange(PROFILES);
      expect(res.status).toBe(503);
      expect(res.json).toMatchObject({ error: 'temporarily_unavailable', reason: 'upstream_throttled' });
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      // bounded: a handful of attempts, not the SDK's default 9 retries over 30 s
      expect(cosmosCalls('cosmos.permission')).toBeGreaterThanOrEqual(2);
      expect(cosmosCalls('cosmos.permission')).toBeLessThanOrEqual(5);
    } finally {
      restore();
    }
  });

  test('Cosmos 500 is 502, 503 is 503, both with Retry-After and no upstream text', async () => {
    fx.sandbox.cosmos.inject({
      fault: { kind: 'status', status: 500, body: { code: 'InternalServerError', message: 'secret internals' } },
      routes: ['cosmos.permission', 'cosmos.user'],
    });
    const r500 = await exchange(PROFILES);
    expect(r500.status).toBe(502);
    expect(r500.json).toMatchObject({ error: 'temporarily_unavailable', reason: 'upstream_error' });
    expect(r500.headers.get('retry-after')).not.toBeNull();
    expect(r500.text).not.toContain('secret internals');
    fx.sandbox.cosmos.clearFaults();
    fx.sandbox.cosmos.inject({ fault: { kind: 'status', status: 503 }, routes: ['cosmos.permission', 'cosmos.user'] });
    const r503 = await exchange(PROFILES);
    expect(r503.status).toBe(503);
    expect(r503.headers.get('retry-after')).not.toBeNull();
  });

  test('a Cosmos that does not answer is 504 within the upstream timeout; an unreachable one is 503', async () => {
    const restore = withEnv({ BROKER_UPSTREAM_TIMEOUT_MS: '500' });
    try {
      fx.sandbox.cosmos.inject({ fault: { kind: 'hang' }, routes: ['cosmos.permission', 'cosmos.user'] });
      const hung = await exchange(PROFILES);
      expect(hung.status).toBe(504);
      expect(hung.json).toMatchObject({ error: 'temporarily_unavailable', reason: 'upstream_timeout' });
    } finally {
      restore();
    }
    fx.sandbox.cosmos.clearFaults();
    const restore2 = withEnv({ COSMOS_ENDPOINTS: `${C.account}=https://127.0.0.1:1/` });
    try {
      const down = await exchange(PROFILES);
      expect(down.status).toBe(503);
      expect(down.json).toMatchObject({ reason: 'upstream_unavailable' });
    } finally {
      restore2();
    }
  });

  test('a rule naming a container that does not exist is 502 target_misconfigured, not a stack trace', async () => {
    const restore = withPolicy({ account: C.account, database: C.database, container: 'ghost' });
    try {
      const res = await exchange(`cosmos://${C.account}/${C.database}/ghost`);
      expect(res.status).toBe(502);
      expect(res.json).toMatchObject({ reason: 'target_misconfigured' });
      expect(String(res.json.error_description)).toMatch(/does not exist/);
      const noDb = withPolicy({ account: C.account, database: 'nodb', container: 'x' });
      const r2 = await exchange(`cosmos://${C.account}/nodb/x`);
      noDb();
      expect(r2.status).toBe(502);
      expect(r2.json).toMatchObject({ reason: 'target_misconfigured' });
    } finally {
      restore();
    }
  });

  test('an account not in COSMOS_ENDPOINTS is 502 target_misconfigured and nothing is called', async () => {
    const restore = withPolicy({ account: 'unknown-acct', database: C.database, container: C.container });
    try {
      const res = await exchange(`cosmos://unknown-acct/${C.database}/${C.container}`);
      expect(res.status).toBe(502);
      expect(res.json).toMatchObject({ reason: 'target_misconfigured' });
      expect(fx.sandbox.cosmos.calls).toHaveLength(0);
      expect(keyReads()).toBe(0);
    } finally {
      restore();
    }
  });

  test('a missing account key in Key Vault is 503 config_invalid naming the secret; a wrong one is 403 upstream_denied', async () => {
    const restore = withEnv({ COSMOS_KEY_SECRET_NAME: 'nothing-here-{account}' });
    try {
      const res = await exchange(PROFILES);
      expect(res.status).toBe(503);
      expect(res.json).toMatchObject({ reason: 'config_invalid' });
      expect(String(res.json.error_description)).toContain(`nothing-here-${C.account}`);
    } finally {
      restore();
    }
    fx.sandbox.keyVault.seed('wrong-sandbox-cosmos', Buffer.alloc(64, 7).toString('base64'));
    const restore2 = withEnv({ COSMOS_KEY_SECRET_NAME: 'wrong-{account}' });
    try {
      const res = await exchange(PROFILES);
      expect(res.status).toBe(403);
      expect(res.json).toMatchObject({ error: 'unauthorized_client', reason: 'upstream_denied' });
    } finally {
      restore2();
    }
  });

  test('invalid Cosmos settings are 503 config_invalid naming the setting, before any upstream call', async () => {
    const restore = withEnv({ COSMOS_ENDPOINTS: 'sandbox-cosmos=http://plain-http.example' });
    try {
      const res = await exchange(PROFILES);
      expect(res.status).toBe(503);
      expect(res.json).toMatchObject({ error: 'temporarily_unavailable', reason: 'config_invalid' });
      expect(String(res.json.error_description)).toContain('COSMOS_ENDPOINTS');
      expect(fx.sandbox.cosmos.calls).toHaveLength(0);
    } finally {
      restore();
    }
  });

  test('no token or key reaches a log line', async () => {
    const res = await exchange(PROFILES);
    expect(res.status).toBe(200);
    const text = logs.records.map((l) => JSON.stringify(l)).join('\n');
    expect(text).not.toContain(res.json.access_token as string);
    expect(text).not.toContain(fx.sandbox.cosmos.masterKey);
    expect(text).toContain(res.json.access_token ? 'token.cosmos' : '');
  });
});
