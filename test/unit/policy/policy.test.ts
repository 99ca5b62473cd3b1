import { ConfigError } from '../../../shared/errors';
import { parsePolicy } from '../../../shared/policy/load';
import { evaluate, explainDecision } from '../../../shared/policy/evaluate';
import { parseTarget, formatTarget } from '../../../shared/policy/target';
import type { Principal } from '../../../shared/auth/principal';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const TID = '72f988bf-0000-4000-8000-00000000c0de';
const OID = '0b5e0000-0000-4000-8000-00000000ead1';

function principal(over: Partial<Principal> = {}): Principal {
  return {
    tenantId: TID,
    objectId: OID,
    appId: 'aaaaaaaa-0000-4000-8000-000000000001',
    roles: ['Orders.Read'],
    scopes: [],
    groups: [],
    audience: 'api://orders-api',
    issuer: `https://login.microsoftonline.com/${TID}/v2.0`,
    version: '2.0',
    expiresAt: 0,
    ...over,
  };
}

const samplePolicy = () => parsePolicy(readFileSync(join(__dirname, '..', '..', '..', 'local', 'sample-policy.json'), 'utf8'));

function problemsOf(doc: unknown): string[] {
  try {
    parsePolicy(JSON.stringify(doc));
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return [...(e as ConfigError).problems];
  }
  throw new Error('expected the policy to be rejected');
}

describe('policy schema', () => {
  test('the sample policy is valid', () => {
    expect(samplePolicy().rules.map((r) => r.id)).toEqual([
      'orders-readers',
      'orders-analysts',
      'ticket-owners',
      'people',
      'sandbox-partner-certificates',
    ]);
  });

  test('errors name the path of every bad entry', () => {
    const problems = problemsOf({
      version: 1,
      rules: [
        { id: 'ok', subject: { tenantId: TID, roles: ['A'] }, grants: {} },
        {
          id: 'bad',
          subject: { tenantId: 'not-a-guid', roles: ['A'] },
          grants: {
            cloudsql: [{ instance: 'nope', databases: [], serviceAccount: 'x@y', maxTtlSeconds: 99999 }],
            cosmos: [
              {
                account: 'a',
                database: 'd',
                container: 'c',
                mode: 'write',
                partitionKey: { type: 'claim', claim: 'email' },
                maxTtlSeconds: 10,
              },
            ],
          },
        },
      ],
    });
    const text = problems.join('\n');
    expect(text).toContain('rules[1].subject.tenantId');
    expect(text).toContain('rules[1].grants.cloudsql[0].instance');
    expect(text).toContain('rules[1].grants.cloudsql[0].databases');
    expect(text).toContain('rules[1].grants.cloudsql[0].serviceAccount');
    expect(text).toContain('rules[1].grants.cloudsql[0].maxTtlSeconds');
    expect(text).toContain('rules[1].grants.cosmos[0].mode');
    expect(text).toContain('rules[1].grants.cosmos[0].partitionKey');
    expect(text).not.toContain('rules[0]');
  });

  test('a rule with a tenant but no subject category is refused (a tenant alone grants nothing)', () => {
    const problems = problemsOf({ version: 1, rules: [{ id: 'r', subject: { tenantId: TID }, grants: {} }] });
    expect(problems.join()).toMatch(/rules\[0\]\.subject: must list at least one/);
  });

  test('unknown keys and a wrong version are refused', () => {
    const text = problemsOf({
      version: 2,
      rules: [{ id: 'r', subject: { tenantId: TID, roles: ['A'] }, grants: {}, extra: true }],
    }).join('\n');
    expect(text).toContain('version');
    expect(text).toMatch(/rules\[0\].*extra/);
  });

  test('duplicate rule ids are refused', () => {
    const text = problemsOf({
      version: 1,
      rules: [
        { id: 'r', subject: { tenantId: TID, roles: ['A'] }, grants: {} },
        { id: 'r', subject: { tenantId: TID, roles: ['A'] }, grants: {} },
      ],
    }).join('\n');
    expect(text).toContain('rules[1].id: duplicate rule id "r"');
  });

  test('invalid JSON is a ConfigError, not a crash', () => {
    expect(() => parsePolicy('{ nope')).toThrow(ConfigError);
  });
});

describe('targets', () => {
  test.each([
    ['cloudsql://sandbox-project/europe-west1/orders-db/orders', 'cloudsql'],
    ['cosmos://sandbox-cosmos/app/profiles', 'cosmos'],
    ['cosmos://sandbox-cosmos/app/profiles?mode=read&partitionKey=abc', 'cosmos'],
    ['query://orders-by-customer', 'query'],
  ])('%s parses and round-trips', (uri, kind) => {
    const t = parseTarget(uri);
    expect(t.kind).toBe(kind);
    expect(formatTarget(t)).toBe(uri);
  });

  test.each([
    'https://example.com/x',
    'cloudsql://sandbox-project/europe-west1/orders-db',
    'cloudsql://sandbox-project/europe-west1/orders-db/orders/extra',
    'cloudsql://PROJECT/europe-west1/orders-db/orders',
    'cloudsql://sandbox-project/europe-west1/orders-db/orders?x=1',
    'cloudsql://user:pw@sandbox-project/europe-west1/orders-db/orders',
    'cosmos://sandbox-cosmos/app/profiles?mode=write',
    'cosmos://sandbox-cosmos/app/profiles?mode=read&mode=all',
    'cosmos://sandbox-cosmos/app',
    'query://Bad Name',
    'not a uri',
    'cloudsql://' + 'a'.repeat(3000),
  ])('%s is an invalid_target', (uri) => {
    expect(() => parseTarget(uri)).toThrow(expect.objectContaining({ code: 'invalid_target' }));
  });
});

describe('evaluate: deny by default, first matching rule wins, narrowing only', () => {
  const policy = samplePolicy();
  const sql = parseTarget('cloudsql://sandbox-project/europe-west1/orders-db/orders');

  test('a reader gets the reader service account with the rule cap', () => {
    const d = evaluate(policy, principal(), sql);
    expect(d).toMatchObject({
      decision: 'grant',
      ruleId: 'orders-readers',
      grant: { serviceAccount: 'orders-reader@sandbox-project.iam.gserviceaccount.com', maxTtlSeconds: 900 },
    });
  });

  test('an analyst gets the analyst service account', () => {
    const d = evaluate(policy, principal({ roles: ['Orders.Analyst'] }), sql);
    expect(d).toMatchObject({
      decision: 'grant',
      ruleId: 'orders-analysts',
      grant: { serviceAccount: 'orders-analyst@sandbox-project.iam.gserviceaccount.com' },
    });
  });

  test('no role, other tenant, other database: denied with a trace', () => {
    expect(evaluate(policy, principal({ roles: [] }), sql)).toMatchObject({
      decision: 'deny',
      code: 'not_granted',
      reason: 'No rule matches the caller.',
    });
    expect(evaluate(policy, principal({ tenantId: '00000000-0000-4000-8000-000000000001' }), sql).decision).toBe('deny');
    const other = explainDecision(policy, principal(), parseTarget('cloudsql://sandbox-project/europe-west1/orders-db/payroll'));
    expect(other).toMatchObject({ decision: 'deny', code: 'not_granted' });
    expect(other.trace[0]).toMatchObject({ ruleId: 'orders-readers', subjectMatched: true, targetMatched: false });
  });

  test('evaluate decides exactly as explainDecision, which alone builds the "why not" texts', () => {
    const denyListed = parsePolicy(JSON.stringify({ ...policy, deny: [{ tenantId: TID, objectId: OID }] }));
    const targets = [
      sql,
      parseTarget('cloudsql://sandbox-project/europe-west1/orders-db/payroll'),
      parseTarget('cloudsql://sandbox-project/europe-west1/other-db/orders'),
      parseTarget('cosmos://sandbox-cosmos/app/profiles'),
      parseTarget(`cosmos://sandbox-cosmos/app/profiles?partitionKey=${OID}`),
      parseTarget('cosmos://sandbox-cosmos/app/profiles?partitionKey=someone-else'),
      parseTarget('cosmos://sandbox-cosmos/app/catalog?mode=all'),
      parseTarget('query://orders-by-customer'),
      parseTarget('query://order-count'),
      parseTarget('query://not-granted'),
    ];
    const callers = [
      principal(),
      principal({ roles: [] }),
      principal({ roles: ['Orders.Analyst'] }),
      principal({ tenantId: '00000000-0000-4000-8000-000000000001' }),
      principal({ groups: ['6f1a0000-0000-4000-8000-0000000000a1'] }),
    ];
    let withWhyNot = 0;
    for (const p of [policy, denyListed])
      for (const caller of callers)
        for (const target of targets) {
          const { trace, ...explained } = explainDecision(p, caller, target);
          expect(evaluate(p, caller, target)).toEqual(explained);
          if (trace.some((t) => t.why !== 'granted' && t.why !== 'no match')) withWhyNot++;
          expect(trace.map((t) => t.why)).not.toContain('no match');
        }
    expect(withWhyNot).toBeGreaterThan(10);
    const other = explainDecision(policy, principal(), targets[1]!);
    expect(other.trace[0]!.why).toBe('database payroll is not among orders');
  });

  test('the deny list wins over any rule', () => {
    const p = parsePolicy(JSON.stringify({ ...policy, deny: [{ tenantId: TID, objectId: OID }] }));
    expect(evaluate(p, principal(), sql)).toMatchObject({ decision: 'deny', code: 'subject_denied' });
  });

  test("cosmos: the partition key derives from the caller's oid; asking for another partition is refused", () => {
    const mine = evaluate(policy, principal(), parseTarget('cosmos://sandbox-cosmos/app/profiles'));
    expect(mine).toMatchObject({ decision: 'grant', grant: { partitionKey: OID, mode: 'all' } });
    const other = evaluate(policy, principal(), parseTarget('cosmos://sandbox-cosmos/app/profiles?partitionKey=someone-else'));
    expect(other.decision).toBe('deny');
  });

  test('cosmos: a request can narrow all to read, never widen read to all', () => {
    expect(evaluate(policy, principal(), parseTarget('cosmos://sandbox-cosmos/app/profiles?mode=read'))).toMatchObject({
      grant: { mode: 'read' },
    });
    expect(evaluate(policy, principal(), parseTarget('cosmos://sandbox-cosmos/app/catalog?mode=all')).decision).toBe('deny');
    expect(evaluate(policy, principal(), parseTarget('cosmos://sandbox-cosmos/app/catalog'))).toMatchObject({
      grant: { mode: 'read', partitionKey: 'public' },
    });
  });

  test('cosmos: one frozen decision grant per (policy grant, mode, partition), shared by every decision of that shape', () => {
    const p = parsePolicy(
      JSON.stringify({
        version: 1,
        rules: [
          {
            id: 'r',
            subject: { tenantId: TID, roles: ['Orders.Read'] },
            grants: {
              cosmos: [
                {
                  account: 'acct',
                  database: 'd',
                  container: 'c',
                  mode: 'all',
                  partitionKey: { type: 'none' },
                  maxTtlSeconds: 600,
                },
              ],
            },
          },
        ],
      }),
    );
    const grantOf = (target: string, caller = principal()) => {
      const d = evaluate(p, caller, parseTarget(target));
      if (d.decision !== 'grant') throw new Error(d.reason);
      return d.grant;
    };
    const shapes = [
      'cosmos://acct/d/c',
      'cosmos://acct/d/c?mode=read',
      'cosmos://acct/d/c?partitionKey=x',
      'cosmos://acct/d/c?mode=read&partitionKey=x',
      'cosmos://acct/d/c?partitionKey=read',
      'cosmos://acct/d/c?partitionKey=x%3Ay',
    ];
    const grants = shapes.map((t) => grantOf(t));
    expect(new Set(grants).size).toBe(shapes.length);
    expect(grants.map((g) => g.kind === 'cosmos' && [g.mode, g.partitionKey])).toEqual([
      ['all', undefined],
      ['read', undefined],
      ['all', 'x'],
      ['read', 'x'],
      ['all', 'read'],
      ['all', 'x:y'],
    ]);
    for (const [i, t] of shapes.entries()) expect(grantOf(t, principal({ objectId: 'another' }))).toBe(grants[i]);
    expect(Object.isFrozen(grants[0])).toBe(true);
    // a new policy document is new grant objects
    expect(evaluate(parsePolicy(JSON.stringify(p)), principal(), parseTarget(shapes[0]!))).toMatchObject({ grant: grants[0] });
    expect(grantOf(shapes[0]!)).toBe(grants[0]);
  });

  test('subject categories are ANDed, values within a category ORed', () => {
    const p = parsePolicy(
      JSON.stringify({
        version: 1,
        rules: [
          {
            id: 'r',
            subject: { tenantId: TID, roles: ['A', 'B'], appIds: ['aaaaaaaa-0000-4000-8000-000000000001'] },
            grants: { queries: ['q'] },
          },
        ],
      }),
    );
    const q = parseTarget('query://q');
    expect(evaluate(p, principal({ roles: ['B'] }), q).decision).toBe('grant');
    expect(evaluate(p, principal({ roles: ['B'], appId: 'bbbbbbbb-0000-4000-8000-000000000001' }), q).decision).toBe('deny');
    expect(evaluate(p, principal({ roles: ['C'] }), q).decision).toBe('deny');
  });
});
