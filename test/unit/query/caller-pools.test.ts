import type { Principal } from '../../../shared/auth/principal';
import type { CallerLogins } from '../../../shared/cloudsql/caller-chain';
import type { GoogleTokens } from '../../../shared/google/tokens';
import type { QueryConfig } from '../../../shared/config/query';
import type { CloudSqlCallerGrant } from '../../../shared/policy/evaluate';
import { CallerPools } from '../../../shared/query/caller-pools';
import { createLogger } from '../../../shared/observability/log';

const connectInfo = async () => ({
  ipAddresses: [{ type: 'PRIMARY', ipAddress: '127.0.0.1' }],
  serverCaCert: '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----',
  serverCertCommonName: 'p:i',
});

/**
 * Per-caller pools are bounded (issue #28): LRU beyond QUERY_CALLER_MAX_POOLS, closed after QUERY_CALLER_IDLE_SECONDS
 * unused, one creation (one login chain) for concurrent first uses of one caller. No connection is opened here: a pool
 * connects lazily.
 */

const grant: CloudSqlCallerGrant = {
  kind: 'cloudsql',
  identity: 'caller',
  connectionName: 'p:r:i',
  database: 'orders',
  adminServiceAccount: 'a@p.iam.gserviceaccount.com',
  maxTtlSeconds: 900,
};
const q = { connectTimeoutMs: 1000, idleSeconds: 30, maxLifetimeSeconds: 300 } as QueryConfig;
const who = (n: number): Principal => ({
  tenantId: '72f988bf-0000-4000-8000-00000000c0de',
  objectId: `0b5e0000-0000-4000-8000-${String(n).padStart(12, '0')}`,
  roles: [],
  scopes: [],
  groups: [],
  audience: 'a',
  issuer: 'i',
  version: '2.0',
  expiresAt: 0,
});

let now = 1_000_000;
let logins: number;
const env = { ...process.env };

function pools(): CallerPools {
  logins = 0;
  const fake = {
    login: async (p: Principal) => {
      logins++;
      await new Promise((r) => setImmediate(r));
      return { token: 't', expiresAtMs: now + 3_600_000, databaseUser: p.objectId, cached: false };
    },
    forget: () => undefined,
  } as unknown as CallerLogins;
  return new CallerPools({
    logins: fake,
    google: {} as GoogleTokens,
    log: createLogger({}, { sink: () => undefined }),
    now: () => now,
    settingsRecheckMs: 0,
    connectInfo,
  });
}

beforeEach(() => {
  process.env.QUERY_CALLER_MAX_POOLS = '200';
  process.env.QUERY_CALLER_IDLE_SECONDS = '120';
});
afterAll(() => {
  process.env = env;
});

const entry = (p: CallerPools, subject: Principal) =>
  (p as unknown as { entry: (g: CloudSqlCallerGrant, s: Principal, q: QueryConfig) => Promise<unknown> }).entry(
    grant,
    subject,
    q,
  );

test('10,000 distinct callers keep at most QUERY_CALLER_MAX_POOLS pools (least recently used closed)', async () => {
  const p = pools();
  for (let i = 0; i < 10_000; i++) await entry(p, who(i));
  expect(p.size).toBe(200);
  expect(p.stats).toEqual({ created: 10_000, closed: 9_800 });
  // The most recent callers are the ones kept; touching an old one re-creates only it.
  await entry(p, who(9_999));
  expect(p.stats.created).toBe(10_000);
  await p.closeAll();
});

test('a pool unused for QUERY_CALLER_IDLE_SECONDS is closed on the next use of any pool', async () => {
  const p = pools();
  await entry(p, who(1));
  now += 121_000;
  await entry(p, who(2));
  expect(p.size).toBe(1);
  expect(p.stats.closed).toBe(1);
  await p.closeAll();
});

test('concurrent first uses by one caller share one creation and one login chain', async () => {
  const p = pools();
  await Promise.all(Array.from({ length: 50 }, () => entry(p, who(7))));
  expect(p.stats.created).toBe(1);
  expect(logins).toBe(1);
  await p.closeAll();
});

describe('the first connection overlaps the chain (the user read ahead from the validated token)', () => {
  // Nothing listens on this address's port 5432: a started connection fails at once (ECONNREFUSED), never reaching a
  // database; what is checked is which user each pool is built for and whether a connection was started early.
  const nowhere = async () => ({ ...(await connectInfo()), ipAddresses: [{ type: 'PRIMARY', ipAddress: '127.0.0.254' }] });
  const withChain = (login: (p: Principal) => Promise<{ databaseUser: string }>) =>
    new CallerPools({
      logins: {
        login: async (p: Principal) => ({ token: 't', expiresAtMs: now + 3_600_000, cached: false, ...(await login(p)) }),
        forget: () => undefined,
      } as unknown as CallerLogins,
      google: {} as GoogleTokens,
      log: createLogger({}, { sink: () => undefined }),
      now: () => now,
      settingsRecheckMs: 0,
      connectInfo: nowhere,
    });
  type Built = { pool: { options: { user: string } }; pending?: Promise<unknown>; databaseUser: string };
  const claimed = (oid: string): Principal => ({ ...who(1), objectId: oid, claims: { oid } });

  test('the chain names the user the token named: the pool is for it and its first connection was started early', async () => {
    const p = withChain(async (s) => ({ databaseUser: s.objectId }));
    const e = (await entry(p, claimed('0b5e0000-0000-4000-8000-000000000001'))) as Built;
    expect(e.databaseUser).toBe('0b5e0000-0000-4000-8000-000000000001');
    expect(e.pool.options.user).toBe('0b5e0000-0000-4000-8000-000000000001');
    expect(e.pending).toBeDefined();
    await p.closeAll();
  });

  test('the chain names another user: the early connection is dropped, the pool is built for the chain’s user', async () => {
    const p = withChain(async () => ({ databaseUser: 'the-chains-user' }));
    const e = (await entry(p, claimed('0b5e0000-0000-4000-8000-000000000002'))) as Built;
    expect(e.databaseUser).toBe('the-chains-user');
    expect(e.pool.options.user).toBe('the-chains-user');
    expect(e.pending).toBeUndefined();
    await p.closeAll();
  });

  test('the chain fails: its error, no pool kept', async () => {
    const refused = new Error('chain refused');
    const p = withChain(async () => {
      throw refused;
    });
    await expect(entry(p, claimed('0b5e0000-0000-4000-8000-000000000003'))).rejects.toBe(refused);
    expect(p.size).toBe(0);
    expect(p.stats.created).toBe(0);
  });
});
