import { COSMOS_ACCOUNT_ENDPOINT, COSMOS_MANAGED_ACCOUNT } from '../lib/identifiers';
import { defineSection, GUID, type SettingSpec } from './settings';
import { csv, int, optionalStr, str, url } from './setting-types';

function optional<T>(s: SettingSpec<T>): SettingSpec<T> & { optional: true } {
  return { ...s, optional: true };
}

/** CosmosDB resource tokens (POST /api/token with a cosmos:// target). */
export const cosmosConfig = defineSection('cosmos', {
  endpoints: optional(
    csv('COSMOS_ENDPOINTS', {
      doc: 'CosmosDB accounts the broker issues for: comma-separated ACCOUNT=ENDPOINT pairs, e.g. orders=https://orders.documents.azure.com:443/; an account not listed is never issued for',
      item: COSMOS_ACCOUNT_ENDPOINT,
      itemDoc: 'ACCOUNT=https://ENDPOINT (account: 3-44 of a-z, 0-9, -)',
    }),
  ),
  keySecretName: str('COSMOS_KEY_SECRET_NAME', {
    doc: "Key Vault secret holding an account's primary key; {account} is replaced by the account name",
    default: 'cosmos-{account}-key',
    pattern: /^[0-9a-zA-Z-]*\{account\}[0-9a-zA-Z-]*$/,
    patternDoc: 'letters, digits and dashes around one {account} placeholder',
  }),
  caFile: optionalStr('COSMOS_CA_FILE', {
    doc: 'PEM CA bundle trusted for the account endpoint; local development only: honoured only for a loopback endpoint',
  }),
  minRemainingSeconds: int('COSMOS_TOKEN_MIN_REMAINING_SECONDS', {
    doc: 'A cached resource token is served only while this much life is left (at most half its lifetime)',
    default: '300',
    min: 0,
    max: 3600,
  }),
  rbacIdentityClientIds: optional(
    csv('COSMOS_RBAC_IDENTITY_CLIENT_IDS', {
      doc: 'Client ids of the user-assigned managed identities (attached to the Function App) that policy grants with "auth": "rbac" may name; a grant naming another identity is refused',
      item: GUID,
      itemDoc: 'a client id (GUID)',
    }),
  ),
  keyRefreshSeconds: int('COSMOS_KEY_REFRESH_SECONDS', {
    doc: 'How often an issuing instance re-reads the account key version from Key Vault (a rotated key is used within this time)',
    default: '300',
    min: 1,
    max: 3600,
  }),
  managedAccounts: optional(
    csv('COSMOS_MANAGED_ACCOUNTS', {
      doc: 'Cosmos accounts whose keys the rotation timer rotates (dual-key procedure): comma-separated ACCOUNT=ARM_RESOURCE_ID pairs',
      item: COSMOS_MANAGED_ACCOUNT,
      itemDoc: 'ACCOUNT=/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.DocumentDB/databaseAccounts/NAME',
    }),
  ),
  managementEndpoint: url('COSMOS_MANAGEMENT_ENDPOINT', {
    doc: 'Azure Resource Manager endpoint for listKeys/regenerateKey (token audience https://management.azure.com)',
    default: 'https://management.azure.com',
    protocols: ['https:'],
  }),
  keyPeriodDays: int('COSMOS_KEY_PERIOD_DAYS', {
    doc: 'Switch a managed Cosmos account to its other (freshly regenerated) key once the key in use is this old',
    default: '90',
    min: 1,
    max: 3650,
  }),
  throttleBudgetMs: int('COSMOS_THROTTLE_BUDGET_MS', {
    doc: 'Total time spent honouring Cosmos 429 x-ms-retry-after-ms before answering 503 with Retry-After',
    default: '3000',
    min: 0,
    max: 30000,
  }),
});

export type CosmosConfig = ReturnType<typeof cosmosConfig.get>;

/** The endpoint configured for an account, or undefined. */
export function endpointOf(cfg: CosmosConfig, account: string): string | undefined {
  for (const pair of cfg.endpoints ?? []) {
    const i = pair.indexOf('=');
    if (pair.slice(0, i) === account) return pair.slice(i + 1);
  }
  return undefined;
}
