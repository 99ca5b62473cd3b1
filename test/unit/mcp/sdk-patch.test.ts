import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import * as types from '@modelcontextprotocol/sdk/types.js';

/**
 * patches/@modelcontextprotocol+sdk+*.patch (applied by `npm install`'s postinstall): the SDK's message type guards
 * answer false before their zod parse when the member that decides them is missing or another literal (a failing parse
 * builds a ZodError nothing reads: ~0.4–0.5 ms of CPU per MCP request, bench/README.md (10)), and a closing protocol
 * builds its ConnectionClosed error only for the requests still waiting. The guards must still answer exactly what
 * their schemas answer, a waiting request must still fail with that error, and the patch must be in place.
 */

const GUARDS = [
  ['isJSONRPCRequest', types.JSONRPCRequestSchema],
  ['isJSONRPCNotification', types.JSONRPCNotificationSchema],
  ['isJSONRPCResultResponse', types.JSONRPCResultResponseSchema],
  ['isJSONRPCErrorResponse', types.JSONRPCErrorResponseSchema],
  ['isInitializeRequest', types.InitializeRequestSchema],
  ['isInitializedNotification', types.InitializedNotificationSchema],
] as const;

const init = {
  protocolVersion: '2025-11-25',
  capabilities: {},
  clientInfo: { name: 'c', version: '1' },
};
const MESSAGES: unknown[] = [
  null,
  undefined,
  0,
  'initialize',
  [],
  [{ jsonrpc: '2.0', id: 1, method: 'ping' }],
  {},
  { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'q', arguments: {} } },
  { jsonrpc: '2.0', id: 'a', method: 'tools/list' },
  { jsonrpc: '2.0', id: 1.5, method: 'ping' },
  { jsonrpc: '1.0', id: 1, method: 'ping' },
  { jsonrpc: '2.0', id: null, method: 'ping' },
  { jsonrpc: '2.0', id: undefined, method: 'ping' },
  { jsonrpc: '2.0', id: 1, method: 7 },
  { jsonrpc: '2.0', id: 1, method: 'ping', extra: true },
  { jsonrpc: '2.0', method: 'notifications/initialized' },
  { jsonrpc: '2.0', method: 'notifications/initialized', params: {} },
  { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 1 } },
  { jsonrpc: '2.0', id: 1, method: 'initialize', params: init },
  { jsonrpc: '2.0', id: 1, method: 'initialize', params: {} },
  { jsonrpc: '2.0', id: 1, method: 'initialize' },
  { jsonrpc: '2.0', method: 'initialize', params: init },
  { jsonrpc: '2.0', id: 1, result: {} },
  { jsonrpc: '2.0', id: 1, result: { content: [] } },
  { jsonrpc: '2.0', id: 1, result: null },
  { jsonrpc: '2.0', id: 1, result: undefined },
  { jsonrpc: '2.0', result: {} },
  { jsonrpc: '2.0', id: 1, result: {}, error: { code: 1, message: 'x' } },
  { jsonrpc: '2.0', id: 1, error: { code: -32601, message: 'Method not found' } },
  { jsonrpc: '2.0', error: { code: -32700, message: 'Parse error' } },
  { jsonrpc: '2.0', id: 1, error: { code: 'x', message: 'y' } },
  { jsonrpc: '2.0', id: 1, error: null },
  JSON.parse('{"jsonrpc":"2.0","id":1,"method":"ping","__proto__":{"result":{}}}'),
  Object.assign(Object.create({ method: 'initialize' }), { jsonrpc: '2.0', id: 1, params: init }),
];

describe('the patched SDK message guards', () => {
  test.each(GUARDS)('%s answers exactly what its schema answers', (name, schema) => {
    const guard = types[name] as (v: unknown) => boolean;
    for (const m of MESSAGES) expect([m, guard(m)]).toEqual([m, schema.safeParse(m).success]);
  });

  test('the patch is applied: a guard whose deciding member is missing does not parse', () => {
    const parse = jest.spyOn(types.JSONRPCResultResponseSchema, 'safeParse');
    const init = jest.spyOn(types.InitializeRequestSchema, 'safeParse');
    try {
      const request = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'q' } };
      expect(types.isJSONRPCResultResponse(request)).toBe(false);
      expect(types.isInitializeRequest(request)).toBe(false);
      expect(parse).not.toHaveBeenCalled();
      expect(init).not.toHaveBeenCalled();
      expect(types.isJSONRPCResultResponse({ jsonrpc: '2.0', id: 1, result: {} })).toBe(true);
      expect(parse).toHaveBeenCalledTimes(1);
    } finally {
      parse.mockRestore();
      init.mockRestore();
    }
  });
});

describe('the patched SDK close', () => {
  test('a request still waiting when its connection closes fails with ConnectionClosed', async () => {
    const server = new Server({ name: 's', version: '1' }, { capabilities: { tools: {} } });
    server.setRequestHandler(types.ListToolsRequestSchema, () => new Promise<never>(() => undefined)); // never answers
    const client = new Client({ name: 'c', version: '1' });
    const [a, b] = InMemoryTransport.createLinkedPair();
    await Promise.all([server.connect(b), client.connect(a)]);
    const waiting = client.listTools();
    await new Promise((r) => setImmediate(r));
    await client.close();
    await expect(waiting).rejects.toMatchObject({
      code: types.ErrorCode.ConnectionClosed,
      message: expect.stringContaining('Connection closed'),
    });
    await server.close();
  });
});
