import { app, type HttpFunctionOptions } from '@azure/functions';
import { appContext } from '../shared/app/context';
import { httpHandler } from '../shared/http/handler';
import { handleHealth } from '../shared/health/endpoint';

/** GET /api/health: liveness (?probe=live) and readiness with a status per dependency. */
export const handler = httpHandler(appContext(), 'health', 'problem', handleHealth);

export const registration = {
  name: 'health',
  options: { route: 'health', methods: ['GET'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
