import { app, type HttpFunctionOptions } from '@azure/functions';
import { appHandlers } from '../shared/app/handlers';

/** DELETE /api/admin/deny/{id}: lift one deny entry (admin role). */
export const handler = appHandlers().adminDenyRemove;

export const registration = {
  name: 'adminDenyRemove',
  options: { route: 'admin/deny/{id}', methods: ['DELETE'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
