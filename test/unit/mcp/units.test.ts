import { agentOf, isAgentIdentity } from '../../../shared/auth/agent';
import { decodeMcpHeader } from '../../../shared/mcp/endpoint';
import type { Principal } from '../../../shared/auth/principal';
import { answerJson } from '../../../shared/mcp/server';
import { statelessResult } from '../../../shared/mcp/stateless-revision';
import { ToolCatalog, toolOf } from '../../../shared/mcp/tools';
import { parsePolicy } from '../../../shared/policy/load';
import { parseCatalog } from '../../../shared/query/catalog';
import { applyMasks, capBytes, exempt } from '../../../shared/query/result-controls';

/** The pure parts of the MCP endpoint and the result controls, without a sandbox. */

const TENANT = '72f988bf-0000-4000-8000-00000000c0de';

test('agent facets are a space-separated set: 11 anywhere counts, 111 or 1 do not', () => {
  expect(isAgentIdentity({ claims: { xms_act_fct: '3 9 11' } })).toBe(true);
  expect(isAgentIdentity({ claims: { xms_act_fct: '11' } })).toBe(true);
  expect(isAgentIdentity({ claims: { xms_act_fct: '111 1' } })).toBe(false);
  expect(isAgentIdentity({ claims: {} })).toBe(false);
  expect(agentOf({ appId: 'a', claims: { idtyp: 'app', xms_par_app_azp: 'b' } })).toEqual({
    appId: 'a',
    isAgentIdentity: false,
    idtyp: 'app',
    blueprintAppId: 'b',
  });
});

test('Mcp-Name values: plain, base64 sentinel decoded, invalid UTF-8 never equal', () => {
  expect(decodeMcpHeader('order-count')).toBe('order-count');
  expect(decodeMcpHeader(`=?base64?${Buffer.from('über').toString('base64')}?=`)).toBe('über');
  expect(decodeMcpHeader(`=?base64?${Buffer.from([0xff, 0xfe]).toString('base64')}?=`)).toBeUndefined();
});

const catalog = parseCatalog(
  JSON.stringify({
    version: 1,
    queries: [
      {
        name: 'q',
        instance: 'sandbox-project:europe-west1:orders-db',
        database: 'orders',
        sql: 'SELECT $1::uuid, $2::text',
        parameters: [
          { name: 'me', from: 'caller.oid' },
          { name: 'status', type: 'string', required: false, enum: ['open'] },
        ],
        masks: { a: { type: 'redact' }, b: { type: 'partial', keepLast: 2 }, c: { type: 'hash' } },
      },
    ],
  }),
);

test('a tool schema has the value parameters only, closed, and read-only annotations', () => {
  const t = toolOf(catalog.queries[0]!);
  expect(t.inputSchema).toEqual({
    type: 'object',
    properties: { status: { type: 'string', minLength: 0, maxLength: 256, enum: ['open'] } },
    required: [],
    additionalProperties: false,
  });
  expect(t.annotations).toMatchObject({ readOnlyHint: true, destructiveHint: false, openWorldHint: false });
});

test('masks: redact, partial keeps at most half, hash needs a 32-character key; exemptions by column or *', () => {
  const q = catalog.queries[0]!;
  const cols = [{ name: 'a' }, { name: 'b' }, { name: 'c' }];
  const key = 'k'.repeat(32);
  const { rows, masked } = applyMasks(q, cols, [['x', 'abc', 'v']], [], key);
  expect(rows[0]!.slice(0, 2)).toEqual([null, '**c']);
  expect(rows[0]![2]).toMatch(/^[0-9a-f]{64}$/);
  expect(masked).toEqual(['a', 'b', 'c']);
  expect(() => applyMasks(q, cols, [['x', 'y', 'z']], [], 'short')).toThrow(/QUERY_MASK_HASH_KEY/);
  expect(applyMasks(q, cols, [['x', 'y', 'z']], ['q.*'], undefined).masked).toEqual([]);
  expect(exempt(['q.b'], 'q', 'b')).toBe(true);
  expect(exempt(['q.b'], 'q', 'a')).toBe(false);
});

test('maxBytes keeps the leading rows whose JSON fits, never a partial row', () => {
  const rows = [['aaaa'], ['bbbb'], ['cccc']]; // each row is 8 bytes of JSON, the array 2 + commas
  expect(capBytes(rows, undefined)).toEqual({ rows, cut: false });
  expect(capBytes(rows, 28)).toEqual({ rows, cut: false });
  expect(capBytes(rows, 27)).toEqual({ rows: rows.slice(0, 2), cut: true });
  expect(capBytes(rows, 5)).toEqual({ rows: [], cut: true });
});

test('tools/list: the database-identity grant, decided once per instance and database in a listing, follows each query', () => {
  const base = { instance: 'sandbox-project:europe-west1:orders-db', sql: 'SELECT 1', parameters: [] };
  const cat = parseCatalog(
    JSON.stringify({
      version: 1,
      queries: [
        { ...base, name: 'b-other', database: 'other' },
        { ...base, name: 'a-orders', database: 'orders' },
        { ...base, name: 'c-other', database: 'other' },
        { ...base, name: 'd-orders', database: 'orders' },
      ],
    }),
  );
  const policy = parsePolicy(
    JSON.stringify({
      version: 1,
      deny: [],
      rules: [
        {
          id: 'r',
          subject: { tenantId: TENANT, roles: ['R'] },
          grants: {
            queries: ['a-orders', 'b-other', 'c-other', 'd-orders'],
            cloudsql: [
              {
                instance: 'sandbox-project:europe-west1:orders-db',
                databases: ['orders'],
                serviceAccount: 'reader@sandbox-project.iam.gserviceaccount.com',
                maxTtlSeconds: 900,
              },
            ],
          },
        },
      ],
    }),
  );
  const p: Principal = {
    tenantId: TENANT,
    objectId: '00000000-0000-4000-8000-000000000001',
    roles: ['R'],
    scopes: ['mcp.tools'],
    groups: [],
    audience: 'x',
    issuer: 'y',
    version: '2.0',
    expiresAt: 0,
  };
  const names = new ToolCatalog().list(cat, policy, p, 'mcp.tools').map((t) => t.name);
  expect(names).toEqual(['a-orders', 'd-orders', 'explain_access']);
});

test('a JSON-RPC answer is the text JSON.stringify makes of it; a listing splices memoized tool JSON in place', () => {
  const p = { tenantId: TENANT, objectId: 'o', roles: ['R'], scopes: ['mcp.tools'], groups: [] } as unknown as Principal;
  const policy = parsePolicy(
    JSON.stringify({
      version: 1,
      deny: [],
      rules: [
        {
          id: 'r',
          subject: { tenantId: TENANT, roles: ['R'] },
          grants: {
            queries: ['q'],
            cloudsql: [
              {
                instance: 'sandbox-project:europe-west1:orders-db',
                databases: ['orders'],
                serviceAccount: 'reader@sandbox-project.iam.gserviceaccount.com',
                maxTtlSeconds: 900,
              },
            ],
          },
        },
      ],
    }),
  );
  const tools = [
    ...new ToolCatalog().list(catalog, policy, p, 'mcp.tools'),
    { name: 'cosmos_x', description: 'a "quoted" \u2028 one' },
  ];
  expect(tools.map((t) => t.name)).toEqual(['q', 'explain_access', 'cosmos_x']);
  const list = { result: { tools }, jsonrpc: '2.0', id: 'a"b' };
  const cases: object[] = [
    list,
    statelessResult(list, 'tools/list', { name: 'n', version: 'v' }),
    { result: { tools: [] }, jsonrpc: '2.0', id: 7 },
    { result: { content: [{ type: 'text', text: '{"result":{"tools":"\u0000tools\u0000"' }] }, jsonrpc: '2.0', id: 1 },
    { result: { nextCursor: 'c', tools }, jsonrpc: '2.0', id: 2 },
    { jsonrpc: '2.0', id: 3, error: { code: -32602, message: 'Unknown tool' } },
  ];
  for (const m of cases) expect(answerJson(m)).toBe(JSON.stringify(m));
});
