import { app, type HttpFunctionOptions } from '@azure/functions';
import { httpHandler } from '../shared/http/handler';
import { handlePolicyHistory } from '../shared/policy/admin/history';

/** GET /api/admin/policy/history[?snapshot=T]: every kept version of the policy (admin role). */
export const handler = httpHandler('adminPolicyHistory', 'problem', handlePolicyHistory, {
  adminAction: () => 'policy.history',
});

export const registration = {
  name: 'adminPolicyHistory',
  options: { route: 'admin/policy/history', methods: ['GET'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
