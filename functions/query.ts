import { app, type HttpFunctionOptions } from '@azure/functions';
import { appHandlers } from '../shared/app/handlers';

/** POST /api/query/{name}: a catalogued, parameterized, read-only query as the caller's Cloud SQL IAM identity. */
export const handler = appHandlers().query;

export const registration = {
  name: 'query',
  options: { route: 'query/{name}', methods: ['POST'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
