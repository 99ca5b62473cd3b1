import { Pool } from 'pg';
import { startLocalHost } from '../local/host';
import { iamDbUser } from '../local/postgres';
import { SANDBOX } from '../local/ids';
import { startSandbox } from '../local/sandbox';
import { setLogSink } from '../shared/log';
import { queryConfig } from '../shared/config/query';
import { PoolRegistry } from '../shared/query/pools';

/**
 * (7) POST /api/query/order-count through the broker (HTTP, front door, policy, Cloud SQL connector over the
 * emulated TLS instance) vs the same SQL on a raw `pg` pool straight to the same PostgreSQL as the same role.
 * Sequential requests after a warm-up; prints the medians as one JSON line.
 */
const N = Number(process.env.BENCH_QUERY_N ?? 300);
const SQL = "SELECT status, count(*) AS orders FROM orders WHERE placed_at >= COALESCE($1::date, DATE '1970-01-01') GROUP BY status ORDER BY status";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function time(fn: () => Promise<void>): Promise<number[]> {
  for (let i = 0; i < 20; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < N; i++) {
    const t = process.hrtime.bigint();
    await fn();
    out.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return out;
}

async function main(): Promise<void> {
  setLogSink(() => undefined);
  const sb = await startSandbox({ cloudSql: { host: '127.0.0.1' }, env: { LOG_LEVEL: 'warn' } });
  sb.applyEnv();
  const host = await startLocalHost({ port: 0 });
  const pool = new Pool({
    host: sb.postgres!.host,
    port: sb.postgres!.port,
    database: sb.postgres!.database,
    user: iamDbUser(SANDBOX.google.readerServiceAccount),
    password: sb.postgres!.iamPassword,
    max: 5,
  });
  try {
    const gateway = await sb.entra.mint({ oid: SANDBOX.gatewayObjectId, aud: SANDBOX.clientAudience, version: '1.0' });
    const caller = await sb.entra.mint({ oid: SANDBOX.readerObjectId, aud: SANDBOX.subjectAudience, roles: ['Orders.Read'] });
    const broker = await time(async () => {
      const res = await fetch(`${host.url}/query/order-count`, {
        method: 'POST',
        headers: { authorization: `Bearer ${gateway}`, 'x-subject-token': caller, 'content-type': 'application/json' },
        body: '{}',
      });
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`query answered ${res.status}`);
    });
    const raw = await time(async () => {
      await pool.query(SQL, [null]);
    });
    // Breakdown: the HTTP + front door + policy part alone (explain does all of it but the database) ...
    const frontDoor = await time(async () => {
      const res = await fetch(`${host.url}/policy/explain`, {
        method: 'POST',
        headers: { authorization: `Bearer ${gateway}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ subject_token: caller, resource: 'query://order-count' }).toString(),
      });
      await res.arrayBuffer();
    });
    // ... and the database part alone: the broker's pool through the connector and the emulated TLS instance,
    // the same READ ONLY transaction the handler runs (preamble, query, rollback).
    const registry = new PoolRegistry(queryConfig.get());
    const target = {
      connectionName: `${SANDBOX.google.project}:${SANDBOX.google.region}:${SANDBOX.google.instance}`,
      database: SANDBOX.google.database,
      serviceAccount: SANDBOX.google.readerServiceAccount,
      tokenLifetimeSeconds: 900,
    };
    const db = await time(async () => {
      const c = await registry.connect(target);
      await c.query('BEGIN READ ONLY; SET LOCAL statement_timeout = 5000');
      await c.query(SQL, [null]);
      await c.query('ROLLBACK');
      c.release();
    });
    await registry.closeAll();
    process.stdout.write(
      JSON.stringify({ brokerMedianMs: median(broker), rawMedianMs: median(raw), frontDoorMedianMs: median(frontDoor), connectorTransactionMedianMs: median(db), n: N }) + '\n',
    );
  } finally {
    await pool.end();
    await host.close();
    await sb.stop();
  }
}

main().catch((e: unknown) => {
  process.stdout.write(JSON.stringify({ skipped: `failed: ${(e as Error).message}` }) + '\n');
  process.exit(0);
});
