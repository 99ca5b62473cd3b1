import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { SANDBOX } from '../../../local/ids';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { TestApp } from '../../helpers/app';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { workerHost } from '../../helpers/loopback';

/**
 * The MCP endpoint's trace context from `params._meta` and the stateless revision 2026-07-28 (issue #24): raw
 * JSON-RPC POSTs into the real handler, real Entra emulator v2.0 tokens, the sample catalog plus a probe that
 * returns what PostgreSQL sees of the trace, against real PostgreSQL.
 */

const testApp = new TestApp();
const handler = testApp.handler('mcp');
const HOST = workerHost(90);
const ROOT = resolve(__dirname, '..', '..', '..');
const MCP_URL = SANDBOX.mcp.resourceUrl;
jest.setTimeout(60_000);

let sb: Sandbox;
let dir: string;
let restoreEnv: () => void;
let token: string;
const logs = captureLogs();

const PROBE = {
  name: 'whoami-trace',
  description: 'What the database sees of the trace.',
  instance: 'sandbox-project:europe-west1:orders-db',
  database: 'orders',
  sql: "SELECT current_setting('broker.traceparent', true) AS traceparent, current_setting('broker.correlation_id', true) AS correlation_id",
  rowLimit: 1,
  timeoutMs: 2000,
};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mcp-stateless-'));
  const catalog = JSON.parse(readFileSync(resolve(ROOT, 'local/queries.json'), 'utf8')) as { queries: unknown[] };
  catalog.queries.push(PROBE);
  writeFileSync(join(dir, 'queries.json'), JSON.stringify(catalog));
  const policy = JSON.parse(readFileSync(resolve(ROOT, 'local/sample-policy.json'), 'utf8')) as {
    rules: { id: string; grants: { queries: string[] } }[];
  };
  for (const r of policy.rules) if (r.id === 'orders-readers') r.grants.queries.push(PROBE.name);
  writeFileSync(join(dir, 'policy.json'), JSON.stringify(policy));
  sb = await startSandbox({
    cloudSql: { host: HOST },
    env: { QUERY_CATALOG_PATH: join(dir, 'queries.json'), BROKER_POLICY_PATH: join(dir, 'policy.json') },
  });
  restoreEnv = sb.applyEnv();
  token = await sb.entra.mint({
    resource: SANDBOX.mcp.appIdUri,
    appId: SANDBOX.mcp.agentHostAppId,
    scp: SANDBOX.mcp.scope,
    oid: SANDBOX.readerObjectId,
    roles: ['Orders.Read'],
  });
});

afterAll(async () => {
  logs.restore();
  await testApp.app.close();
  restoreEnv?.();
  await sb?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function post(body: unknown, headers: Record<string, string> = {}): Promise<Result> {
  return invoke(handler, {
    url: MCP_URL,
    headers: {
      accept: 'application/json, text/event-stream',
      'content-type': 'application/json',
      authorization: `Bearer ${token}`,
      ...headers,
    },
    body,
  });
}

type ToolResult = { isError?: boolean; structuredContent?: { rows: unknown[][] }; content: { text: string }[] };

/** The request line of the request answered with `correlationId`. */
const requestLine = (correlationId: string) => logs.records.find((r) => r.msg === 'request' && r.correlationId === correlationId);

describe('trace context from params._meta', () => {
  const META_TRACE = '0af7651916cd43dd8448eb211c80319c';
  const HTTP_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
  const call = (meta: Record<string, unknown>) => ({
    jsonrpc: '2.0',
    id: 3,
    method: 'tools/call',
    params: { name: PROBE.name, arguments: {}, _meta: meta },
  });

  test('a valid _meta.traceparent is the trace of the call: log lines, audit, PostgreSQL, the returned traceparent; it wins over the header', async () => {
    const r = await post(call({ traceparent: `00-${META_TRACE}-00f067aa0ba902b7-01` }), {
      'mcp-protocol-version': '2025-11-25',
      traceparent: `00-${HTTP_TRACE}-b7ad6b7169203331-01`,
    });
    expect(r.status).toBe(200);
    const result = r.json.result as ToolResult;
    expect(result.isError).toBeFalsy();
    const [pgTraceparent, pgCorrelationId] = result.structuredContent!.rows[0] as [string, string];
    expect(pgTraceparent).toMatch(new RegExp(`^00-${META_TRACE}-[0-9a-f]{16}-01$`));
    expect(pgTraceparent.split('-')[2]).not.toBe('00f067aa0ba902b7'); // the broker's own span, the caller's as parent
    expect(pgCorrelationId).toBe(META_TRACE);
    expect(r.headers.get('x-correlation-id')).toBe(META_TRACE);
    expect(r.headers.get('traceparent')).toBe(pgTraceparent);
    expect(requestLine(META_TRACE)).toMatchObject({ status: 200, httpTraceId: HTTP_TRACE });
    const audit = logs.records.filter((x) => x.event === 'audit' && x.target === `query://${PROBE.name}`).pop()!;
    expect(audit).toMatchObject({ decision: 'grant', correlationId: META_TRACE, traceId: META_TRACE });
  });

  test('a malformed _meta.traceparent is ignored as an invalid header is: the header trace (or a new one) stays', async () => {
    for (const bad of ['00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7', 'ff-' + META_TRACE + '-00f067aa0ba902b7-01', 42]) {
      const r = await post(call({ traceparent: bad }), {
        'mcp-protocol-version': '2025-11-25',
        traceparent: `00-${HTTP_TRACE}-b7ad6b7169203331-01`,
      });
      const [pgTraceparent, pgCorrelationId] = (r.json.result as ToolResult).structuredContent!.rows[0] as [string, string];
      expect(pgTraceparent).toMatch(new RegExp(`^00-${HTTP_TRACE}-`));
      expect(pgCorrelationId).toBe(HTTP_TRACE);
      expect(r.headers.get('traceparent')).toBe(pgTraceparent);
    }
    const none = await post(call({ traceparent: `00-${'0'.repeat(32)}-00f067aa0ba902b7-01` }), {
      'mcp-protocol-version': '2025-11-25',
    });
    const [tp] = (none.json.result as ToolResult).structuredContent!.rows[0] as [string];
    expect(tp).not.toContain('0'.repeat(32));
    expect(tp.split('-')[1]).toBe(none.headers.get('x-correlation-id'));
  });

  test('an x-correlation-id the caller sent stays the correlation id; the trace is still the _meta one', async () => {
    const r = await post(call({ traceparent: `00-${META_TRACE}-00f067aa0ba902b7-00` }), {
      'mcp-protocol-version': '2025-06-18',
      'x-correlation-id': 'caller-chosen-id-1',
    });
    const [tp, cid] = (r.json.result as ToolResult).structuredContent!.rows[0] as [string, string];
    expect(tp).toMatch(new RegExp(`^00-${META_TRACE}-[0-9a-f]{16}-00$`));
    expect(cid).toBe('caller-chosen-id-1');
  });
});

describe('the stateless revision 2026-07-28', () => {
  const V = '2026-07-28';
  const META = {
    'io.modelcontextprotocol/protocolVersion': V,
    'io.modelcontextprotocol/clientInfo': { name: 'e2e', version: '1.0.0' },
    'io.modelcontextprotocol/clientCapabilities': {},
  };
  const request = (method: string, params: Record<string, unknown> = {}, meta: Record<string, unknown> = META) => ({
    jsonrpc: '2.0',
    id: 'r1',
    method,
    params: { ...params, _meta: meta },
  });
  const headers = (method: string, name?: string) => ({
    'mcp-protocol-version': V,
    'mcp-method': method,
    ...(name !== undefined ? { 'mcp-name': name } : {}),
  });

  test('server/discover: supported versions, capabilities, serverInfo, instructions, caching hints (DiscoverResult)', async () => {
    const r = await post(request('server/discover'), headers('server/discover'));
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ jsonrpc: '2.0', id: 'r1' });
    expect(r.json.result).toEqual({
      resultType: 'complete',
      supportedVersions: [V, '2025-11-25', '2025-06-18'],
      capabilities: { tools: { listChanged: false } },
      instructions: expect.stringContaining('catalogued read-only queries') as unknown,
      ttlMs: 300_000,
      cacheScope: 'public',
      _meta: { 'io.modelcontextprotocol/serverInfo': { name: 'token-broker', version: expect.any(String) as unknown } },
    });
  });

  test('without initialize: tools/list and tools/call answer with resultType, caching hints on the list, serverInfo', async () => {
    const list = await post(request('tools/list'), headers('tools/list'));
    expect(list.status).toBe(200);
    const lr = list.json.result as { tools: { name: string }[]; resultType: string; ttlMs: number; cacheScope: string };
    expect(lr).toMatchObject({ resultType: 'complete', ttlMs: 0, cacheScope: 'private' });
    expect(lr.tools.map((t) => t.name)).toEqual(expect.arrayContaining(['order-count', PROBE.name, 'explain_access']));
    const call = await post(request('tools/call', { name: 'order-count', arguments: {} }), headers('tools/call', 'order-count'));
    expect(call.status).toBe(200);
    const cr = call.json.result as ToolResult & { resultType: string; _meta: Record<string, unknown> };
    expect(cr.isError).toBeFalsy();
    expect(cr.resultType).toBe('complete');
    expect(cr._meta['io.modelcontextprotocol/serverInfo']).toMatchObject({ name: 'token-broker' });
    expect(cr.structuredContent!.rows.length).toBeGreaterThan(0);
    // a tool error is a complete result too
    const bad = await post(
      request('tools/call', { name: 'order-count', arguments: { since: 'x' } }),
      headers('tools/call', 'order-count'),
    );
    expect(bad.json.result).toMatchObject({ isError: true, resultType: 'complete' });
  });

  test('the required headers: Mcp-Method always, Mcp-Name for tools/call, both agreeing with the body (400 -32020)', async () => {
    const cases: [Record<string, string>, string][] = [
      [{ 'mcp-protocol-version': V }, 'Mcp-Method header is required'],
      [{ 'mcp-protocol-version': V, 'mcp-method': 'tools/call' }, 'Mcp-Name header is required'],
      [headers('tools/list', 'order-count'), 'Mcp-Method header value does not match'],
      [headers('tools/call', 'orders-by-customer'), 'Mcp-Name header value does not match'],
    ];
    for (const [h, message] of cases) {
      const r = await post(request('tools/call', { name: 'order-count', arguments: {} }), h);
      expect(r.status).toBe(400);
      expect(r.json).toMatchObject({ id: 'r1', error: { code: -32020 } });
      expect((r.json.error as { message: string }).message).toContain(message);
    }
    const b64 = `=?base64?${Buffer.from('order-count').toString('base64')}?=`;
    const ok = await post(request('tools/call', { name: 'order-count', arguments: {} }), headers('tools/call', b64));
    expect(ok.status).toBe(200);
  });

  test('the version in _meta must be the header one (400 -32020), in any revision', async () => {
    const other = await post(request('tools/list'), { ...headers('tools/list'), 'mcp-protocol-version': '2025-11-25' });
    expect(other.status).toBe(400);
    expect(other.json.error).toMatchObject({ code: -32020 });
    const missing = await post(request('tools/list'), { 'mcp-method': 'tools/list' });
    expect(missing.status).toBe(400);
    expect(missing.json.error).toMatchObject({ code: -32020 });
  });

  test('_meta without the protocol version or the client capabilities: 400 -32602', async () => {
    for (const meta of [
      { 'io.modelcontextprotocol/clientCapabilities': {} },
      { 'io.modelcontextprotocol/protocolVersion': V },
      { 'io.modelcontextprotocol/protocolVersion': V, 'io.modelcontextprotocol/clientCapabilities': [] },
    ]) {
      const r = await post(request('tools/list', {}, meta), headers('tools/list'));
      expect(r.status).toBe(400);
      expect(r.json).toMatchObject({ id: 'r1', error: { code: -32602 } });
    }
    const noMeta = await post({ jsonrpc: '2.0', id: 2, method: 'tools/list' }, headers('tools/list'));
    expect(noMeta.status).toBe(400);
    expect(noMeta.json.error).toMatchObject({ code: -32602 });
  });

  test('a method this server does not implement in 2026-07-28 (initialize, ping, prompts/list): 404 -32601', async () => {
    for (const m of ['initialize', 'ping', 'prompts/list']) {
      const r = await post(request(m), headers(m));
      expect(r.status).toBe(404);
      expect(r.json).toMatchObject({ id: 'r1', error: { code: -32601 } });
    }
  });

  test('server/discover is a 2026-07-28 method: in 2025-11-25 it is unknown (-32601)', async () => {
    const r = await post({ jsonrpc: '2.0', id: 1, method: 'server/discover' }, { 'mcp-protocol-version': '2025-11-25' });
    expect(r.status).toBe(200);
    expect(r.json.error).toMatchObject({ code: -32601 });
  });

  test('an unsupported version names the three supported ones (400 -32022)', async () => {
    const r = await post(request('tools/list'), { ...headers('tools/list'), 'mcp-protocol-version': '2027-01-01' });
    expect(r.status).toBe(400);
    expect(r.json.error).toMatchObject({
      code: -32022,
      data: { supported: [V, '2025-11-25', '2025-06-18'], requested: '2027-01-01' },
    });
  });

  test('a 2026-07-28 call still needs the token: 401 with the resource metadata challenge', async () => {
    const r = await invoke(handler, {
      url: MCP_URL,
      headers: {
        accept: 'application/json, text/event-stream',
        'content-type': 'application/json',
        ...headers('server/discover'),
      },
      body: request('server/discover'),
    });
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toContain('resource_metadata=');
  });
});
