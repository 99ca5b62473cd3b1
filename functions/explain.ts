import { app, type HttpFunctionOptions } from '@azure/functions';
import { appContext } from '../shared/app/context';
import { httpHandler } from '../shared/http/handler';
import { handleExplain } from '../shared/policy/explain';

/** POST /api/policy/explain: which policy rule grants a subject a target, or why none does. */
export const handler = httpHandler(appContext(), 'explain', 'problem', handleExplain);

export const registration = {
  name: 'explain',
  options: { route: 'policy/explain', methods: ['POST'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
