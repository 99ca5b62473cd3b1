import { app, type HttpFunctionOptions } from '@azure/functions';
import { appContext } from '../shared/app/context';
import { httpHandler } from '../shared/http/handler';
import { handleTokenExchange } from '../shared/exchange/token-endpoint';

/** POST /api/token: RFC 8693 token exchange for Cloud SQL IAM tokens and CosmosDB resource tokens. */
export const handler = httpHandler(appContext(), 'token', 'oauth', handleTokenExchange);

export const registration = {
  name: 'token',
  options: { route: 'token', methods: ['POST'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
