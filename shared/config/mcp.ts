import { GUID, defineSection } from './settings';
import { csv, int, str, url } from './setting-types';

/** Settings of the MCP endpoint (POST /api/mcp): the broker as an OAuth resource server for agents. */
export const mcpConfig = defineSection('mcp', {
  resourceUrl: url('MCP_RESOURCE_URL', {
    doc: "The MCP server's canonical URL (RFC 8707 resource, e.g. https://broker.example.com/api/mcp): the `resource` of its Protected Resource Metadata; its origin is always an allowed Origin",
  }),
  audiences: csv('MCP_AUDIENCES', {
    doc: "Accepted `aud` of MCP callers' v2.0 access tokens: the MCP resource app's client id (and its App ID URI), comma-separated",
  }),
  allowedClientApps: csv('MCP_ALLOWED_CLIENT_APP_IDS', {
    doc: 'Client applications (`azp` of the v2.0 token: the agent hosts an operator approved) allowed to call the MCP endpoint, comma-separated GUIDs',
    item: GUID,
    itemDoc: 'an application (client) id GUID',
  }),
  authorizationServers: csv('MCP_AUTHORIZATION_SERVERS', {
    doc: 'Authorization servers named in the Protected Resource Metadata (default: the v2.0 issuer of each BROKER_ALLOWED_TENANTS tenant)',
    default: '',
    allowEmpty: true,
  }),
  scopePrefix: str('MCP_SCOPE_PREFIX', {
    doc: 'Prefix of the full scope strings in the Protected Resource Metadata and challenges (the App ID URI and a slash, e.g. api://token-broker-mcp/); tokens carry the bare scope in `scp`',
    default: '',
  }),
  requiredScope: str('MCP_REQUIRED_SCOPE', {
    doc: 'The delegated scope (or app role, for app-only agent tokens) every MCP request needs; a catalog entry may require its own per tool (`mcp.scope`)',
    default: 'mcp.tools',
    pattern: /^[A-Za-z0-9._:-]{1,120}$/,
    patternDoc: 'a scope name (letters, digits, . _ : -)',
  }),
  allowedOrigins: csv('MCP_ALLOWED_ORIGINS', {
    doc: 'Browser origins allowed to call the MCP endpoint besides the origin of MCP_RESOURCE_URL (a request with any other Origin is 403: DNS rebinding protection)',
    default: '',
    allowEmpty: true,
  }),
  cosmosMaxItems: int('MCP_COSMOS_MAX_ITEMS', {
    doc: "Most items a Cosmos query tool (`cosmos_query_…`) returns per call: the cap of its `maxItems` argument and of a grant's `mcp.maxItems`",
    default: '50',
    min: 1,
    max: 1000,
  }),
  cosmosMaxBytes: int('MCP_COSMOS_MAX_BYTES', {
    doc: 'Most bytes of JSON items a Cosmos tool returns per call; a result cut short carries a notice (limit maxBytes)',
    default: '65536',
    min: 1024,
    max: 1048576,
  }),
});

export type McpConfig = ReturnType<typeof mcpConfig.get>;
