import { app, type HttpFunctionOptions } from '@azure/functions';
import { appHandlers } from '../shared/app/handlers';

/** POST /api/policy/explain: which policy rule grants a subject a target, or why none does. */
export const handler = appHandlers().explain;

export const registration = {
  name: 'explain',
  options: { route: 'policy/explain', methods: ['POST'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
