import { app, type TimerFunctionOptions } from '@azure/functions';
import { appHandlers } from '../shared/app/handlers';

/**
 * Token prewarm (GOOGLE_TOKEN_PREWARM, default on): every 5 minutes (and on start, functions/app.ts), the Cloud SQL
 * login tokens of the service accounts the policy names are fetched into the broker's cache. Failures are logged only.
 */
export const handler = appHandlers().prewarmTimer;

export const registration = {
  name: 'prewarmTimer',
  timer: { schedule: '0 */5 * * * *', runOnStartup: false, useMonitor: false, handler } satisfies TimerFunctionOptions,
} as const;

app.timer(registration.name, registration.timer);
