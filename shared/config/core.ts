import { LOG_LEVEL } from './logging';
import { GUID, defineSection } from './settings';
import { csv, int, optionalStr, str, url } from './setting-types';

/** Settings every function needs: the identity front door, the policy, upstream limits. */
export const coreConfig = defineSection('core', {
  authorityHost: url('ENTRA_AUTHORITY_HOST', {
    doc: 'Where Entra ID signing keys are fetched ({host}/{tenant}/discovery/v2.0/keys) and, in caller identity mode, the on-behalf-of token endpoint ({host}/{tenant}/oauth2/v2.0/token)',
    default: 'https://login.microsoftonline.com',
  }),
  allowedTenants: csv('BROKER_ALLOWED_TENANTS', {
    doc: 'Entra tenant ids whose tokens are accepted (comma-separated GUIDs)',
    item: GUID,
    itemDoc: 'a tenant GUID',
  }),
  clientAudiences: csv('BROKER_CLIENT_AUDIENCES', {
    doc: "Accepted `aud` of the gateway's (client) token: the broker's App ID URI (v1.0 tokens) and its client id (v2.0 tokens), comma-separated",
  }),
  allowedClients: csv('BROKER_ALLOWED_CLIENT_OIDS', {
    doc: 'Object ids of the gateway identities (APIM managed identity) allowed to call the broker',
    item: GUID,
    itemDoc: 'an object id GUID',
  }),
  subjectAudiences: csv('BROKER_SUBJECT_AUDIENCES', {
    doc: "Accepted `aud` of the end caller's (subject) token: each API exposed through APIM by App ID URI (v1.0 tokens) and client id (v2.0 tokens), comma-separated",
  }),
  clockSkewSeconds: int('BROKER_CLOCK_SKEW_SECONDS', { doc: 'Tolerance for exp/nbf', default: '60', min: 0, max: 300 }),
  maxTokenBytes: int('BROKER_MAX_TOKEN_BYTES', {
    doc: 'Largest accepted bearer or subject token',
    default: '16384',
    min: 1024,
    max: 65536,
  }),
  jwksCooldownSeconds: int('BROKER_JWKS_COOLDOWN_SECONDS', {
    doc: 'Least time between two JWKS refetches triggered by an unknown kid',
    default: '30',
    min: 0,
    max: 3600,
  }),
  jwksCacheMaxAgeSeconds: int('BROKER_JWKS_MAX_AGE_SECONDS', {
    doc: 'How long a fetched JWKS is used before it is refetched',
    default: '3600',
    min: 60,
    max: 86400,
  }),
  policyPath: optionalStr('BROKER_POLICY_PATH', {
    doc: 'Path of the access policy JSON file (local use and tests; read-only: the admin API needs BROKER_POLICY_URL). One of BROKER_POLICY_PATH and BROKER_POLICY_URL is required',
  }),
  upstreamTimeoutMs: int('BROKER_UPSTREAM_TIMEOUT_MS', {
    doc: 'Timeout of every upstream call (JWKS, Google, Cosmos, Key Vault)',
    default: '5000',
    min: 100,
    max: 30000,
  }),
  adminRole: str('BROKER_ADMIN_ROLE', { doc: 'App role required for /api/admin/* endpoints', default: 'Broker.Admin' }),
  logLevel: LOG_LEVEL,
});

export type CoreConfig = ReturnType<typeof coreConfig.get>;
