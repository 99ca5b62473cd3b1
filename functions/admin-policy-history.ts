import { app, type HttpFunctionOptions } from '@azure/functions';
import { appHandlers } from '../shared/app/handlers';

/** GET /api/admin/policy/history[?snapshot=T]: every kept version of the policy (admin role). */
export const handler = appHandlers().adminPolicyHistory;

export const registration = {
  name: 'adminPolicyHistory',
  options: { route: 'admin/policy/history', methods: ['GET'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
