import { app, type HttpFunctionOptions } from '@azure/functions';
import { appHandlers } from '../shared/app/handlers';

/** GET /api/health: liveness (?probe=live) and readiness with a status per dependency. */
export const handler = appHandlers().health;

export const registration = {
  name: 'health',
  options: { route: 'health', methods: ['GET'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
