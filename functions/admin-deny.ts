import { app, type HttpFunctionOptions } from '@azure/functions';
import { appContext } from '../shared/app/context';
import { httpHandler } from '../shared/http/handler';
import { handleAddDeny } from '../shared/policy/admin/add-deny';

/** POST /api/admin/deny: emergency revocation of one identity, with a reason and an optional expiry (admin role). */
export const handler = httpHandler(appContext(), 'adminDeny', 'problem', handleAddDeny);

export const registration = {
  name: 'adminDeny',
  options: { route: 'admin/deny', methods: ['POST'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
