import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CosmosClient, type ErrorResponse } from '@azure/cosmos';
import { decodeJwt } from 'jose';

import { policySchema } from '../../../shared/policy/schema';
import { ACCESS_TOKEN_TYPE, SANDBOX, startFixture, TOKEN_EXCHANGE, type Fixture } from '../../helpers/foundation';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const tokenHandler = testApp.handler('token');

/**
 * Keyless CosmosDB (Entra ID data-plane RBAC): the broker answers an Entra token of the user-assigned identity the
 * grant names; a plain @azure/cosmos client holding only that token reaches exactly what the identity's
 * container-scoped role assignment allows, on an account that refuses keys and resource tokens (disableLocalAuth).
 */

const K = SANDBOX.cosmosKeyless;
const ORDERS = `cosmos://${K.account}/${K.database}/${K.ordersContainer}`;

let fx: Fixture;
let gateway: string;
let agent: Agent;
let dir: string;
const logs = captureLogs();

beforeAll(async () => {
  fx = await startFixture();
  gateway = await fx.gateway();
  agent = new Agent({ ca: readFileSync(fx.sandbox.env.COSMOS_CA_FILE!, 'utf8') });
  dir = mkdtempSync(join(tmpdir(), 'cosmos-rbac-test-'));
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
  fx.sandbox.cosmosKeyless.clearFaults();
  fx.sandbox.cosmosKeyless.resetCalls();
  fx.sandbox.msi.clearFaults();
  fx.sandbox.msi.resetCalls();
  fx.sandbox.keyVault.resetCalls();
});

async function exchange(resource: string, extra: Record<string, string> = {}, subject?: string): Promise<Result> {
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

/** A plain SDK client whose credential is the broker's answer (what APIM or a backend does with it). */
function clientWith(res: Result): CosmosClient {
  const body = res.json as { access_token: string; account_endpoint: string; expires_in: number };
  return new CosmosClient({
    endpoint: body.account_endpoint,
    aadCredentials: {
      getToken: async () => ({ token: body.access_token, expiresOnTimestamp: Date.now() + body.expires_in * 1000 }),
    },
    agent,
    connectionPolicy: { retryOptions: { maxRetryAttemptCount: 0, fixedRetryIntervalInMilliseconds: 0, maxWaitTimeInSeconds: 0 } },
  });
}

async function failure(p: Promise<unknown>): Promise<{ code: number; substatus?: number; message: string }> {
  try {
    await p;
    return { code: 200, message: '' };
  } catch (e) {
    const r = e as ErrorResponse;
    return { code: r.code as number, substatus: r.substatus, message: String(r.body?.message ?? r.message) };
  }
}

function withPolicy(grants: readonly Record<string, unknown>[]): () => void {
  const policy = {
    version: 1,
    deny: [],
    rules: [{ id: 'r', subject: { tenantId: SANDBOX.tenantId, roles: ['Orders.Read'] }, grants: { cosmos: grants } }],
  };
  const file = join(dir, `policy-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(policy));
  const prev = process.env.BROKER_POLICY_PATH;
  process.env.BROKER_POLICY_PATH = file;
  return () => {
    process.env.BROKER_POLICY_PATH = prev;
  };
}

describe('POST /api/token for a keyless (rbac) Cosmos grant', () => {
  test("answers the identity's Entra token for the account, its real expiry and the connection details; no key is read", async () => {
    const res = await exchange(ORDERS);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.json).toMatchObject({
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      auth: 'rbac',
      authorization_format: 'type=aad&ver=1.0&sig={access_token}',
      account_endpoint: fx.sandbox.cosmosKeyless.endpoint,
      database: K.database,
      container: K.ordersContainer,
      partition_key: null,
      mode: 'read',
    });
    const claims = decodeJwt(res.json.access_token as string);
    expect(claims.aud).toBe(`https://${K.account}.documents.azure.com`);
    expect(claims.oid).toBe(K.readerIdentity.objectId);
    const left = (claims.exp as number) - Math.floor(Date.now() / 1000);
    expect(Math.abs((res.json.expires_in as number) - left)).toBeLessThanOrEqual(2);
    // the identity named by the grant, selected by client_id, asked for the account's scope
    const mi = fx.sandbox.msi.issued.at(-1)!;
    expect(mi.clientId).toBe(K.readerIdentity.clientId);
    expect(mi.resource).toBe(`https://${K.account}.documents.azure.com`);
    expect(fx.sandbox.keyVault.calls).toHaveLength(0);
    expect(fx.sandbox.cosmosKeyless.calls).toHaveLength(0);
    // cached: a second exchange calls no managed-identity endpoint
    const before = fx.sandbox.msi.count('msi.token');
    const again = await exchange(ORDERS);
    expect(again.json.access_token).toBe(res.json.access_token);
    expect(fx.sandbox.msi.count('msi.token')).toBe(before);
  });

  test('a plain @azure/cosmos client reads the granted container, is refused writes (read role), another container, and after expiry', async () => {
    const res = await exchange(ORDERS);
    const client = clientWith(res);
    try {
      const orders = client.database(K.database).container(K.ordersContainer);
      const read = await orders.item('order-1', SANDBOX.readerObjectId).read<{ total: number }>();
      expect(read.resource?.total).toBe(42);
      const q = await orders.items.query<{ id: string }>('SELECT * FROM c', { partitionKey: SANDBOX.readerObjectId }).fetchAll();
      expect(q.resources.map((d) => d.id)).toEqual(['order-1']);

      const write = await failure(orders.items.create({ id: 'x', customerId: SANDBOX.readerObjectId }));
      expect(write).toMatchObject({ code: 403, substatus: 5300 });
      expect(write.message).toContain('[Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/create]');
      expect(write.message).toContain(`[/dbs/${K.database}/colls/${K.ordersContainer}]`);
      expect(write.message).toContain(`principal [${K.readerIdentity.objectId}]`);
      expect((await failure(orders.item('order-1', SANDBOX.readerObjectId).delete())).code).toBe(403);

      const audit = await failure(client.database(K.database).container(K.auditContainer).item('a', 'd').read());
      expect(audit).toMatchObject({ code: 403, substatus: 5300 });
      expect(audit.message).toContain(`[/dbs/${K.database}/colls/${K.auditContainer}]`);

      const real = fx.sandbox.cosmosKeyless.clock.now;
      fx.sandbox.cosmosKeyless.clock.now = () => real() + ((res.json.expires_in as number) + 5) * 1000;
      try {
        const expired = await failure(orders.item('order-1', SANDBOX.readerObjectId).read());
        expect(expired.code).toBe(401);
        expect(expired.message).toMatch(/expired/);
      } finally {
        fx.sandbox.cosmosKeyless.clock.now = real;
      }
    } finally {
      client.dispose();
    }
    expect(fx.sandbox.cosmosKeyless.documents(K.database, K.ordersContainer)).toHaveLength(1);
  });

  test('a read-write identity on another container writes there, and only there', async () => {
    const restore = withPolicy([
      {
        account: K.account,
        database: K.database,
        container: K.auditContainer,
        mode: 'all',
        auth: 'rbac',
        identityClientId: K.writerIdentity.clientId,
      },
    ]);
    try {
      const res = await exchange(`cosmos://${K.account}/${K.database}/${K.auditContainer}`);
      expect(res.status).toBe(200);
      expect(decodeJwt(res.json.access_token as string).oid).toBe(K.writerIdentity.objectId);
      const client = clientWith(res);
      try {
        const audit = client.database(K.database).container(K.auditContainer);
        expect((await audit.items.create({ id: 'e1', day: '2026-01-01' })).statusCode).toBe(201);
        expect((await audit.items.upsert({ id: 'e1', day: '2026-01-01', n: 2 })).statusCode).toBe(200);
        expect(
          (await failure(client.database(K.database).container(K.ordersContainer).item('order-1', SANDBOX.readerObjectId).read()))
            .code,
        ).toBe(403);
        // management operations have no data action: never through data-plane RBAC
        expect(
          (await failure(client.database(K.database).containers.create({ id: 'new', partitionKey: { paths: ['/pk'] } }))).code,
        ).toBe(403);
      } finally {
        client.dispose();
      }
    } finally {
      restore();
    }
  });

  test('a keyless grant cannot be narrowed: a partition or another mode is 403, requested_lifetime is 400', async () => {
    const pk = await exchange(`${ORDERS}?partitionKey=${SANDBOX.readerObjectId}`);
    expect(pk.status).toBe(403);
    expect(pk.json).toMatchObject({ error: 'access_denied', reason: 'not_granted' });
    expect((await exchange(`${ORDERS}?mode=all`)).status).toBe(403);
    const ttl = await exchange(ORDERS, { requested_lifetime: '600' });
    expect(ttl.status).toBe(400);
    expect(ttl.json).toMatchObject({ error: 'invalid_request', reason: 'invalid_parameter', parameter: 'requested_lifetime' });
    expect(fx.sandbox.msi.count('msi.token')).toBe(0);
  });

  test('an identity not declared in COSMOS_RBAC_IDENTITY_CLIENT_IDS is 502 target_misconfigured, nothing called', async () => {
    const restore = withPolicy([
      {
        account: K.account,
        database: K.database,
        container: K.ordersContainer,
        mode: 'read',
        auth: 'rbac',
        identityClientId: '0dd00000-0000-4000-8000-000000000001',
      },
    ]);
    try {
      const res = await exchange(ORDERS);
      expect(res.status).toBe(502);
      expect(res.json).toMatchObject({ reason: 'target_misconfigured' });
      expect(String(res.json.error_description)).toContain('COSMOS_RBAC_IDENTITY_CLIENT_IDS');
      expect(fx.sandbox.msi.count('msi.token')).toBe(0);
    } finally {
      restore();
    }
  });

  test('managed-identity faults: refused or 5xx is 503 with Retry-After (@azure/identity reports both as unavailable), stalled 504 within the deadline; never a 500', async () => {
    // A fresh identity per case: @azure/identity (MSAL) keeps its own token cache per identity.
    let n = 0;
    const freshIdentity = (): (() => void) => {
      n++;
      const id = {
        clientId: `c05e0000-0000-4000-8000-0000000fa${String(n).padStart(3, '0')}`,
        objectId: `c05e0000-0000-4000-8000-0000000fb${String(n).padStart(3, '0')}`,
      };
      fx.sandbox.msi.addIdentity(id);
      const prevIds = process.env.COSMOS_RBAC_IDENTITY_CLIENT_IDS;
      process.env.COSMOS_RBAC_IDENTITY_CLIENT_IDS = `${prevIds},${id.clientId}`;
      const restorePolicy = withPolicy([
        {
          account: K.account,
          database: K.database,
          container: K.ordersContainer,
          mode: 'read',
          auth: 'rbac',
          identityClientId: id.clientId,
        },
      ]);
      return () => {
        restorePolicy();
        process.env.COSMOS_RBAC_IDENTITY_CLIENT_IDS = prevIds;
      };
    };
    let restore = freshIdentity();
    fx.sandbox.msi.inject({
      fault: { kind: 'status', status: 403, body: { error: 'forbidden', error_description: 'internal detail' } },
      routes: ['msi.token'],
    });
    try {
      const refused = await exchange(ORDERS);
      expect(refused.status).toBe(503);
      expect(refused.json).toMatchObject({ error: 'temporarily_unavailable', reason: 'upstream_unavailable' });
      expect(refused.text).not.toContain('internal detail');
    } finally {
      fx.sandbox.msi.clearFaults();
      restore();
    }
    restore = freshIdentity();
    fx.sandbox.msi.inject({ fault: { kind: 'status', status: 500 }, routes: ['msi.token'] });
    try {
      const down = await exchange(ORDERS);
      expect(down.status).toBe(503);
      expect(down.headers.get('retry-after')).not.toBeNull();
    } finally {
      fx.sandbox.msi.clearFaults();
      restore();
    }
    restore = freshIdentity();
    const prev = process.env.BROKER_UPSTREAM_TIMEOUT_MS;
    process.env.BROKER_UPSTREAM_TIMEOUT_MS = '500';
    fx.sandbox.msi.inject({ fault: { kind: 'hang' }, routes: ['msi.token'] });
    try {
      const started = Date.now();
      const hung = await exchange(ORDERS);
      expect(hung.status).toBe(504);
      expect(hung.json).toMatchObject({ reason: 'upstream_timeout' });
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      if (prev === undefined) delete process.env.BROKER_UPSTREAM_TIMEOUT_MS;
      else process.env.BROKER_UPSTREAM_TIMEOUT_MS = prev;
      fx.sandbox.msi.clearFaults();
      restore();
    }
  });

  test('the token never reaches a log line', async () => {
    const res = await exchange(ORDERS);
    expect(res.status).toBe(200);
    const text = logs.records.map((l) => JSON.stringify(l)).join('\n');
    expect(text).not.toContain(res.json.access_token as string);
  });
});

describe('policy schema for keyless grants', () => {
  const parse = (g: Record<string, unknown>) =>
    policySchema.safeParse({
      version: 1,
      rules: [{ id: 'r', subject: { tenantId: SANDBOX.tenantId, roles: ['x'] }, grants: { cosmos: [g] } }],
    });
  const base = { account: K.account, database: K.database, container: K.ordersContainer, mode: 'read' };
  const messages = (r: ReturnType<typeof parse>) =>
    r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);

  test('rbac refuses partitionKey and maxTtlSeconds and needs an identity; resourceToken refuses an identity', () => {
    expect(parse({ ...base, auth: 'rbac', identityClientId: K.readerIdentity.clientId }).success).toBe(true);
    expect(
      messages(
        parse({ ...base, auth: 'rbac', identityClientId: K.readerIdentity.clientId, partitionKey: { type: 'none' } }),
      ).join(),
    ).toMatch(/partitionKey: partition scoping is not possible/);
    expect(
      messages(parse({ ...base, auth: 'rbac', identityClientId: K.readerIdentity.clientId, maxTtlSeconds: 600 })).join(),
    ).toMatch(/maxTtlSeconds: not for auth "rbac"/);
    expect(messages(parse({ ...base, auth: 'rbac' })).join()).toMatch(/identityClientId/);
    expect(messages(parse({ ...base, auth: 'rbac', identityClientId: 'not-a-guid' })).join()).toMatch(/identityClientId/);
    expect(
      messages(
        parse({ ...base, partitionKey: { type: 'none' }, maxTtlSeconds: 600, identityClientId: K.readerIdentity.clientId }),
      ).join(),
    ).toMatch(/only for auth "rbac"/);
    expect(messages(parse({ ...base, maxTtlSeconds: 600 })).join()).toMatch(/partitionKey: required/);
    expect(parse({ ...base, partitionKey: { type: 'none' }, maxTtlSeconds: 600 }).success).toBe(true);
    expect(parse({ ...base, partitionKey: { type: 'fixed', value: 'a\u0000b' }, maxTtlSeconds: 600 }).success).toBe(false);
  });
});

describe('the keyless account (emulator: disableLocalAuth, Entra tokens only)', () => {
  const emu = () => fx.sandbox.cosmosKeyless;
  const mint = (o: Parameters<typeof fx.sandbox.entra.mint>[0] = {}) =>
    fx.sandbox.entra.mint({
      oid: K.readerIdentity.objectId,
      appId: K.readerIdentity.clientId,
      aud: `https://${K.account}.documents.azure.com`,
      version: '1.0',
      ...o,
    });

  async function rawRead(authorization: string): Promise<number> {
    // A raw REST request (node:https with the sandbox CA): the Authorization header exactly as given.
    const { request } = await import('node:https');
    const url = new URL(`dbs/${K.database}/colls/${K.ordersContainer}/docs/order-1`, emu().endpoint);
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method: 'GET',
          agent,
          headers: {
            authorization,
            'x-ms-date': new Date().toUTCString(),
            'x-ms-documentdb-partitionkey': JSON.stringify([SANDBOX.readerObjectId]),
          },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', reject);
      req.end();
    });
  }

  test('Entra tokens: a good one is 200; bad signature, wrong audience, other issuer, expired are 401', async () => {
    const aad = (t: string) => `type=aad&ver=1.0&sig=${t}`;
    expect(await rawRead(aad(await mint()))).toBe(200);
    expect(await rawRead(aad(await mint({ key: fx.sandbox.entra.strayKey() })))).toBe(401);
    expect(await rawRead(aad(await mint({ aud: 'https://other-account.documents.azure.com' })))).toBe(401);
    expect(await rawRead(aad(await mint({ aud: 'https://cosmos.azure.com' })))).toBe(401);
    expect(await rawRead(aad(await mint({ iss: 'https://sts.windows.net/00000000-0000-4000-8000-000000000bad/' })))).toBe(401);
    expect(await rawRead(aad(await mint({ expiresIn: -10 })))).toBe(401);
    expect(await rawRead(aad('not.a.jwt'))).toBe(401);
    // a principal without any role assignment is 403
    expect(await rawRead(aad(await mint({ oid: '0dd00000-0000-4000-8000-0000000000aa' })))).toBe(403);
  });

  test('master keys and resource tokens are refused with 401 (local authorization disabled)', async () => {
    const master = encodeURIComponent(`type=master&ver=1.0&sig=${Buffer.alloc(32).toString('base64')}`);
    expect(await rawRead(master)).toBe(401);
    const resource = encodeURIComponent(`type=resource&ver=1.0&sig=abc;${Buffer.from('{}').toString('base64')}`);
    expect(await rawRead(resource)).toBe(401);
    const keyClient = new CosmosClient({ endpoint: emu().endpoint, key: emu().masterKey, agent });
    try {
      const r = await failure(
        keyClient.database(K.database).container(K.ordersContainer).item('order-1', SANDBOX.readerObjectId).read(),
      );
      expect(r.code).toBe(401);
      expect(r.message).toContain('Local Authorization is disabled');
    } finally {
      keyClient.dispose();
    }
  });

  test('role scopes: an assignment at / or /dbs/{db} covers the containers below; scopes stop at the container', async () => {
    const oid = '0dd00000-0000-4000-8000-0000000000ab';
    const aad = async () => `type=aad&ver=1.0&sig=${await mint({ oid })}`;
    expect(await rawRead(await aad())).toBe(403);
    emu().assignRole({ principalId: oid, roleDefinitionId: '00000000-0000-0000-0000-000000000001', scope: `/dbs/${K.database}` });
    try {
      expect(await rawRead(await aad())).toBe(200);
    } finally {
      emu().removeRoleAssignments(oid);
    }
    emu().assignRole({ principalId: oid, roleDefinitionId: '00000000-0000-0000-0000-000000000001', scope: '/' });
    try {
      expect(await rawRead(await aad())).toBe(200);
    } finally {
      emu().removeRoleAssignments(oid);
    }
    expect(() =>
      emu().assignRole({
        principalId: oid,
        roleDefinitionId: '00000000-0000-0000-0000-000000000001',
        scope: `/dbs/${K.database}/colls/${K.ordersContainer}/docs/order-1`,
      }),
    ).toThrow(/scope/);
  });
});
