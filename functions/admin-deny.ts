import { app, type HttpFunctionOptions } from '@azure/functions';
import { appHandlers } from '../shared/app/handlers';

/** POST /api/admin/deny: emergency revocation of one identity, with a reason and an optional expiry (admin role). */
export const handler = appHandlers().adminDeny;

export const registration = {
  name: 'adminDeny',
  options: { route: 'admin/deny', methods: ['POST'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
