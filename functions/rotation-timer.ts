import { app, type InvocationContext, type Timer, type TimerFunctionOptions } from '@azure/functions';
import { cosmosConfig } from '../shared/config/cosmos';
import { createLogger } from '../shared/observability/log';
import { inInvocation } from '../shared/observability/process-guard';
import { runRotation } from '../shared/rotation/google-keys/run';
import { rotationDepsFromSettings } from '../shared/rotation/google-keys/deps';

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
  try {
    await runRotation(rotationDepsFromSettings(log), { dryRun: false, trigger: 'timer' });
  } catch (e) {
    // Logged, not rethrown: the next tick retries; the host must not retry a half-run immediately.
    log.error('rotation run failed', { event: 'rotation.error', err: e });
  }
  try {
    if ((cosmosConfig.get().managedAccounts ?? []).length > 0) {
      const { cosmosRotationDepsFromSettings, runCosmosKeyRotationUnderLease } =
        await import('../shared/rotation/cosmos-keys/deps');
      await runCosmosKeyRotationUnderLease(cosmosRotationDepsFromSettings(log), { dryRun: false });
    }
  } catch (e) {
    log.error('cosmos key rotation run failed', { event: 'cosmos-rotation.error', err: e });
  }
}

export const registration = {
  name: 'rotationTimer',
  timer: { schedule: '%ROTATION_SCHEDULE%', runOnStartup: false, useMonitor: true, handler } satisfies TimerFunctionOptions,
} as const;

app.timer(registration.name, registration.timer);
