import { defineSection, type SettingSpec } from './settings';
import { int, optionalStr, str } from './setting-types';

/**
 * Settings of the caller identity mode (`identity: "caller"` Cloud SQL grants, docs/cloudsql.md "Two identity
 * modes"): the Entra on-behalf-of exchange (the broker's app registration authenticated by a federated credential of
 * the Function's managed identity, AZURE_CLIENT_ID), the Google STS workforce exchange (GOOGLE_STS_TOKEN_URL), and
 * the query function's per-caller pools. Unset: caller-mode grants answer 503 config_invalid naming the setting.
 */

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token (`audience`, workforce form). */
const WORKFORCE_AUDIENCE =
  /^\/\/iam\.googleapis\.com\/locations\/global\/workforcePools\/[a-z0-9-]{4,63}\/providers\/[a-z0-9-]{4,32}$/;

function optionalMatching(name: string, doc: string, re: RegExp, form: string): SettingSpec<string> & { optional: true } {
  return {
    ...optionalStr(name, { doc }),
    parse(raw) {
      if (!re.test(raw)) throw new Error(`must be ${form}`);
      return raw;
    },
  };
}

export const callerConfig = defineSection('caller', {
  oboClientId: optionalMatching(
    'CALLER_OBO_CLIENT_ID',
    "Caller mode: client id of the app registration whose tokens callers present (the subject tokens' audience); it makes the on-behalf-of request, authenticated by its federated credential trusting the Function's managed identity (no secret)",
    GUID,
    'a GUID (the app registration client id)',
  ),
  oboMcpClientId: optionalMatching(
    'CALLER_OBO_MCP_CLIENT_ID',
    "Caller mode over MCP: client id of the MCP resource's app registration when it is not CALLER_OBO_CLIENT_ID; it makes the on-behalf-of request for MCP callers (Entra requires the assertion's audience to be the requesting app), with its own federated credential trusting the managed identity and the same consent",
    GUID,
    'a GUID (the MCP resource app registration client id)',
  ),
  workforceTokenScope: optionalMatching(
    'CALLER_WORKFORCE_TOKEN_SCOPE',
    'Caller mode: the on-behalf-of `scope`: `{App ID URI or client id}/.default` of the app registration the workforce pool provider trusts (its OIDC client_id)',
    /^(api:\/\/|https:\/\/|[0-9a-f]{8}-)[^\s]+\/\.default$/i,
    'an App ID URI or client id followed by /.default',
  ),
  workforceAudience: optionalMatching(
    'CALLER_WORKFORCE_AUDIENCE',
    'Caller mode: the workforce pool provider, //iam.googleapis.com/locations/global/workforcePools/POOL/providers/PROVIDER (the STS `audience`)',
    WORKFORCE_AUDIENCE,
    '//iam.googleapis.com/locations/global/workforcePools/POOL/providers/PROVIDER',
  ),
  userProject: optionalMatching(
    'CALLER_WORKFORCE_USER_PROJECT',
    "Caller mode: the STS `options.userProject` (project number or id used for quota and billing of the callers' Google tokens; the workforce principals need serviceusage.services.use on it)",
    /^[a-z0-9][a-z0-9-]{0,31}$/,
    'a project number or project id (at most 32 characters)',
  ),
  databaseUserClaim: str('CALLER_DATABASE_USER_CLAIM', {
    doc: "Caller mode: the claim of the on-behalf-of token the workforce provider maps to google.subject (infra/gcp/workforce.tf): its value is the caller's database user",
    default: 'oid',
    pattern: /^[a-z_]{2,32}$/,
    patternDoc: 'a claim name (lower-case letters and _)',
  }),
  poolMax: int('QUERY_CALLER_POOL_MAX', {
    doc: 'Caller mode: most connections of one caller (a pool per caller, instance and database)',
    default: '2',
    min: 1,
    max: 10,
  }),
  maxPools: int('QUERY_CALLER_MAX_POOLS', {
    doc: 'Caller mode: most per-caller pools kept; the least recently used is closed beyond it',
    default: '200',
    min: 1,
    max: 20000,
  }),
  idleSeconds: int('QUERY_CALLER_IDLE_SECONDS', {
    doc: "Caller mode: a caller's pool unused this long is closed (its connections with it)",
    default: '120',
    min: 5,
    max: 3600,
  }),
  maxLoginTokens: int('CALLER_LOGIN_CACHE_MAX_ENTRIES', {
    doc: "Caller mode: most callers' Cloud SQL login tokens kept in memory (oldest evicted)",
    default: '10000',
    min: 10,
    max: 100000,
  }),
});

export type CallerConfig = ReturnType<typeof callerConfig.get>;
