import { app, type HttpFunctionOptions } from '@azure/functions';
import { appHandlers } from '../shared/app/handlers';

/** POST /api/token: RFC 8693 token exchange for Cloud SQL IAM tokens and CosmosDB resource tokens. */
export const handler = appHandlers().token;

export const registration = {
  name: 'token',
  options: { route: 'token', methods: ['POST'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
