import autocannon from 'autocannon';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startLocalHost } from '../local/host';
import { SANDBOX } from '../local/ids';
import { startSandbox } from '../local/sandbox';
import { queryConfig } from '../shared/config/query';
import { getLoginToken } from '../shared/query/login-token';
import { createContext } from '../shared/app/context';
import { sequential, summarise, type LatencySummary } from './load';

/**
 * (7) POST /api/query/order-count through the broker (production defaults: LOG_LEVEL=info, log lines to a file)
 * vs what a user would build instead: a minimal Node HTTP endpoint, no authentication, running the same SQL
 * through the same Cloud SQL connector (IAM login, same emulated TLS instance) on a pg pool of the same size.
 * Interleaved: baseline, broker, baseline, broker; sequential latency and throughput at 16 concurrent callers.
 * Run by bench/run.ts as a child with stdout redirected to a log file; the figures come back over IPC.
 */
const N = Number(process.env.BENCH_QUERY_N ?? 400);
const SECONDS = Number(process.env.BENCH_QUERY_SECONDS ?? 4);
const CONCURRENCY = 16;
const SQL =
  "SELECT status, count(*) AS orders FROM orders WHERE placed_at >= COALESCE($1::date, DATE '1970-01-01') GROUP BY status ORDER BY status";

async function baselineServer(
  poolMax: number,
  adminEndpoint: string | undefined,
): Promise<{ url: string; close: () => Promise<void> }> {
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
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      pool.query(SQL, [null]).then(
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
      await pool.end();
      connector.close();
    },
  };
}

function toSummary(xs: number[]): LatencySummary {
  return summarise(xs, 0, xs.reduce((a, b) => a + b, 0) / 1000);
}

async function concurrent(
  url: string,
  path: string,
  headers: Record<string, string>,
): Promise<{ rps: number; p50: number; p99: number; non2xx: number }> {
  const r = await autocannon({
    url,
    duration: SECONDS,
    connections: CONCURRENCY,
    requests: [{ method: 'POST', path, headers, body: '{}' }],
  });
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx + r.errors + r.timeouts };
}

async function main(): Promise<void> {
  const loopback = `127.0.${process.env.TEST_LOOPBACK_NET ?? '0'}.250`;
  const sb = await startSandbox({ cloudSql: { host: process.env.BENCH_QUERY_HOST ?? loopback }, env: { LOG_LEVEL: 'info' } });
  sb.applyEnv();
  const host = await startLocalHost({ port: 0 });
  const baseline = await baselineServer(queryConfig.get().poolMax, sb.env.CLOUDSQL_ADMIN_ENDPOINT);
  try {
    const gateway = await sb.entra.mint({
      oid: SANDBOX.gatewayObjectId,
      aud: SANDBOX.clientAudience,
      version: '1.0',
      expiresIn: 7200,
    });
    const caller = await sb.entra.mint({
      oid: SANDBOX.readerObjectId,
      aud: SANDBOX.subjectAudience,
      roles: ['Orders.Read'],
      expiresIn: 7200,
    });
    const brokerHeaders = { authorization: `Bearer ${gateway}`, 'x-subject-token': caller, 'content-type': 'application/json' };
    const brokerCall = async () => {
      const res = await fetch(`${host.url}/query/order-count`, { method: 'POST', headers: brokerHeaders, body: '{}' });
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`query answered ${res.status}`);
    };
    const baselineCall = async () => {
      const res = await fetch(`${baseline.url}/order-count`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      });
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`baseline answered ${res.status}`);
    };
    const seqBroker: number[] = [];
    const seqBase: number[] = [];
    for (let round = 0; round < 2; round++) {
      seqBase.push(...(await sequential(N / 2, baselineCall)));
      seqBroker.push(...(await sequential(N / 2, brokerCall)));
    }
    const base1 = await concurrent(baseline.url, '/order-count', { 'content-type': 'application/json' });
    const broker = await concurrent(host.url.replace(/\/api$/, ''), '/api/query/order-count', brokerHeaders);
    const base2 = await concurrent(baseline.url, '/order-count', { 'content-type': 'application/json' });
    const baseRps = (base1.rps + base2.rps) / 2;
    const sb1 = toSummary(seqBase);
    const sb2 = toSummary(seqBroker);
    const out = {
      n: N,
      poolMax: queryConfig.get().poolMax,
      sequential: {
        broker: { p50: sb2.p50, p99: sb2.p99 },
        baseline: { p50: sb1.p50, p99: sb1.p99 },
        medianRatio: sb2.p50 / sb1.p50,
        p99Ratio: sb2.p99 / sb1.p99,
      },
      concurrent16: { broker, baseline: { rps: baseRps, runs: [base1, base2] }, throughputRatio: broker.rps / baseRps },
    };
    await new Promise<void>((r) => process.send!(out, () => r()));
  } finally {
    await baseline.close().catch(() => undefined);
    await host.close();
    await sb.stop();
  }
  process.exit(0); // the connector's refresh timers must not keep the process (and the bench) waiting
}

main().catch((e: unknown) => {
  process.stderr.write(`query bench failed: ${(e as Error).stack}\n`);
  process.send?.({ skipped: `failed: ${(e as Error).message}` }, () => process.exit(0));
});
