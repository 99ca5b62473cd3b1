import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import type { Principal } from '../../../shared/auth/principal';
import { ServerPool, type McpRequestContext } from '../../../shared/mcp/server';
import { ToolCatalog } from '../../../shared/mcp/tools';
import type { QueryCall, QueryResult } from '../../../shared/query/run-catalogued';

/** The SDK servers of the MCP endpoint, reused across requests: one request at a time each, never a caller's answer to another. */

const HEADERS = {
  accept: 'application/json, text/event-stream',
  'content-type': 'application/json',
  'mcp-protocol-version': '2025-11-25',
};
const silent = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined };

/** A caller whose query answers its own object id, when `release` is called (so a test decides the order of answers). */
function caller(objectId: string) {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const calls: QueryCall[] = [];
  const ctx = {
    principal: {
      tenantId: 't',
      objectId,
      appId: `app-${objectId}`,
      scopes: ['mcp.tools'],
      roles: [],
      groups: [],
    } as unknown as Principal,
    scope: { correlationId: `corr-${objectId}`, log: silent, app: { settings: () => ({ cosmosMaxItems: 10 }) } },
    policy: { version: 1, deny: [], rules: [] },
    catalog: { queries: [] },
    requiredScope: 'mcp.tools',
    tools: new ToolCatalog(),
    runQuery: async (call: QueryCall): Promise<QueryResult> => {
      calls.push(call);
      await released;
      return { query: call.name, columns: [{ name: 'me', type: 'text' }], rows: [[objectId]], rowCount: 1, truncated: false };
    },
    action: 'mcp.tools/call',
    rawArguments: {},
  } as unknown as McpRequestContext;
  return { ctx, release, calls };
}

const request = () => new Request('http://127.0.0.1/api/mcp', { method: 'POST', headers: HEADERS });
const call = (id: number | string) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name: 'order-count', arguments: {} },
});
const settled = () => new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve)));

function rowsOf(answer: JSONRPCMessage | undefined): unknown {
  return (answer as { result?: { structuredContent?: { rows?: unknown } } } | undefined)?.result?.structuredContent?.rows;
}

test('concurrent tools/call with the same JSON-RPC id, answered in the reverse order: each caller gets its own rows', async () => {
  const pool = new ServerPool();
  const a = caller('alice');
  const b = caller('bob');
  const first = pool.dispatch(a.ctx, request(), call(1));
  const second = pool.dispatch(b.ctx, request(), call(1));
  await settled();
  expect(a.calls).toHaveLength(1);
  expect(b.calls).toHaveLength(1);
  expect(a.calls[0]!.subject.objectId).toBe('alice');
  expect(b.calls[0]!.subject.objectId).toBe('bob');
  b.release();
  const bob = await second;
  a.release();
  const alice = await first;
  expect(bob.answer).toMatchObject({ id: 1 });
  expect(rowsOf(bob.answer)).toEqual([['bob']]);
  expect(rowsOf(alice.answer)).toEqual([['alice']]);
  expect(alice.response.status).toBe(200);
  expect(bob.response.status).toBe(200);
  await settled();
  expect(pool.size).toBe(2);
});

test('sequential requests of different callers reuse one server, each answered from its own context', async () => {
  const pool = new ServerPool();
  for (const who of ['carol', 'dave', 'erin', 'carol']) {
    const c = caller(who);
    c.release();
    const { answer } = await pool.dispatch(c.ctx, request(), call(7));
    expect(rowsOf(answer)).toEqual([[who]]);
    expect(c.calls[0]!.subject.objectId).toBe(who);
    await settled();
    expect(pool.size).toBe(1);
  }
});

test('many concurrent callers: every answer is its caller, and the pool keeps at most its limit of idle servers', async () => {
  const pool = new ServerPool(4);
  const callers = Array.from({ length: 12 }, (_, i) => caller(`u${i}`));
  const pending = callers.map((c, i) => pool.dispatch(c.ctx, request(), call(i % 2 ? 'same' : 1)));
  await settled();
  for (const c of [...callers].reverse()) c.release();
  const answers = await Promise.all(pending);
  answers.forEach((a, i) => expect(rowsOf(a.answer)).toEqual([[`u${i}`]]));
  await settled();
  expect(pool.size).toBe(4);
});

test('a server that answered initialize (the SDK keeps the client capabilities on it) is not reused', async () => {
  const pool = new ServerPool();
  const c = caller('frank');
  const init = {
    jsonrpc: '2.0',
    id: 0,
    method: 'initialize',
    params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'c', version: '1' } },
  };
  const { answer } = await pool.dispatch(c.ctx, request(), init);
  expect(answer).toMatchObject({ id: 0, result: { protocolVersion: '2025-11-25' } });
  await settled();
  expect(pool.size).toBe(0);
});

test('a notification (202, no answer) and a transport refusal leave a reusable server; the stack limit is restored', async () => {
  const pool = new ServerPool();
  const c = caller('gina');
  const limit = Error.stackTraceLimit;
  const note = await pool.dispatch(c.ctx, request(), { jsonrpc: '2.0', method: 'notifications/initialized' });
  expect(note.response.status).toBe(202);
  expect(note.answer).toBeUndefined();
  await settled();
  expect(pool.size).toBe(1);
  const bad = await pool.dispatch(c.ctx, request(), { jsonrpc: '2.0', id: 1, method: 42 });
  expect(bad.response.status).toBe(400);
  expect(bad.answer).toBeUndefined();
  expect(Error.stackTraceLimit).toBe(limit);
  await settled();
  expect(pool.size).toBe(1);
  c.release();
  const { answer } = await pool.dispatch(c.ctx, request(), call(2));
  expect(rowsOf(answer)).toEqual([['gina']]);
});

test("a notifications/cancelled naming the id of another caller's request in flight does not abort it", async () => {
  const pool = new ServerPool();
  const victim = caller('hana');
  const pending = pool.dispatch(victim.ctx, request(), call(5));
  await settled();
  const other = caller('ivan');
  const cancel = { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 5, reason: 'x' } };
  expect((await pool.dispatch(other.ctx, request(), cancel)).response.status).toBe(202);
  await settled();
  victim.release();
  const { answer } = await pending;
  expect(rowsOf(answer)).toEqual([['hana']]);
});
