import { SANDBOX } from '../local/ids';
import { startSandbox } from '../local/sandbox';
import { createContext } from '../shared/app/context';
import { loadCore, validateSubject } from '../shared/auth/frontdoor';
import { runCataloguedQuery } from '../shared/query/run-catalogued';

/**
 * Caller identity mode (issue #28), measured on the query path itself (no HTTP): a cold caller-mode query (no login,
 * no pool: Entra OBO + Google STS + the TLS login as the person) with the Entra and STS emulators answering after
 * BENCH_UPSTREAM_MS (default 30), and warm caller-mode vs warm service-account-mode queries (medians of N).
 * `npm run build && node dist/bench/caller-mode.js`. Not part of `npm run bench` yet.
 */
const N = Number(process.env.BENCH_CALLER_N ?? 200);
const UPSTREAM_MS = Number(process.env.BENCH_UPSTREAM_MS ?? 30);
const COLD_RUNS = Number(process.env.BENCH_CALLER_COLD ?? 10);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const sb = await startSandbox({ cloudSql: { host: process.env.BENCH_HOST ?? '127.0.0.1' } });
  const restore = sb.applyEnv();
  const app = createContext({ logSink: () => undefined });
  try {
    const core = loadCore(app.settingsRecheckMs);
    const mint = (roles: string[]) =>
      sb.entra.mint({ aud: SANDBOX.subjectAudience, version: '1.0', oid: SANDBOX.readerObjectId, roles, scp: 'x' });
    const person = await validateSubject(await mint([SANDBOX.personRole]), core);
    const reader = await validateSubject(await mint(['Orders.Read']), core);
    const scope = { correlationId: 'bench', log: app.logger({}), app };
    const run = async (name: string, subject: typeof person) => {
      const t0 = performance.now();
      await runCataloguedQuery({ name, subject, client: subject, args: {}, scope });
      return performance.now() - t0;
    };
    // Warm the instance's connect settings and the service-account path once.
    await run('my-documents', person);
    await run('order-count', reader);
    sb.setEmulatorFaults({ byName: { entra: { latencyMs: UPSTREAM_MS }, 'google-sts': { latencyMs: UPSTREAM_MS } } });
    const cold: number[] = [];
    for (let i = 0; i < COLD_RUNS; i++) {
      app.callerLogins.forget(person);
      await app.callerPools.closeAll();
      cold.push(await run('my-documents', person));
    }
    sb.setEmulatorFaults(undefined);
    const warmCaller: number[] = [];
    const warmSa: number[] = [];
    for (let i = 0; i < N; i++) {
      warmCaller.push(await run('my-documents', person));
      warmSa.push(await run('order-count', reader));
    }
    const out = {
      upstreamMs: UPSTREAM_MS,
      coldCallerMedianMs: +median(cold).toFixed(2),
      coldUpstreamSumMs: 2 * UPSTREAM_MS,
      warmCallerMedianMs: +median(warmCaller).toFixed(2),
      warmServiceAccountMedianMs: +median(warmSa).toFixed(2),
      warmRatio: +(median(warmCaller) / median(warmSa)).toFixed(2),
    };
    console.log(JSON.stringify(out, null, 2));
  } finally {
    await app.close();
    restore();
    await sb.stop();
  }
}

void main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
