import { app, type InvocationContext, type Timer, type TimerFunctionOptions } from '@azure/functions';
import { createLogger } from '../shared/log';
import { inInvocation } from '../shared/process-guard';
import { runRotation } from '../shared/rotation/run';
import { rotationDepsFromSettings } from '../shared/rotation/wiring';

/**
 * Rotation timer (%ROTATION_SCHEDULE%, default daily): rotates each managed key that is due, repairs
 * broken ones, retires previous keys after the grace period. A past-due invocation just runs.
 */
export function handler(timer: Timer, ctx: InvocationContext): Promise<void> {
  return inInvocation({ fn: 'rotationTimer', invocationId: ctx.invocationId }, () => rotate(timer, ctx));
}

async function rotate(timer: Timer, ctx: InvocationContext): Promise<void> {
  const log = createLogger({ fn: 'rotationTimer', invocationId: ctx.invocationId });
  if (timer.isPastDue) log.warn('rotation timer is past due; running now', { event: 'rotation.past-due' });
  try {
    await runRotation(rotationDepsFromSettings(log), { dryRun: false, trigger: 'timer' });
  } catch (e) {
    // Logged, not rethrown: the next tick retries; the host must not retry a half-run immediately.
    log.error('rotation run failed', { event: 'rotation.error', err: e });
  }
}

export const registration = {
  name: 'rotationTimer',
  timer: { schedule: '%ROTATION_SCHEDULE%', runOnStartup: false, useMonitor: true, handler } satisfies TimerFunctionOptions,
} as const;

app.timer(registration.name, registration.timer);
