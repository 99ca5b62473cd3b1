import { app, type HttpFunctionOptions } from '@azure/functions';
import { appHandlers } from '../shared/app/handlers';

/** GET /api/admin/policy (document + ETag + revision) and PUT with If-Match (admin role). */
export const handler = appHandlers().adminPolicy;

export const registration = {
  name: 'adminPolicy',
  options: { route: 'admin/policy', methods: ['GET', 'PUT'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
