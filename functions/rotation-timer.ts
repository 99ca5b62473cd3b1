import { app, type InvocationContext, type Timer, type TimerFunctionOptions } from '@azure/functions';
import { createLogger } from '../shared/observability/log';
import { inInvocation } from '../shared/observability/process-guard';
import { runAllRotations } from '../shared/rotation/run-all';

/**
 * Rotation timer (%ROTATION_SCHEDULE%, default daily): rotates each managed key that is due, repairs
 * broken ones, retires previous keys after the grace period; then the Cosmos account keys of
 * COSMOS_MANAGED_ACCOUNTS (dual-key procedure, shared/rotation/cosmos-keys/run.ts). A past-due invocation just runs.
 */
export function handler(timer: Timer, ctx: InvocationContext): Promise<void> {
  return inInvocation({ fn: 'rotationTimer', invocationId: ctx.invocationId }, () => rotate(timer, ctx));
}

async function rotate(timer: Timer, ctx: InvocationContext): Promise<void> {
  const log = createLogger({ fn: 'rotationTimer', invocationId: ctx.invocationId });
  if (timer.isPastDue) log.warn('rotation timer is past due; running now', { event: 'rotation.past-due' });
  await runAllRotations(log);
}

export const registration = {
  name: 'rotationTimer',
  timer: { schedule: '%ROTATION_SCHEDULE%', runOnStartup: false, useMonitor: true, handler } satisfies TimerFunctionOptions,
} as const;

app.timer(registration.name, registration.timer);
