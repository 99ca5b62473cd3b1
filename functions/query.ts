import { app, type HttpFunctionOptions } from '@azure/functions';
import { httpHandler } from '../shared/http/handler';
import { handleQuery } from '../shared/query/endpoint';
import { closeQueryPools } from '../shared/query/run-catalogued';

/** POST /api/query/{name}: a catalogued, parameterized, read-only query as the caller's Cloud SQL IAM identity. */
export const handler = httpHandler('query', 'problem', handleQuery);

export const registration = {
  name: 'query',
  options: { route: 'query/{name}', methods: ['POST'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);

// Graceful shutdown of the worker (scale-in, deployment): close the database pools and their connectors, so
// PostgreSQL sees a clean disconnect instead of sessions cut mid-protocol.
app.hook.appTerminate(() => closeQueryPools());
