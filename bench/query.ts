import { createServer, type Server } from 'node:http';
import { benchTokens } from './sandbox-tokens';
import type { AddressInfo } from 'node:net';
import { startLocalHost } from '../local/host';
import { SANDBOX } from '../local/ids';
import { startSandbox } from '../local/sandbox';
import { queryConfig } from '../shared/config/query';
import { getLoginToken } from '../shared/query/login-token';
import { createContext } from '../shared/app/context';
import { childrenCpuMicros, cpuMicros } from './load';

export interface QueryServerInfo {
  brokerUrl: string;
  baselineUrl: string;
  brokerHeaders: Record<string, string>;
  poolMax: number;
}

/**
 * (7) The query bench's server process: POST /api/query/order-count through the broker (production defaults:
 * LOG_LEVEL=info, log lines to a file) and what a user would build instead: a minimal Node HTTP endpoint, no
 * authentication, running the same SQL through the same Cloud SQL connector (IAM login, same emulated TLS instance)
 * on a pg pool of the same size. bench/run.ts drives the load from its own process over IPC and asks for this
 * process's CPU and PostgreSQL's (its backends' CPU from /proc) before and after each phase.
 */
export const BASELINE_SQL =
  "SELECT status, count(*) AS orders FROM orders WHERE placed_at >= COALESCE($1::date, DATE '1970-01-01') GROUP BY status ORDER BY status";

/** The hand-built endpoint's pool: the connector with the user's own login token, a pg pool of `poolMax`. */
export async function baselinePool(
  poolMax: number,
  adminEndpoint: string | undefined,
): Promise<{ pool: import('pg').Pool; close: () => Promise<void> }> {
  const [{ Connector, AuthTypes, IpAddressTypes }, { OAuth2Client }, { Pool }] = await Promise.all([
    import('@google-cloud/cloud-sql-connector'),
    import('google-auth-library'),
    import('pg'),
  ]);
  const serviceAccount = SANDBOX.google.readerServiceAccount;
  const google = createContext().google;
  // The user's own credential for the service account (here: one login token from the sandbox, refreshed as needed).
  const auth = new OAuth2Client();
  auth.refreshHandler = async () => {
    const t = await getLoginToken(google, { serviceAccount, lifetimeSeconds: 900 });
    return { access_token: t.token, expiry_date: t.expiresAtMs };
  };
  const connector = new Connector({ auth, sqlAdminAPIEndpoint: adminEndpoint });
  const opts = await connector.getOptions({
    instanceConnectionName: `${SANDBOX.google.project}:${SANDBOX.google.region}:${SANDBOX.google.instance}`,
    authType: AuthTypes.IAM,
    ipType: IpAddressTypes.PUBLIC,
  });
  const pool = new Pool({
    ...opts,
    user: serviceAccount.replace(/\.gserviceaccount\.com$/, ''),
    database: SANDBOX.google.database,
    max: poolMax,
  });
  return {
    pool,
    close: async () => {
      await pool.end();
      connector.close();
    },
  };
}

async function baselineServer(
  poolMax: number,
  adminEndpoint: string | undefined,
): Promise<{ url: string; close: () => Promise<void> }> {
  const { pool, close } = await baselinePool(poolMax, adminEndpoint);
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      pool.query(BASELINE_SQL, [null]).then(
        (r) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ rows: r.rows }));
        },
        () => {
          res.writeHead(500);
          res.end();
        },
      );
    });
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await close();
    },
  };
}

async function main(): Promise<void> {
  const loopback = `127.0.${process.env.TEST_LOOPBACK_NET ?? '0'}.250`;
  const sb = await startSandbox({ cloudSql: { host: process.env.BENCH_QUERY_HOST ?? loopback }, env: { LOG_LEVEL: 'info' } });
  sb.applyEnv();
  const host = await startLocalHost({ port: 0 });
  const baseline = await baselineServer(queryConfig.get().poolMax, sb.env.CLOUDSQL_ADMIN_ENDPOINT);
  try {
    const { gateway, caller } = await benchTokens(sb);
    const brokerHeaders = { authorization: `Bearer ${gateway}`, 'x-subject-token': caller, 'content-type': 'application/json' };
    const info: QueryServerInfo = {
      brokerUrl: host.url,
      baselineUrl: baseline.url,
      brokerHeaders,
      poolMax: queryConfig.get().poolMax,
    };
    await new Promise<void>((resolve) => {
      process.on('message', (msg: { cmd: string }) => {
        if (msg.cmd === 'cpu') process.send?.({ cpu: cpuMicros(), pg: childrenCpuMicros(sb.postgres?.pid) });
        if (msg.cmd === 'stop') resolve();
      });
      process.send!({ ready: info });
    });
  } finally {
    await baseline.close().catch(() => undefined);
    await host.close();
    await sb.stop();
  }
  process.exit(0); // the connector's refresh timers must not keep the process (and the bench) waiting
}

if (require.main === module)
  main().catch((e: unknown) => {
    process.stderr.write(`query bench failed: ${(e as Error).stack}\n`);
    process.send?.({ skipped: `failed: ${(e as Error).message}` }, () => process.exit(0));
  });
