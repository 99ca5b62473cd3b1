import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { FetchLike } from '@modelcontextprotocol/sdk/shared/transport.js';
import { fetchIntoHandler } from '../../helpers/mcp-fetch';
import { SANDBOX } from '../../../local/ids';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { TestApp } from '../../helpers/app';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { workerHost } from '../../helpers/loopback';

/**
 * The Cosmos read tools of the MCP server (issue 24 §3), end to end: the official SDK client over Streamable HTTP into
 * the real handler, real Entra emulator tokens, the sample policy (plus a rule for another role), the broker minting
 * its real credentials (a read-only resource token on the caller's partition; the keyless identity's Entra token) and
 * reading the Cosmos emulators with @azure/cosmos.
 */

const testApp = new TestApp();
const handler = testApp.handler('mcp');
const HOST = workerHost(90);
const ROOT = resolve(__dirname, '..', '..', '..');
const MCP_URL = SANDBOX.mcp.resourceUrl;
const TIMEOUT_MS = 1500;
const MAX_BYTES = 2048;
const C = SANDBOX.cosmos;
const K = SANDBOX.cosmosKeyless;
jest.setTimeout(60_000);

let sb: Sandbox;
let dir: string;
let restoreEnv: () => void;
const logs = captureLogs();
const tokens: Record<string, string> = {};

interface PolicyDoc {
  deny: { tenantId: string; objectId: string }[];
  rules: { id: string; grants: Record<string, unknown>; [k: string]: unknown }[];
}

function writePolicy(mutate: (p: PolicyDoc) => void = () => undefined): void {
  const policy = JSON.parse(readFileSync(resolve(ROOT, 'local/sample-policy.json'), 'utf8')) as PolicyDoc;
  // Another role's container (keyless audit): Orders.Read callers have no tool for it.
  policy.rules.push({
    id: 'cosmos-auditors',
    subject: { tenantId: SANDBOX.tenantId, roles: ['Cosmos.Audit'] },
    grants: {
      cosmos: [
        {
          account: K.account,
          database: K.database,
          container: K.auditContainer,
          mode: 'all',
          auth: 'rbac',
          identityClientId: K.writerIdentity.clientId,
          mcp: { partitionKey: { type: 'fixed', value: '2026-01-01' } },
        },
      ],
    },
  });
  // A granted container that does not exist (a misconfigured grant): the identity may read it, Cosmos has no such container.
  policy.rules.push({
    id: 'ghosts',
    subject: { tenantId: SANDBOX.tenantId, roles: ['Ghost'] },
    grants: {
      cosmos: [
        {
          account: K.account,
          database: K.database,
          container: 'missing',
          mode: 'read',
          auth: 'rbac',
          identityClientId: K.readerIdentity.clientId,
          mcp: { partitionKey: { type: 'claim', claim: 'oid' } },
        },
      ],
    },
  });
  mutate(policy);
  writeFileSync(join(dir, 'policy.json'), JSON.stringify(policy));
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mcp-cosmos-'));
  writePolicy();
  sb = await startSandbox({
    cloudSql: { host: HOST },
    env: {
      BROKER_POLICY_PATH: join(dir, 'policy.json'),
      BROKER_POLICY_REFRESH_SECONDS: '1',
      BROKER_UPSTREAM_TIMEOUT_MS: String(TIMEOUT_MS),
      MCP_COSMOS_MAX_BYTES: String(MAX_BYTES),
    },
  });
  restoreEnv = sb.applyEnv();
  // Grace's own item, and a public catalog for the bounds.
  sb.cosmos.putDocument(C.database, C.container, { id: 'grace-only', pk: SANDBOX.secondReaderObjectId, note: 'Grace' });
  for (let i = 1; i <= 5; i++) sb.cosmos.putDocument(C.database, C.catalogContainer, { id: `item-${i}`, pk: 'public', n: i });
  sb.cosmos.putDocument(C.database, C.catalogContainer, { id: 'big', pk: 'public', blob: 'x'.repeat(3000) });
  const mcp = { resource: SANDBOX.mcp.appIdUri, appId: SANDBOX.mcp.agentHostAppId, scp: SANDBOX.mcp.scope };
  tokens.ada = await sb.entra.mint({ ...mcp, oid: SANDBOX.readerObjectId, roles: ['Orders.Read'] });
  tokens.grace = await sb.entra.mint({ ...mcp, oid: SANDBOX.secondReaderObjectId, roles: ['Orders.Read'] });
  tokens.stranger = await sb.entra.mint({ ...mcp, oid: SANDBOX.strangerObjectId });
  tokens.ghost = await sb.entra.mint({ ...mcp, oid: SANDBOX.readerObjectId, roles: ['Ghost'] });
  sb.cosmosKeyless.assignRole({
    principalId: K.readerIdentity.objectId,
    roleDefinitionId: K.readOnlyRoleId,
    scope: `/dbs/${K.database}/colls/missing`,
  });
});

afterAll(async () => {
  logs.restore();
  await testApp.app.close();
  restoreEnv?.();
  await sb?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const fetchInto = (token: string): FetchLike => fetchIntoHandler(handler, token);

async function withClient<T>(token: string, fn: (c: Client) => Promise<T>): Promise<T> {
  const client = new Client({ name: 'cosmos-e2e', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(MCP_URL), { fetch: fetchInto(token) }));
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

function post(body: unknown, token: string): Promise<Result> {
  return invoke(handler, {
    url: MCP_URL,
    headers: {
      accept: 'application/json, text/event-stream',
      'content-type': 'application/json',
      'mcp-protocol-version': '2025-11-25',
      authorization: `Bearer ${token}`,
    },
    ...(typeof body === 'string' ? { raw: body } : { body }),
  });
}

type ToolResult = { isError?: boolean; structuredContent?: Record<string, unknown>; content: { type: string; text: string }[] };
type Item = Record<string, unknown>;

async function callTool(token: string, name: string, args: Record<string, unknown> = {}): Promise<ToolResult> {
  const r = await post({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name, arguments: args } }, token);
  expect(r.status).toBe(200);
  return r.json.result as ToolResult;
}

function errorOf(r: ToolResult): Record<string, unknown> {
  expect(r.isError).toBe(true);
  return (JSON.parse(r.content[0]!.text) as { error: Record<string, unknown> }).error;
}

async function listNames(token: string): Promise<string[]> {
  const r = await post({ jsonrpc: '2.0', id: 1, method: 'tools/list' }, token);
  return (r.json.result as { tools: { name: string }[] }).tools.map((t) => t.name);
}

describe('tools/list', () => {
  test('a granted caller lists a read and a query tool per granted container: read-only, strict schemas, no partition key', async () => {
    await withClient(tokens.ada!, async (client) => {
      const { tools } = await client.listTools();
      const cosmos = tools.filter((t) => t.name.startsWith('cosmos_'));
      expect(cosmos.map((t) => t.name)).toEqual([
        'cosmos_read_app_profiles',
        'cosmos_query_app_profiles',
        'cosmos_read_app_catalog',
        'cosmos_query_app_catalog',
        'cosmos_read_shop_orders',
        'cosmos_query_shop_orders',
      ]);
      for (const t of cosmos) {
        expect(t.annotations).toMatchObject({ readOnlyHint: true, openWorldHint: false, destructiveHint: false });
        expect(t.inputSchema).toMatchObject({ type: 'object', additionalProperties: false });
        expect(JSON.stringify(t.inputSchema)).not.toMatch(/partition|"pk"|customerId/i);
      }
      const read = cosmos.find((t) => t.name === 'cosmos_read_app_profiles')!;
      expect(read.inputSchema).toMatchObject({ required: ['id'], properties: { id: { type: 'string' } } });
      const orders = cosmos.find((t) => t.name === 'cosmos_query_shop_orders')!;
      expect(Object.keys(orders.inputSchema.properties ?? {})).toEqual(['where', 'maxItems']);
      expect(orders.inputSchema.properties!.where).toMatchObject({ additionalProperties: false, properties: { status: {} } });
      // A grant without declared fields offers no filters.
      expect(Object.keys(cosmos.find((t) => t.name === 'cosmos_query_app_profiles')!.inputSchema.properties ?? {})).toEqual([
        'maxItems',
      ]);
    });
  });

  test('an ungranted container has no tool, and a call is refused (not_granted), audited', async () => {
    expect(await listNames(tokens.ada!)).not.toContain('cosmos_read_shop_audit');
    const e = errorOf(await callTool(tokens.ada!, 'cosmos_read_shop_audit', { id: 'a' }));
    expect(e).toMatchObject({ code: 'not_granted' });
    expect(e.correlationId).toMatch(/\S/);
    expect((await listNames(tokens.stranger!)).filter((n) => n.startsWith('cosmos_'))).toEqual([]);
    expect(errorOf(await callTool(tokens.stranger!, 'cosmos_query_app_profiles')).code).toBe('not_granted');
    const denied = logs.records.filter(
      (x) => x.event === 'audit' && x.action === 'mcp.tools/call' && x.decision === 'deny' && x.reason === 'not_granted',
    );
    expect(denied.some((x) => x.target === `cosmos://${K.account}/${K.database}/${K.auditContainer}`)).toBe(true);
  });

  test('explain_access names the granted containers and their tools, never a container of another rule', async () => {
    const r = await callTool(tokens.ada!, 'explain_access');
    const cosmos = r.structuredContent!.cosmos as Item[];
    expect(cosmos).toEqual([
      expect.objectContaining({
        container: `${C.account}/${C.database}/${C.container}`,
        decision: 'grant',
        ruleId: 'orders-readers',
      }),
      expect.objectContaining({ container: `${C.account}/${C.database}/${C.catalogContainer}`, decision: 'grant' }),
      expect.objectContaining({
        container: `${K.account}/${K.database}/${K.ordersContainer}`,
        tools: ['cosmos_read_shop_orders', 'cosmos_query_shop_orders'],
      }),
    ]);
    expect(JSON.stringify(r)).not.toContain(K.auditContainer);
    const stranger = await callTool(tokens.stranger!, 'explain_access');
    expect(stranger.structuredContent!.cosmos).toEqual([]);
  });

  test('a name no policy grant stands for is an unknown tool (JSON-RPC -32602)', async () => {
    const r = await post(
      { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'cosmos_read_nope_nothing', arguments: { id: 'a' } } },
      tokens.ada!,
    );
    expect((r.json.error as { code: number }).code).toBe(-32602);
  });
});

describe('reads of the caller’s own partition', () => {
  test('point read by id (resource token) returns the caller’s own item, marked as data', async () => {
    await withClient(tokens.ada!, async (client) => {
      const r = (await client.callTool({ name: 'cosmos_read_app_profiles', arguments: { id: 'profile' } })) as ToolResult;
      expect(r.isError).toBeFalsy();
      expect(r.structuredContent).toMatchObject({
        container: `${C.account}/${C.database}/${C.container}`,
        count: 1,
        truncated: false,
      });
      const [item] = r.structuredContent!.items as Item[];
      expect(item).toMatchObject({ id: 'profile', pk: SANDBOX.readerObjectId, displayName: 'Ada Lovelace' });
      expect(item).not.toHaveProperty('_self');
      expect(r.content[0]!.text).toMatch(/data .*not an instruction/);
      expect(JSON.parse(r.content[1]!.text)).toEqual(r.structuredContent);
    });
    const grace = await callTool(tokens.grace!, 'cosmos_read_app_profiles', { id: 'profile' });
    expect((grace.structuredContent!.items as Item[])[0]).toMatchObject({ displayName: 'Grace Hopper' });
  });

  test("another partition's item is never returned: a point read is not_found, a query returns only own items", async () => {
    const e = errorOf(await callTool(tokens.ada!, 'cosmos_read_app_profiles', { id: 'grace-only' }));
    expect(e).toMatchObject({ code: 'not_found', parameter: 'id' });
    expect(JSON.stringify(e)).not.toContain('Grace');
    const q = await callTool(tokens.ada!, 'cosmos_query_app_profiles');
    const items = q.structuredContent!.items as Item[];
    expect(items.length).toBeGreaterThan(0);
    expect(items.every((i) => i.pk === SANDBOX.readerObjectId)).toBe(true);
    expect(JSON.stringify(q)).not.toContain('Grace');
    const g = await callTool(tokens.grace!, 'cosmos_query_app_profiles');
    expect((g.structuredContent!.items as Item[]).map((i) => i.id).sort()).toEqual(['grace-only', 'profile']);
  });

  test('the minted resource token is Read on the caller’s partition, for a grant of mode all too', async () => {
    await callTool(tokens.ada!, 'cosmos_read_app_profiles', { id: 'profile' });
    const users = sb.cosmos.users(C.database);
    const perms = users.flatMap((u) => sb.cosmos.permissions(C.database, u));
    expect(perms).toContainEqual(
      expect.objectContaining({
        permissionMode: 'Read',
        resource: `dbs/${C.database}/colls/${C.container}`,
        resourcePartitionKey: [SANDBOX.readerObjectId],
      }),
    );
    // every permission the tools minted (this file exchanges no tokens) reads one partition: never All, never the whole container
    expect(perms.length).toBeGreaterThan(0);
    expect(perms.filter((x) => x.permissionMode !== 'Read' || x.resourcePartitionKey?.length !== 1)).toEqual([]);
  });

  test('keyless (rbac) grant: the identity reads the caller’s partition only; equality filters on declared fields', async () => {
    const own = await callTool(tokens.ada!, 'cosmos_read_shop_orders', { id: 'order-1' });
    expect((own.structuredContent!.items as Item[])[0]).toMatchObject({ id: 'order-1', total: 42 });
    expect(errorOf(await callTool(tokens.grace!, 'cosmos_read_shop_orders', { id: 'order-1' })).code).toBe('not_found');
    expect((await callTool(tokens.grace!, 'cosmos_query_shop_orders')).structuredContent).toMatchObject({ items: [], count: 0 });
    const shipped = await callTool(tokens.ada!, 'cosmos_query_shop_orders', { where: { status: 'shipped' } });
    expect((shipped.structuredContent!.items as Item[]).map((i) => i.id)).toEqual(['order-1']);
    const none = await callTool(tokens.ada!, 'cosmos_query_shop_orders', { where: { status: 'open' } });
    expect(none.structuredContent!.count).toBe(0);
    const line = logs.records
      .filter(
        (x) =>
          x.event === 'audit' &&
          x.decision === 'grant' &&
          x.target === `cosmos://${K.account}/${K.database}/${K.ordersContainer}`,
      )
      .pop()!;
    expect(line).toMatchObject({
      action: 'mcp.tools/call',
      subject: { tenantId: SANDBOX.tenantId, objectId: SANDBOX.readerObjectId },
      agentAppId: SANDBOX.mcp.agentHostAppId,
      tool: 'cosmos_query_shop_orders',
      auth: 'rbac',
      items: 0,
    });
  });
});

describe('arguments', () => {
  test('a partition key in arguments is refused by name and audited; unknown arguments and filters too', async () => {
    for (const k of ['partitionKey', 'pk']) {
      const e = errorOf(
        await callTool(tokens.ada!, 'cosmos_read_app_profiles', { id: 'profile', [k]: SANDBOX.secondReaderObjectId }),
      );
      expect(e).toMatchObject({ code: 'invalid_parameter', parameter: k });
      expect(String(e.message)).toContain(k);
    }
    expect(errorOf(await callTool(tokens.ada!, 'cosmos_query_app_profiles', { foo: 1 }))).toMatchObject({
      code: 'invalid_parameter',
      parameter: 'foo',
    });
    expect(errorOf(await callTool(tokens.ada!, 'cosmos_query_app_profiles', { where: { pk: 'x' } }))).toMatchObject({
      code: 'invalid_parameter',
      parameter: 'where',
    });
    expect(errorOf(await callTool(tokens.ada!, 'cosmos_query_shop_orders', { where: { customerId: 'x' } }))).toMatchObject({
      code: 'invalid_parameter',
      parameter: 'where.customerId',
    });
    expect(errorOf(await callTool(tokens.ada!, 'cosmos_query_shop_orders', { maxItems: 51 }))).toMatchObject({
      parameter: 'maxItems',
    });
    expect(errorOf(await callTool(tokens.ada!, 'cosmos_read_app_profiles', { id: 'a/b' }))).toMatchObject({ parameter: 'id' });
    expect(errorOf(await callTool(tokens.ada!, 'cosmos_read_app_profiles', {}))).toMatchObject({ parameter: 'id' });
    const r = await post(
      `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"cosmos_read_app_profiles","arguments":{"id":"profile","__proto__":{"pk":"x"}}}}`,
      tokens.ada!,
    );
    expect(errorOf(r.json.result as ToolResult)).toMatchObject({ code: 'invalid_parameter', parameter: '__proto__' });
    const denied = logs.records.filter(
      (x) => x.event === 'audit' && x.action === 'mcp.tools/call' && x.decision === 'deny' && x.reason === 'invalid_parameter',
    );
    expect(denied.some((x) => x.tool === 'cosmos_read_app_profiles')).toBe(true);
  });
});

describe('bounds', () => {
  test('maxItems cuts with a notice; MCP_COSMOS_MAX_BYTES cuts with a notice', async () => {
    const two = await callTool(tokens.ada!, 'cosmos_query_app_catalog', { maxItems: 2 });
    expect(two.structuredContent).toMatchObject({
      count: 2,
      truncated: true,
      notice: { limit: 'maxItems', value: 2, rowsReturned: 2 },
    });
    const all = await callTool(tokens.ada!, 'cosmos_query_app_catalog', { maxItems: 10 });
    expect(all.structuredContent).toMatchObject({
      count: 5,
      truncated: true,
      notice: { limit: 'maxBytes', value: MAX_BYTES, rowsReturned: 5 },
    });
    expect(JSON.stringify(all.structuredContent)).not.toContain('xxxx');
    const big = await callTool(tokens.ada!, 'cosmos_read_app_catalog', { id: 'big' });
    expect(big.structuredContent).toMatchObject({ count: 0, truncated: true, notice: { limit: 'maxBytes' } });
  });
});

describe('policy changes', () => {
  test('the deny list removes the Cosmos tools and refuses their calls', async () => {
    writePolicy((p) => p.deny.push({ tenantId: SANDBOX.tenantId, objectId: SANDBOX.secondReaderObjectId }));
    try {
      const deadline = Date.now() + 5000;
      let names: string[];
      do {
        await new Promise((r) => setTimeout(r, 300));
        names = await listNames(tokens.grace!);
      } while (names.some((n) => n.startsWith('cosmos_')) && Date.now() < deadline);
      expect(names.filter((n) => n.startsWith('cosmos_'))).toEqual([]);
      expect(errorOf(await callTool(tokens.grace!, 'cosmos_read_app_profiles', { id: 'profile' })).code).toBe('subject_denied');
      expect((await listNames(tokens.ada!)).filter((n) => n.startsWith('cosmos_'))).toHaveLength(6);
    } finally {
      writePolicy();
    }
  });
});

describe('Cosmos faults', () => {
  test('Cosmos hanging: a tool error (upstream_timeout) within the deadline, not a hang', async () => {
    await callTool(tokens.ada!, 'cosmos_read_app_profiles', { id: 'profile' }); // the token is cached
    const heal = sb.cosmos.inject({ fault: { kind: 'hang' }, routes: ['cosmos.document'] });
    try {
      const t0 = Date.now();
      const e = errorOf(await callTool(tokens.ada!, 'cosmos_read_app_profiles', { id: 'profile' }));
      expect(e.code).toBe('upstream_timeout');
      expect(Date.now() - t0).toBeLessThan(TIMEOUT_MS + 1500);
      expect(JSON.stringify(e)).not.toMatch(/type=resource|sig=/);
    } finally {
      heal();
    }
  });

  test('Cosmos throttling: upstream_throttled with retryAfterSeconds, no retries inside the call', async () => {
    await callTool(tokens.ada!, 'cosmos_query_app_profiles'); // the token is cached
    sb.cosmos.setThrottle({ every: 1, routes: ['cosmos.document'], retryAfterSeconds: 2 });
    try {
      const t0 = Date.now();
      const e = errorOf(await callTool(tokens.ada!, 'cosmos_query_app_profiles'));
      expect(e).toMatchObject({ code: 'upstream_throttled' });
      expect(e.retryAfterSeconds).toBeGreaterThanOrEqual(1);
      // The SDK's query plan request and the query (or its one fallback) at most, back to back: Retry-After (2 s) is the
      // agent's to honour, not waited for inside the call.
      expect(sb.cosmos.throttled()).toBeLessThanOrEqual(2);
      expect(Date.now() - t0).toBeLessThan(1500);
    } finally {
      sb.cosmos.setThrottle(undefined);
    }
  });

  test('a granted container that does not exist is target_misconfigured (404 substatus 1003), not an item not_found', async () => {
    expect(errorOf(await callTool(tokens.ghost!, 'cosmos_read_shop_missing', { id: 'order-1' })).code).toBe(
      'target_misconfigured',
    );
    expect(errorOf(await callTool(tokens.ghost!, 'cosmos_query_shop_missing')).code).toBe('target_misconfigured');
  });

  test('Cosmos down (keyless account): a tool error with a broker code, quickly', async () => {
    const heal = sb.cosmosKeyless.inject({ fault: { kind: 'down' } });
    try {
      const t0 = Date.now();
      const e = errorOf(await callTool(tokens.ada!, 'cosmos_query_shop_orders'));
      expect(['upstream_unavailable', 'upstream_timeout', 'upstream_error']).toContain(e.code);
      expect(Date.now() - t0).toBeLessThan(TIMEOUT_MS + 1500);
    } finally {
      heal();
    }
  });
});
