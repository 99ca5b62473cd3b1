import type { Principal } from '../../../shared/auth/principal';
import {
  buildCosmosQuery,
  cosmosToolDefinitions,
  cosmosToolNames,
  cosmosToolOf,
  explainCosmos,
  isCosmosToolName,
  listCosmosTools,
  parseCosmosArgs,
} from '../../../shared/mcp/cosmos-tools';
import { parsePolicy } from '../../../shared/policy/load';

/** The Cosmos tool model without a sandbox: names, schemas, listing, arguments, the query. */

const TID = '72f988bf-0000-4000-8000-00000000c0de';
const ADA = '0b5e0000-0000-4000-8000-00000000ead1';
const REF = { account: 'acct', database: 'app', container: 'profiles' };

function principal(roles: string[], oid = ADA): Principal {
  return {
    tenantId: TID,
    objectId: oid,
    appId: 'a9e70000-0000-4000-8000-0000000a9e71',
    roles,
    scopes: [],
    groups: [],
    audience: 'aud',
    issuer: `https://login.microsoftonline.com/${TID}/v2.0`,
    version: '2.0',
    expiresAt: 0,
    claims: {},
  };
}

function policy(grants: Record<string, unknown>[], extraRules: Record<string, unknown>[] = []) {
  return parsePolicy(
    JSON.stringify({
      version: 1,
      rules: [{ id: 'r', subject: { tenantId: TID, roles: ['R'] }, grants: { cosmos: grants } }, ...extraRules],
    }),
  );
}

const claimGrant = { ...REF, mode: 'all', partitionKey: { type: 'claim', claim: 'oid' }, maxTtlSeconds: 600 };

test('names: cosmos_read_/cosmos_query_<db>_<container>, valid MCP tool names or none', () => {
  expect(cosmosToolNames(REF)).toEqual({ read: 'cosmos_read_app_profiles', query: 'cosmos_query_app_profiles' });
  expect(cosmosToolNames({ database: 'a.b', container: 'c-d' })).toEqual({
    read: 'cosmos_read_a.b_c-d',
    query: 'cosmos_query_a.b_c-d',
  });
  expect(cosmosToolNames({ database: 'has space', container: 'c' })).toBeUndefined();
  expect(cosmosToolNames({ database: 'x'.repeat(100), container: 'y'.repeat(20) })).toBeUndefined(); // > 128
  expect(isCosmosToolName('cosmos_read_app_profiles')).toBe(true);
  expect(isCosmosToolName('order-count')).toBe(false);
});

test('definitions: strict 2020-12 input schemas, read-only annotations, filters only on declared fields, maxItems capped', () => {
  const [read, query] = cosmosToolDefinitions(REF, { fields: ['status'], maxItems: 500 }, 50)!;
  expect(read.inputSchema).toEqual({
    type: 'object',
    properties: { id: expect.objectContaining({ type: 'string', minLength: 1, maxLength: 255 }) },
    required: ['id'],
    additionalProperties: false,
  });
  expect(query.inputSchema).toMatchObject({
    additionalProperties: false,
    properties: {
      where: { type: 'object', additionalProperties: false, properties: { status: { type: ['string', 'number', 'boolean'] } } },
      maxItems: { type: 'integer', minimum: 1, maximum: 50 },
    },
  });
  for (const t of [read, query]) {
    expect(t.annotations).toMatchObject({ readOnlyHint: true, openWorldHint: false, destructiveHint: false });
    expect(t.inputSchema).not.toHaveProperty('$schema');
  }
  const [, plain] = cosmosToolDefinitions(REF, { maxItems: 5 }, 50)!;
  expect(plain.inputSchema.properties).toEqual({ maxItems: expect.objectContaining({ maximum: 5 }) });
});

test('listing: granted containers only, none without a bound partition, none when not exposed, ambiguous names dropped', () => {
  expect(listCosmosTools(policy([claimGrant]), principal(['R']), 50).map((t) => t.name)).toEqual([
    'cosmos_read_app_profiles',
    'cosmos_query_app_profiles',
  ]);
  expect(listCosmosTools(policy([claimGrant]), principal(['Other']), 50)).toEqual([]);
  // a whole-container grant without mcp.partitionKey binds no partition: no tools
  const whole = { ...REF, mode: 'read', partitionKey: { type: 'none' }, maxTtlSeconds: 600 };
  expect(listCosmosTools(policy([whole]), principal(['R']), 50)).toEqual([]);
  const bound = { ...whole, mcp: { partitionKey: { type: 'claim', claim: 'oid' } } };
  expect(listCosmosTools(policy([bound]), principal(['R']), 50)).toHaveLength(2);
  expect(listCosmosTools(policy([{ ...claimGrant, mcp: { expose: false } }]), principal(['R']), 50)).toEqual([]);
  // the same db/container in two accounts would share names: neither is offered, the name is unknown
  const twin = policy([claimGrant, { ...claimGrant, account: 'other' }]);
  expect(listCosmosTools(twin, principal(['R']), 50)).toEqual([]);
  expect(cosmosToolOf(twin, 'cosmos_read_app_profiles')).toBeUndefined();
  // the deny list wins
  const denied = parsePolicy(
    JSON.stringify({
      version: 1,
      deny: [{ tenantId: TID, objectId: ADA }],
      rules: [{ id: 'r', subject: { tenantId: TID, roles: ['R'] }, grants: { cosmos: [claimGrant] } }],
    }),
  );
  expect(listCosmosTools(denied, principal(['R']), 50)).toEqual([]);
});

test('explain: a granted container without a bound partition is named with the reason; ungranted ones are not', () => {
  const whole = { ...REF, mode: 'read', partitionKey: { type: 'none' }, maxTtlSeconds: 600 };
  const other = { ...claimGrant, container: 'secret' };
  const p = policy([whole], [{ id: 'o', subject: { tenantId: TID, roles: ['O'] }, grants: { cosmos: [other] } }]);
  expect(explainCosmos(p, principal(['R']))).toEqual([
    {
      container: 'acct/app/profiles',
      decision: 'deny',
      ruleId: 'r',
      reason: 'not_granted',
      detail: expect.stringMatching(/binds no partition/),
    },
  ]);
  expect(explainCosmos(policy([claimGrant]), principal(['R']))).toEqual([
    {
      container: 'acct/app/profiles',
      decision: 'grant',
      ruleId: 'r',
      tools: ['cosmos_read_app_profiles', 'cosmos_query_app_profiles'],
    },
  ]);
});

test('policy: mcp.partitionKey only where the grant binds no partition itself; fields are plain names', () => {
  expect(() => policy([{ ...claimGrant, mcp: { partitionKey: { type: 'fixed', value: 'x' } } }])).toThrow(/mcp\.partitionKey/);
  expect(() => policy([{ ...claimGrant, mcp: { fields: ['a.b'] } }])).toThrow(/property name/);
  expect(() => policy([{ ...claimGrant, mcp: { sql: 'SELECT 1' } }])).toThrow();
});

test('arguments: partition keys refused by name, unknown arguments and filters refused, maxItems bounded', () => {
  const spec = { fields: ['status'], maxItems: 10 };
  expect(parseCosmosArgs('read', { id: 'x' }, spec, 50)).toEqual({ kind: 'read', id: 'x' });
  for (const k of ['partitionKey', 'pk', 'partition_key'])
    expect(() => parseCosmosArgs('read', { id: 'x', [k]: 'y' }, spec, 50)).toThrow(
      expect.objectContaining({ detail: { parameter: k } }),
    );
  expect(() => parseCosmosArgs('read', { id: 'x', other: 1 }, spec, 50)).toThrow(/Unknown parameter "other"/);
  expect(() => parseCosmosArgs('read', { id: 'a#b' }, spec, 50)).toThrow(/item id/);
  expect(() => parseCosmosArgs('read', { id: 'x'.repeat(256) }, spec, 50)).toThrow(/item id/);
  expect(parseCosmosArgs('query', {}, spec, 50)).toEqual({ kind: 'query', where: [], maxItems: 10 });
  expect(parseCosmosArgs('query', { where: { status: 'open' }, maxItems: 3 }, spec, 50)).toEqual({
    kind: 'query',
    where: [{ field: 'status', value: 'open' }],
    maxItems: 3,
  });
  expect(() => parseCosmosArgs('query', { maxItems: 11 }, spec, 50)).toThrow(/from 1 to 10/);
  expect(() => parseCosmosArgs('query', { maxItems: 1.5 }, spec, 50)).toThrow(/maxItems/);
  expect(() => parseCosmosArgs('query', { where: { owner: 'x' } }, spec, 50)).toThrow(/Unknown filter field "owner"/);
  expect(() => parseCosmosArgs('query', { where: { status: { $ne: 1 } } }, spec, 50)).toThrow(/where\.status/);
  expect(() => parseCosmosArgs('query', { where: { status: 'x' } }, {}, 50)).toThrow(/Unknown parameter "where"/);
  expect(() => parseCosmosArgs('query', JSON.parse('{"__proto__":{"a":1}}'), spec, 50)).toThrow(/__proto__/);
});

test('the query: TOP and every value are parameters, field names only from the grant', () => {
  expect(buildCosmosQuery({ kind: 'query', where: [], maxItems: 5 })).toEqual({
    query: 'SELECT TOP @top * FROM c',
    parameters: [{ name: '@top', value: 6 }],
  });
  expect(
    buildCosmosQuery({
      kind: 'query',
      where: [
        { field: 'status', value: "x' OR 1=1 --" },
        { field: 'n', value: 2 },
      ],
      maxItems: 1,
    }),
  ).toEqual({
    query: 'SELECT TOP @top * FROM c WHERE c.status = @p0 AND c.n = @p1',
    parameters: [
      { name: '@top', value: 2 },
      { name: '@p0', value: "x' OR 1=1 --" },
      { name: '@p1', value: 2 },
    ],
  });
});
