import { app, type HttpFunctionOptions } from '@azure/functions';
import { appHandlers } from '../shared/app/handlers';

/** POST /api/mcp: the broker's remote MCP server (Streamable HTTP, stateless); GET and DELETE answer 405. */
export const handler = appHandlers().mcp;

export const registration = {
  name: 'mcp',
  options: { route: 'mcp', methods: ['POST', 'GET', 'DELETE'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
