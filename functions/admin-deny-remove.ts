import { app, type HttpFunctionOptions } from '@azure/functions';
import { appContext } from '../shared/app/context';
import { httpHandler } from '../shared/http/handler';
import { handleRemoveDeny } from '../shared/policy/admin/remove-deny';

/** DELETE /api/admin/deny/{id}: lift one deny entry (admin role). */
export const handler = httpHandler(appContext(), 'adminDenyRemove', 'problem', handleRemoveDeny);

export const registration = {
  name: 'adminDenyRemove',
  options: { route: 'admin/deny/{id}', methods: ['DELETE'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
