import { agentOf, isAgentIdentity } from '../../../shared/auth/agent';
import { decodeMcpHeader } from '../../../shared/mcp/endpoint';
import { toolOf } from '../../../shared/mcp/tools';
import { parseCatalog } from '../../../shared/query/catalog';
import { applyMasks, capBytes, exempt } from '../../../shared/query/result-controls';

/** The pure parts of the MCP endpoint and the result controls, without a sandbox. */

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
