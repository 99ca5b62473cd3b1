import { HttpRequest, InvocationContext } from '@azure/functions';
import { benchTokens } from './sandbox-tokens';
import { handler } from '../functions/query';
import { startSandbox } from '../local/sandbox';
import { queryConfig } from '../shared/config/query';
import { baselinePool, BASELINE_SQL } from './query';

/**
 * In-process profile of the query path (no HTTP, no local host): `POST /api/query/order-count` through the function's
 * handler (the httpHandler wrapper, both token checks, the policy, the catalogued query on the sandbox's emulated
 * TLS instance, the audit line), production defaults (LOG_LEVEL=info, log lines on stdout; redirect it to a file):
 * `node --cpu-prof dist/bench/profile-query.js > /tmp/log`. Then the hand-built endpoint's work in the same process:
 * `pool.query` of the same SQL on a pool of the same size behind the same connector.
 * Prints µs per call and CPU µs per call of both on stderr, sequential and at PROFILE_CONCURRENCY (default 16)
 * callers; N (default 5000) calls each.
 */
async function main(): Promise<void> {
  const loopback = `127.0.${process.env.TEST_LOOPBACK_NET ?? '0'}.250`;
  const sb = await startSandbox({ cloudSql: { host: loopback }, env: { LOG_LEVEL: 'info' } });
  sb.applyEnv();
  const { gateway, caller } = await benchTokens(sb);
  const broker = async () => {
    const req = new HttpRequest({
      method: 'POST',
      url: 'http://127.0.0.1/api/query/order-count',
      headers: { authorization: `Bearer ${gateway}`, 'x-subject-token': caller, 'content-type': 'application/json' },
      params: { name: 'order-count' },
      body: { string: '{}' },
    });
    const res = await handler(req, new InvocationContext({ invocationId: 'x', functionName: 'query' }));
    if (res.status !== 200) throw new Error(`status ${res.status}`);
  };
  const base = await baselinePool(queryConfig.get().poolMax, sb.env.CLOUDSQL_ADMIN_ENDPOINT);
  const handBuilt = async () => {
    const r = await base.pool.query(BASELINE_SQL, [null]);
    JSON.stringify({ rows: r.rows });
  };
  const n = Number(process.env.N ?? 5000);
  const concurrency = Number(process.env.PROFILE_CONCURRENCY ?? 16);
  const measure = async (what: string, fn: () => Promise<void>, callers: number) => {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    let left = n;
    await Promise.all(
      Array.from({ length: callers }, async () => {
        while (left-- > 0) await fn();
      }),
    );
    const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
    const c = process.cpuUsage(c0);
    process.stderr.write(
      `${what}, ${callers} caller(s): ${us.toFixed(1)} µs per call, ${((c.user + c.system) / n).toFixed(1)} µs CPU per call\n`,
    );
  };
  for (let i = 0; i < 300; i++) await broker();
  for (let i = 0; i < 300; i++) await handBuilt();
  const only = process.env.PROFILE_ONLY; // 'broker' or 'baseline': one side, for a profile of that side alone
  for (const callers of [1, concurrency]) {
    if (only !== 'baseline') await measure('broker handler (in process)', broker, callers);
    if (only !== 'broker') await measure('hand-built pool.query', handBuilt, callers);
  }
  await base.close();
  await sb.stop();
  process.exit(0); // the connectors' refresh timers
}

void main();
