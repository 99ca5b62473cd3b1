import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { FetchLike } from '@modelcontextprotocol/sdk/shared/transport.js';
import { fetchIntoHandler } from '../../helpers/mcp-fetch';
import { SANDBOX } from '../../../local/ids';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { clearConnectInfoCache } from '../../../shared/cloudsql/connect-settings';
import { TestApp } from '../../helpers/app';
import { captureLogs } from '../../helpers/invoke';
import { workerHost } from '../../helpers/loopback';

/**
 * MCP tools in the caller identity mode (issue #28): `tools/call` of a caller-mode rule's query runs as the person, the
 * same path as POST /api/query (run-catalogued.ts → per-caller pools), through the official SDK client. The caller's
 * token is for the MCP resource's app, so that app makes the on-behalf-of request (CALLER_OBO_MCP_CLIENT_ID, its own
 * federated credential trusting the managed identity; docs/mcp.md "Caller identity mode").
 */

const HOST = workerHost(90);
jest.setTimeout(90_000);
const testApp = new TestApp();
const handler = testApp.handler('mcp');
const logs = captureLogs();

let sb: Sandbox;
let restoreEnv: () => void;
const tokens: Record<'ada' | 'grace' | 'stranger' | 'noRole', string> = {} as never;

beforeAll(async () => {
  sb = await startSandbox({
    cloudSql: { host: HOST },
    env: { QUERY_CONNECT_TIMEOUT_MS: '4000', BROKER_UPSTREAM_TIMEOUT_MS: '1500' },
  });
  restoreEnv = sb.applyEnv();
  clearConnectInfoCache();
  const person = (oid: string) =>
    sb.entra.mint({
      resource: SANDBOX.mcp.appIdUri,
      appId: SANDBOX.mcp.agentHostAppId,
      scp: SANDBOX.mcp.scope,
      oid,
      roles: [SANDBOX.personRole],
      extra: { preferred_username: `${oid.slice(-4)}@contoso.com` },
    });
  tokens.ada = await person(SANDBOX.readerObjectId);
  tokens.grace = await person(SANDBOX.secondReaderObjectId);
  tokens.stranger = await person(SANDBOX.strangerObjectId);
  tokens.noRole = await person(SANDBOX.workforce.noRoleObjectId);
});

afterAll(async () => {
  logs.restore();
  await testApp.app.close();
  restoreEnv?.();
  await sb?.stop();
});

/** A fetch that hands the SDK client's requests to the real handler, as the Functions host would. */
const fetchInto = (token: string): FetchLike => fetchIntoHandler(handler, token);

type ToolResult = { isError?: boolean; structuredContent?: Record<string, unknown>; content: { type: string; text: string }[] };

async function callTool(token: string, name: string): Promise<ToolResult> {
  const client = new Client({ name: 'caller-mode-e2e', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(SANDBOX.mcp.resourceUrl), { fetch: fetchInto(token) }));
  try {
    return (await client.callTool({ name, arguments: {} })) as ToolResult;
  } finally {
    await client.close();
  }
}

const toolError = (r: ToolResult) => {
  expect(r.isError).toBe(true);
  return (JSON.parse(r.content[0]!.text) as { error: Record<string, unknown> }).error;
};

test('two people through MCP each see only their own rows, current_user is each person, their own grants apply', async () => {
  const ada = await callTool(tokens.ada, 'my-documents');
  expect(ada.isError).toBeFalsy();
  const adaRows = ada.structuredContent!.rows as unknown[][];
  expect(adaRows.map((r) => r[0])).toEqual(['1', '2']);
  expect(new Set(adaRows.map((r) => r[2]))).toEqual(new Set([SANDBOX.readerObjectId]));

  const grace = await callTool(tokens.grace, 'my-documents');
  expect(grace.isError).toBeFalsy();
  const graceRows = grace.structuredContent!.rows as unknown[][];
  expect(graceRows.map((r) => r[0])).toEqual(['3']);
  expect(graceRows[0]![2]).toBe(SANDBOX.secondReaderObjectId);

  // Ada's own database grants include orders, Grace's do not: PostgreSQL decides, per person.
  const adaOrders = await callTool(tokens.ada, 'orders-total');
  expect(adaOrders.isError).toBeFalsy();
  expect(adaOrders.structuredContent!.rows).toEqual([[4, SANDBOX.readerObjectId]]);
  expect(toolError(await callTool(tokens.grace, 'orders-total')).code).toBe('db_permission_denied');
  // The MCP resource's app made the on-behalf-of requests (the tokens' audience), with its federated credential.
  const obo = sb.entra.calls.filter((c) => c.route === 'token' && c.status === 200);
  expect(obo.length).toBeGreaterThanOrEqual(2);
});

test('a caller not added as a database user gets a tool error naming what is missing, never PostgreSQL text', async () => {
  const err = toolError(await callTool(tokens.stranger, 'my-documents'));
  expect(err.code).toBe('caller_identity_refused');
  expect(err.refusal).toBe('not_database_user');
  expect(String(err.message)).toMatch(/not added as a database user/);
  expect(err.correlationId).toMatch(/\S/);
  expect(JSON.stringify(err)).not.toMatch(/authentication failed|28P01/);
});

test('a database user without roles/cloudsql.instanceUser gets a tool error naming the IAM role', async () => {
  const err = toolError(await callTool(tokens.noRole, 'my-documents'));
  expect(err.code).toBe('caller_identity_refused');
  expect(err.refusal).toBe('no_instance_user_role');
  expect(String(err.message)).toMatch(/roles\/cloudsql\.instanceUser/);
});

describe('faults of the chain through MCP: a tool error, no hang', () => {
  beforeEach(async () => {
    testApp.app.callerLogins.forget({ tenantId: SANDBOX.tenantId, objectId: SANDBOX.readerObjectId });
    await testApp.app.callerPools.closeAll();
  });

  test('Entra OBO hanging: upstream_timeout within the upstream timeout', async () => {
    const hang = sb.entra.inject({ fault: { kind: 'hang' }, routes: ['token'] });
    const started = Date.now();
    try {
      const err = toolError(await callTool(tokens.ada, 'my-documents'));
      expect(err.code).toBe('upstream_timeout');
      expect(Date.now() - started).toBeLessThan(6000);
    } finally {
      hang();
    }
  });

  test("the MCP app's consent to the workforce app missing: consent_required", async () => {
    const client = sb.entra.oboClients.find((c) => c.appId === SANDBOX.mcp.appId.toLowerCase())!;
    const consented = client.consentedResources;
    client.consentedResources = [];
    try {
      const err = toolError(await callTool(tokens.ada, 'my-documents'));
      expect(err.code).toBe('caller_identity_refused');
      expect(err.refusal).toBe('consent_required');
    } finally {
      client.consentedResources = consented;
    }
  });

  test('Google STS refusing the attribute condition: attribute_condition', async () => {
    const off = sb.google.sts.inject({
      fault: { kind: 'status', status: 400, body: { error: 'unauthorized_client', error_description: 'x' } },
      routes: ['sts.token'],
    });
    try {
      const err = toolError(await callTool(tokens.ada, 'my-documents'));
      expect(err.code).toBe('caller_identity_refused');
      expect(err.refusal).toBe('attribute_condition');
    } finally {
      off();
    }
  });
});
