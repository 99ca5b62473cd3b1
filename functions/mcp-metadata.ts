import { app, type HttpFunctionOptions } from '@azure/functions';
import { appHandlers } from '../shared/app/handlers';

/**
 * GET /api/.well-known/oauth-protected-resource/api/mcp: the MCP endpoint's Protected Resource Metadata (RFC 9728).
 * Functions serve routes under /api only: the gateway maps the spec's /.well-known/oauth-protected-resource/api/mcp
 * here (docs/mcp.md); every 401 names this URL in `resource_metadata`.
 */
export const handler = appHandlers().mcpMetadata;

export const registration = {
  name: 'mcpMetadata',
  options: {
    route: '.well-known/oauth-protected-resource/api/mcp',
    methods: ['GET'],
    authLevel: 'anonymous',
    handler,
  } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
