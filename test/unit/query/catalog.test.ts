import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ConfigError } from '../../../shared/errors';
import { parseCatalog, type CatalogQuery } from '../../../shared/query/catalog';
import { convertValue, typeName } from '../../../shared/query/convert';
import { bindParameters } from '../../../shared/query/params';
import { parsePolicy } from '../../../shared/policy/load';
import { BrokerError } from '../../../shared/errors';

const ROOT = resolve(__dirname, '..', '..', '..');
const INSTANCE = 'sandbox-project:europe-west1:orders-db';

function problems(doc: unknown): string[] {
  try {
    parseCatalog(JSON.stringify(doc), 'test');
  } catch (e) {
    if (e instanceof ConfigError) return [...e.problems];
    throw e;
  }
  return [];
}

const base = {
  name: 'q',
  instance: INSTANCE,
  database: 'orders',
  sql: 'SELECT $1::int AS x',
  parameters: [{ name: 'x', type: 'integer' }],
};

describe('catalog schema', () => {
  test('the sample catalog loads and names the queries the sample policy grants', () => {
    const cat = parseCatalog(readFileSync(resolve(ROOT, 'local/queries.json'), 'utf8'));
    const policy = parsePolicy(readFileSync(resolve(ROOT, 'local/sample-policy.json'), 'utf8'));
    const granted = new Set(policy.rules.flatMap((r) => r.grants.queries));
    expect(cat.queries.map((q) => q.name).sort()).toEqual([...granted].sort());
  });

  test('errors name the path of each bad entry, all at once', () => {
    const p = problems({
      version: 1,
      queries: [
        { ...base, instance: 'nope' },
        { ...base, name: 'Bad Name', sql: 'SELECT 1; DELETE FROM orders' },
        { ...base, parameters: [{ name: 'x', type: 'blob' }] },
        { ...base, sql: 'SELECT $2::int', name: 'q2' },
        { ...base, rowLimit: 0, name: 'q3', extra: true },
      ],
    });
    expect(p.some((m) => m.startsWith('queries[0].instance:'))).toBe(true);
    expect(p.some((m) => m.startsWith('queries[1].name:'))).toBe(true);
    expect(p.some((m) => m.startsWith('queries[1].sql:') && m.includes('single statement'))).toBe(true);
    expect(p.some((m) => m.startsWith('queries[2].parameters[0].type'))).toBe(true);
    expect(p.some((m) => m.startsWith('queries[3].sql:') && m.includes('$2'))).toBe(true);
    expect(p.some((m) => m.startsWith('queries[4].rowLimit:'))).toBe(true);
    expect(p.some((m) => m.startsWith('queries[4]') && m.includes('extra'))).toBe(true);
  });

  test('duplicate query names, unused and duplicate parameters are rejected', () => {
    expect(problems({ version: 1, queries: [base, base] }).some((m) => m.includes('duplicate query'))).toBe(true);
    expect(problems({ version: 1, queries: [{ ...base, sql: 'SELECT 1' }] }).some((m) => m.includes('not used'))).toBe(true);
    const dup = {
      ...base,
      sql: 'SELECT $1, $2',
      parameters: [
        { name: 'x', type: 'integer' },
        { name: 'x', type: 'string' },
      ],
    };
    expect(problems({ version: 1, queries: [dup] }).some((m) => m.includes('duplicate parameter'))).toBe(true);
    expect(
      problems({ version: 1, queries: [{ ...base, parameters: [{ name: 'x', type: 'string', pattern: '(' }] }] }).some((m) =>
        m.includes('regular expression'),
      ),
    ).toBe(true);
  });
});

describe('parameter binding', () => {
  const q = parseCatalog(
    JSON.stringify({
      version: 1,
      queries: [
        {
          ...base,
          sql: 'SELECT $1, $2, $3, $4, $5, $6',
          parameters: [
            { name: 'id', type: 'integer', min: 1, max: 10 },
            { name: 'code', type: 'string', required: false, pattern: '[A-Z]{2}', maxLength: 2 },
            { name: 'day', type: 'date', required: false },
            { name: 'at', type: 'timestamp', required: false },
            { name: 'flag', type: 'boolean', required: false },
            { name: 'ref', type: 'uuid', required: false },
          ],
        },
      ],
    }),
  ).queries[0] as CatalogQuery;
  const bad = (body: Record<string, unknown>): string => {
    try {
      bindParameters(q, body);
    } catch (e) {
      expect(e).toBeInstanceOf(BrokerError);
      expect((e as BrokerError).status).toBe(400);
      return String((e as BrokerError).detail?.parameter);
    }
    throw new Error('accepted');
  };

  test('good values bind to text in $n order; absent optionals are NULL', () => {
    expect(bindParameters(q, { id: 3, code: 'AB', day: '2024-02-29', flag: false })).toEqual([
      '3',
      'AB',
      '2024-02-29',
      null,
      'false',
      null,
    ]);
    expect(
      bindParameters(q, { id: '7', at: '2024-05-01T10:00:00.5+02:00', ref: 'AAAAAAAA-bbbb-4ccc-8ddd-eeeeeeeeeeee' }),
    ).toEqual(['7', null, null, '2024-05-01T10:00:00.5+02:00', null, 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee']);
  });

  test('bad values are 400 naming the parameter', () => {
    expect(bad({})).toBe('id');
    expect(bad({ id: null })).toBe('id');
    expect(bad({ id: 11 })).toBe('id');
    expect(bad({ id: 1.5 })).toBe('id');
    expect(bad({ id: '1e2' })).toBe('id');
    expect(bad({ id: 1, code: 'ab' })).toBe('code');
    expect(bad({ id: 1, code: 'ABC' })).toBe('code');
    expect(bad({ id: 1, code: 'A\0' })).toBe('code');
    expect(bad({ id: 1, code: '\uD800A' })).toBe('code');
    expect(bad({ id: 1, day: '2023-02-29' })).toBe('day');
    expect(bad({ id: 1, at: '2024-05-01 10:00:00' })).toBe('at');
    expect(bad({ id: 1, flag: 'true' })).toBe('flag');
    expect(bad({ id: 1, ref: 'not-a-uuid' })).toBe('ref');
    expect(bad({ id: 1, other: 1 })).toBe('other');
  });
});

describe('value conversion', () => {
  test('exact JSON: bigint/numeric as strings, ISO timestamps, parsed json', () => {
    expect(convertValue(20, '9007199254740993')).toBe('9007199254740993');
    expect(convertValue(1700, '1234.50')).toBe('1234.50');
    expect(convertValue(23, '42')).toBe(42);
    expect(convertValue(16, 't')).toBe(true);
    expect(convertValue(701, 'NaN')).toBe('NaN');
    expect(convertValue(1184, '2024-05-01 12:00:00.123456+02')).toBe('2024-05-01T10:00:00.123456Z');
    expect(convertValue(1184, '2024-05-01 12:00:00+05:30')).toBe('2024-05-01T06:30:00Z');
    expect(convertValue(1114, '2024-05-01 12:00:00')).toBe('2024-05-01T12:00:00');
    expect(convertValue(1082, '2024-05-01')).toBe('2024-05-01');
    expect(convertValue(3802, '{"a":[1,2]}')).toEqual({ a: [1, 2] });
    expect(convertValue(17, '\\x0102')).toBe('AQI=');
    expect(convertValue(25, null)).toBeNull();
    expect(typeName(20)).toBe('int8');
    expect(typeName(99999)).toBe('oid:99999');
  });
});
