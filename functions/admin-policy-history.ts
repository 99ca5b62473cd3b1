import { app, type HttpFunctionOptions } from '@azure/functions';
import { appContext } from '../shared/app/context';
import { httpHandler } from '../shared/http/handler';
import { handlePolicyHistory } from '../shared/policy/admin/history';

/** GET /api/admin/policy/history[?snapshot=T]: every kept version of the policy (admin role). */
export const handler = httpHandler(appContext(), 'adminPolicyHistory', 'problem', handlePolicyHistory);

export const registration = {
  name: 'adminPolicyHistory',
  options: { route: 'admin/policy/history', methods: ['GET'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
