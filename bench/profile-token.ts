import { createHook } from 'node:async_hooks';
import { InvocationContext, type HttpRequest } from '@azure/functions';
import { benchTokens } from './sandbox-tokens';
import { handler } from '../functions/token';
import { SANDBOX } from '../local/ids';
import { startSandbox } from '../local/sandbox';
import { telemetryWithoutExporter } from './telemetry-off';
import * as processGuard from '../shared/observability/process-guard';

/**
 * In-process profile of the token cache-hit path (no HTTP), production defaults (LOG_LEVEL=info, log lines on
 * stdout; redirect it to a file; telemetry on without an exporter, as bench/server.ts):
 * `node --cpu-prof dist/bench/profile-token.js [cloudsql|cosmos] > /tmp/log`.
 * Prints microseconds per call and CPU per call on stderr; the .cpuprofile shows where they go.
 * Measuring knobs: PROFILE_NO_INVOCATION_SCOPE=1 runs the handler without the per-request AsyncLocalStorage scope
 * (process-guard's inInvocation made a plain call); PROFILE_OTEL_CONTEXT=1 registers OpenTelemetry's
 * AsyncLocalStorage context manager, as useAzureMonitor() does in production; PROFILE_COUNT_PROMISES=1 first counts
 * the promises made per call.
 */
async function main(): Promise<void> {
  if (process.env.PROFILE_TELEMETRY !== 'off') telemetryWithoutExporter();
  if (process.env.PROFILE_NO_INVOCATION_SCOPE === '1')
    (processGuard as { inInvocation: unknown }).inInvocation = (_s: unknown, _l: unknown, fn: () => unknown) => fn();
  if (process.env.PROFILE_OTEL_CONTEXT === '1') {
    const { AsyncLocalStorageContextManager } = await import('@opentelemetry/context-async-hooks');
    const { context } = await import('@opentelemetry/api');
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  }
  const sb = await startSandbox({ env: { LOG_LEVEL: 'info' } });
  sb.applyEnv();
  const { gateway, caller } = await benchTokens(sb);
  const target =
    process.argv[2] === 'cosmos'
      ? `cosmos://${SANDBOX.cosmos.account}/${SANDBOX.cosmos.database}/${SANDBOX.cosmos.container}`
      : `cloudsql://${SANDBOX.google.project}/${SANDBOX.google.region}/${SANDBOX.google.instance}/${SANDBOX.google.database}`;
  const body = new URLSearchParams({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token: caller,
    subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    resource: target,
  }).toString();
  // The request as the local host hands it over (a body already in memory): an @azure/functions HttpRequest is an
  // undici Request per call (body stream, abort signal), which was more than half of the CPU this measured.
  const headers = new Headers({ authorization: `Bearer ${gateway}`, 'content-type': 'application/x-www-form-urlencoded' });
  headers.set('content-length', String(Buffer.byteLength(body)));
  const request = (): HttpRequest =>
    ({
      method: 'POST',
      url: 'http://127.0.0.1/api/token',
      headers,
      params: {},
      query: new URLSearchParams(),
      body: null,
      bodyUsed: false,
      user: null,
      text: () => Promise.resolve(body),
    }) as unknown as HttpRequest;
  const ctx = new InvocationContext({ invocationId: 'x', functionName: 'token' });
  const call = async () => {
    const res = await handler(request(), ctx);
    if ((res as { status?: number }).status !== 200) throw new Error(`status ${(res as { status?: number }).status}`);
  };
  for (let i = 0; i < 500; i++) await call();
  if (process.env.PROFILE_COUNT_PROMISES === '1') {
    // Promises made per call (each one runs the async-context hooks while a scope is on): what the layers cost.
    let made = 0;
    const sites = new Map<string, number>();
    const hook = createHook({
      init: (_id, type) => {
        if (type !== 'PROMISE') return;
        made++;
        if (process.env.PROFILE_PROMISE_SITES !== '1') return;
        const site =
          (new Error().stack ?? '')
            .split('\n')
            .slice(2)
            .find((l) => !l.includes('node:internal')) ?? '?';
        sites.set(site.trim(), (sites.get(site.trim()) ?? 0) + 1);
      },
    }).enable();
    for (let i = 0; i < 1000; i++) await call();
    hook.disable();
    process.stderr.write(`${target}: ${(made / 1000).toFixed(1)} promises per call (the bench loop's own included)\n`);
    for (const [site, k] of [...sites].sort((a, b) => b[1] - a[1])) process.stderr.write(`  ${(k / 1000).toFixed(1)}  ${site}\n`);
  }
  const n = Number(process.env.N ?? 20000);
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await call();
  const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
  const c = process.cpuUsage(c0);
  process.stderr.write(
    `${target}: ${us.toFixed(1)} µs per in-process call, ${((c.user + c.system) / n).toFixed(1)} µs CPU per call\n`,
  );
  await sb.stop();
}

void main();
