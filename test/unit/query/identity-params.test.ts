import { ConfigError } from '../../../shared/errors';
import { parseCatalog } from '../../../shared/query/catalog';
import { bindParameters, parameterNames } from '../../../shared/query/params';
import { sqlComment, withComment } from '../../../shared/query/sql-comment';
import { applicationNameFor, preamble } from '../../../shared/query/session-identity';
import { parseTraceparent, traceContextOf } from '../../../shared/http/trace-context';
import { BrokerError } from '../../../shared/errors';

const INSTANCE = 'sandbox-project:europe-west1:orders-db';
const q = (parameters: unknown[], sql = `SELECT ${parameters.map((_, i) => `$${i + 1}`).join(', ')}`) => ({
  name: 'q',
  instance: INSTANCE,
  database: 'orders',
  sql,
  parameters,
});

function problems(query: unknown): string[] {
  try {
    parseCatalog(JSON.stringify({ version: 1, queries: [query] }), 'test');
  } catch (e) {
    if (e instanceof ConfigError) return [...e.problems];
    throw e;
  }
  return [];
}

const caller = {
  tenantId: '72f988bf-0000-4000-8000-00000000c0de',
  objectId: '0b5e0000-0000-4000-8000-00000000ead1',
  appId: 'app-1',
  claims: { preferred_username: 'ada@example.com' },
};

describe('identity-bound catalog parameters', () => {
  test('from caller.oid / caller.tid / caller.appId / claim load; the type is implied', () => {
    const cat = parseCatalog(
      JSON.stringify({
        version: 1,
        queries: [
          q([
            { name: 'oid', from: 'caller.oid' },
            { name: 'tid', from: 'caller.tid' },
            { name: 'app', from: 'caller.appId' },
            { name: 'upn', from: 'claim', claim: 'preferred_username' },
            { name: 'status', type: 'string', required: false },
          ]),
        ],
      }),
    );
    const params = cat.queries[0]!.parameters;
    expect(params.map((p) => p.type)).toEqual(['caller', 'caller', 'caller', 'caller', 'string']);
    expect(bindParameters(cat.queries[0]!, { status: 'open' }, caller)).toEqual([
      caller.objectId,
      caller.tenantId,
      'app-1',
      'ada@example.com',
      'open',
    ]);
    expect(parameterNames(cat.queries[0]!, { status: 'open' })).toEqual({
      given: ['status'],
      identityBound: ['oid', 'tid', 'app', 'upn'],
    });
  });

  test.each([
    [{ name: 'o', from: 'caller.name' }, 'queries[0].parameters[0].from'],
    [{ name: 'o', from: 'claim' }, 'queries[0].parameters[0].claim'],
    [{ name: 'o', from: 'caller.oid', claim: 'upn' }, 'queries[0].parameters[0].claim'],
    [{ name: 'o', from: 'claim', claim: 'exp' }, 'queries[0].parameters[0].claim'],
    [{ name: 'o', type: 'integer', from: 'caller.oid' }, 'queries[0].parameters[0]'],
    [{ name: 'o', from: 'caller.oid', min: 1 }, 'queries[0].parameters[0]'],
  ])('a bad identity parameter %j is a config error naming %s', (param, path) => {
    const p = problems(q([param]));
    expect(p.length).toBeGreaterThan(0);
    expect(p.some((m) => m.startsWith(path))).toBe(true);
  });

  test('SQL holding a comment of its own is refused (the broker appends the sqlcommenter tag)', () => {
    expect(
      problems(q([{ name: 'o', from: 'caller.oid' }], 'SELECT $1 -- owner')).some(
        (m) => m.startsWith('queries[0].sql:') && m.includes('comment'),
      ),
    ).toBe(true);
    expect(problems(q([], 'SELECT 1 /* x */')).some((m) => m.startsWith('queries[0].sql:'))).toBe(true);
  });

  test('the caller can never supply or override an identity-bound parameter, whatever the value', () => {
    const query = parseCatalog(JSON.stringify({ version: 1, queries: [q([{ name: 'ownerOid', from: 'caller.oid' }])] }))
      .queries[0]!;
    for (const v of [caller.objectId, 'someone-else', null, 1, '']) {
      try {
        bindParameters(query, { ownerOid: v }, caller);
        throw new Error('bound');
      } catch (e) {
        expect(e).toBeInstanceOf(BrokerError);
        expect((e as BrokerError).code).toBe('invalid_parameter');
        expect((e as BrokerError).detail?.parameter).toBe('ownerOid');
      }
    }
  });

  test('a required claim the token does not carry is 403 not_granted; optional binds NULL', () => {
    const cat = parseCatalog(
      JSON.stringify({
        version: 1,
        queries: [
          q([{ name: 'upn', from: 'claim', claim: 'upn' }]),
          { ...q([{ name: 'upn', from: 'claim', claim: 'upn', required: false }]), name: 'q2' },
        ],
      }),
    );
    expect(() => bindParameters(cat.queries[0]!, {}, caller)).toThrow(expect.objectContaining({ code: 'not_granted' }));
    expect(() => bindParameters(cat.queries[0]!, {}, undefined)).toThrow(expect.objectContaining({ code: 'not_granted' }));
    expect(bindParameters(cat.queries[1]!, {}, caller)).toEqual([null]);
  });
});

describe('sqlcommenter comment', () => {
  test('keys sorted, values URL-encoded then quote-escaped, in single quotes', () => {
    expect(
      sqlComment({
        traceparent: '00-5bd66ef5095369c7b0d1f8f4bd33716a-c532cb4098ac3dd2-01',
        rule: 'orders-readers',
        correlation_id: 'abc:1',
      }),
    ).toBe(
      "/*correlation_id='abc%3A1',rule='orders-readers',traceparent='00-5bd66ef5095369c7b0d1f8f4bd33716a-c532cb4098ac3dd2-01'*/",
    );
    // the spec's own example value: /param*d → %2Fparam*d; a quote is escaped after encoding
    expect(sqlComment({ action: '/param*d', 'route parameter': "it's" })).toBe(
      "/*action='%2Fparam*d',route%20parameter='it\\'s'*/",
    );
    expect(sqlComment({ a: undefined })).toBe('');
  });

  test('no value can close the comment or end the statement', () => {
    const c = sqlComment({ rule: "x*/; DROP TABLE orders; --'", correlation_id: '/*' });
    expect(c.slice(2, -2)).not.toMatch(/\*\/|\/\*/); // `--` and `;` inside a block comment are inert
    expect(withComment('SELECT 1;  ', c)).toBe(`SELECT 1 ${c}`);
  });
});

describe('session preamble', () => {
  test('every value is a bound parameter; the SQL text carries none of them', () => {
    const id = {
      callerOid: "o'; DROP",
      callerTid: 't',
      callerAppId: undefined,
      ruleId: 'r',
      correlationId: 'c',
      applicationName: 'a',
      statementTimeoutMs: 2000,
    };
    const p = preamble(id, '');
    expect(p.begin).toBe('BEGIN READ ONLY');
    expect(p.settings).not.toContain('DROP');
    expect(p.settings).toMatch(/set_config\('broker\.caller_oid', \$3, true\)/);
    expect(p.values).toEqual(['2000', 'a', "o'; DROP", 't', '', 'r', 'c', 'entra', '', '', '']);
  });

  test('application_name is printable ASCII of at most 63 bytes', () => {
    const n = applicationNameFor('orders-by-customer', 'x'.repeat(128));
    expect(n.length).toBe(63);
    expect(applicationNameFor('q', 'é')).toBe('token-broker/q/?');
  });
});

describe('W3C traceparent', () => {
  const valid = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  test('a valid traceparent is continued with a new span id', () => {
    const t = traceContextOf(valid);
    expect(t.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(t.parentId).toBe('00f067aa0ba902b7');
    expect(t.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(t.spanId).not.toBe('00f067aa0ba902b7');
    expect(t.traceparent).toBe(`00-${t.traceId}-${t.spanId}-01`);
    expect(t.propagated).toBe(true);
  });

  test.each([
    'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
    '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
    '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01',
    '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra',
    '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01',
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'",
    '',
  ])('invalid %p starts a new trace', (h) => {
    expect(parseTraceparent(h)).toBeUndefined();
    const t = traceContextOf(h);
    expect(t.propagated).toBe(false);
    expect(t.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  });

  test('a future version with extra fields is accepted (forward compatible)', () => {
    expect(parseTraceparent('01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever')?.traceId).toBe(
      '4bf92f3577b34da6a3ce929d0e0e4736',
    );
  });
});
