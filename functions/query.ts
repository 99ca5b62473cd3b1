import { app, type HttpFunctionOptions } from '@azure/functions';
import { appContext } from '../shared/app/context';
import { httpHandler } from '../shared/http/handler';
import { handleQuery } from '../shared/query/endpoint';

/** POST /api/query/{name}: a catalogued, parameterized, read-only query as the caller's Cloud SQL IAM identity. */
export const handler = httpHandler(appContext(), 'query', 'problem', handleQuery);

export const registration = {
  name: 'query',
  options: { route: 'query/{name}', methods: ['POST'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
