import { app, type InvocationContext, type Timer, type TimerFunctionOptions } from '@azure/functions';
import { prewarmGoogleTokens } from '../shared/google/prewarm';
import { createLogger } from '../shared/observability/log';
import { inInvocation } from '../shared/observability/process-guard';

/**
 * Token prewarm (GOOGLE_TOKEN_PREWARM, default on): on start and every 5 minutes, the Cloud SQL login tokens of
 * the service accounts the policy names are fetched into the broker's cache, so the first caller after a cold
 * start, a policy change or an expiry does not wait for STS and generateAccessToken. Failures are logged only.
 */
async function prewarm(log: ReturnType<typeof createLogger>): Promise<void> {
  await prewarmGoogleTokens(log);
}

export function handler(_timer: Timer, ctx: InvocationContext): Promise<void> {
  return inInvocation({ fn: 'prewarmTimer', invocationId: ctx.invocationId }, () =>
    prewarm(createLogger({ fn: 'prewarmTimer', invocationId: ctx.invocationId })).catch(() => undefined),
  );
}

export const registration = {
  name: 'prewarmTimer',
  timer: { schedule: '0 */5 * * * *', runOnStartup: false, useMonitor: false, handler } satisfies TimerFunctionOptions,
} as const;

app.timer(registration.name, registration.timer);

// On start, once the worker has loaded its functions; prewarmGoogleTokens skips it when the setting is off or
// Google/the policy is not configured.
setTimeout(() => void prewarm(createLogger({ fn: 'prewarmTimer', trigger: 'start' })).catch(() => undefined), 0).unref();
