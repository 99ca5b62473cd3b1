import { app, type TimerFunctionOptions } from '@azure/functions';
import { appHandlers } from '../shared/app/handlers';

/**
 * Rotation timer (%ROTATION_SCHEDULE%, default daily): rotates each managed key that is due, repairs
 * broken ones, retires previous keys after the grace period; then the Cosmos account keys of
 * COSMOS_MANAGED_ACCOUNTS (dual-key procedure, shared/rotation/cosmos-keys/). A past-due invocation just runs.
 */
export const handler = appHandlers().rotationTimer;

export const registration = {
  name: 'rotationTimer',
  timer: { schedule: '%ROTATION_SCHEDULE%', runOnStartup: false, useMonitor: true, handler } satisfies TimerFunctionOptions,
} as const;

app.timer(registration.name, registration.timer);
