import { ConfigError } from '../../../shared/errors';
import { parsePolicy } from '../../../shared/policy/load';
import { evaluate } from '../../../shared/policy/evaluate';
import { parseTarget } from '../../../shared/policy/target';
import type { Principal } from '../../../shared/auth/principal';

/** `identity: "caller"` on Cloud SQL grants (issue #28): the schema's rules and what evaluate hands out. */

const TID = '72f988bf-0000-4000-8000-00000000c0de';
const SA = 'orders-reader@sandbox-project.iam.gserviceaccount.com';
const INSTANCE = 'sandbox-project:europe-west1:orders-db';
const person: Principal = {
  tenantId: TID,
  objectId: '0b5e0000-0000-4000-8000-00000000ead1',
  roles: ['Orders.Person'],
  scopes: [],
  groups: [],
  audience: 'api://orders-api',
  issuer: `https://sts.windows.net/${TID}/`,
  version: '1.0',
  expiresAt: 0,
};

const policyWith = (grant: Record<string, unknown>) => ({
  version: 1,
  rules: [
    {
      id: 'people',
      subject: { tenantId: TID, roles: ['Orders.Person'] },
      grants: { cloudsql: [{ instance: INSTANCE, databases: ['orders'], maxTtlSeconds: 900, ...grant }] },
    },
  ],
});

function problemsOf(doc: unknown): string[] {
  try {
    parsePolicy(JSON.stringify(doc));
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return [...(e as ConfigError).problems];
  }
  return [];
}

test('a caller-mode grant names the admin account and no login service account', () => {
  expect(problemsOf(policyWith({ identity: 'caller', adminServiceAccount: SA }))).toEqual([]);
  expect(problemsOf(policyWith({ identity: 'caller' })).join('\n')).toMatch(
    /adminServiceAccount.*required for identity "caller"/,
  );
  expect(problemsOf(policyWith({ identity: 'caller', adminServiceAccount: SA, serviceAccount: SA })).join('\n')).toMatch(
    /serviceAccount.*not for identity "caller"/,
  );
  expect(problemsOf(policyWith({ identity: 'someone' })).join('\n')).toMatch(/identity/);
});

test('the service-account mode is the default and unchanged: serviceAccount required, adminServiceAccount refused', () => {
  expect(problemsOf(policyWith({ serviceAccount: SA }))).toEqual([]);
  expect(problemsOf(policyWith({})).join('\n')).toMatch(/serviceAccount.*required/);
  expect(problemsOf(policyWith({ serviceAccount: SA, adminServiceAccount: SA })).join('\n')).toMatch(
    /adminServiceAccount.*only for identity "caller"/,
  );
  const d = evaluate(
    parsePolicy(JSON.stringify(policyWith({ serviceAccount: SA }))),
    person,
    parseTarget('cloudsql://sandbox-project/europe-west1/orders-db/orders'),
  );
  expect(d).toMatchObject({ decision: 'grant', grant: { identity: 'serviceAccount', serviceAccount: SA } });
});

test('evaluate hands out a caller grant without any login service account', () => {
  const d = evaluate(
    parsePolicy(JSON.stringify(policyWith({ identity: 'caller', adminServiceAccount: SA }))),
    person,
    parseTarget('cloudsql://sandbox-project/europe-west1/orders-db/orders'),
  );
  expect(d.decision).toBe('grant');
  if (d.decision !== 'grant') return;
  expect(d.grant).toEqual({
    kind: 'cloudsql',
    connectionName: INSTANCE,
    database: 'orders',
    maxTtlSeconds: 900,
    identity: 'caller',
    adminServiceAccount: SA,
  });
  expect('serviceAccount' in d.grant).toBe(false);
});
