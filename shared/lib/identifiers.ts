/**
 * Identifier rules, in one place: the policy schema, the target parser, the settings and the query catalog
 * all check names with these. Each follows the service's naming rule; where the rule is loose, stricter.
 */

const part = {
  guid: '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}',
  /** Google Cloud project id: 6–30 of a-z 0-9 -, starts with a letter, no trailing hyphen (cloud.google.com/resource-manager/docs/creating-managing-projects). */
  project: '[a-z][a-z0-9-]{4,28}[a-z0-9]',
  /** A Google region: `europe-west1`, `us-central1`, `northamerica-northeast2`. */
  region: '[a-z]+-[a-z]+[0-9]+',
  /** Cloud SQL instance id: starts with a letter, a-z 0-9 -, up to 98 characters (the id without the project). */
  instance: '[a-z][a-z0-9-]{0,97}',
  /** Service-account id (the part before `@`): 6–30 of a-z 0-9 -, starts with a letter, no trailing hyphen. */
  serviceAccountId: '[a-z][a-z0-9-]{4,28}[a-z0-9]',
  /** Cosmos DB account name: 3–44 of a-z 0-9 -, no leading or trailing hyphen (Azure naming rules, Microsoft.DocumentDB/databaseAccounts). */
  cosmosAccount: '[a-z0-9][a-z0-9-]{1,42}[a-z0-9]',
  /** Key Vault secret name: 1–127 of a-z A-Z 0-9 -. */
  keyVaultSecret: '[0-9a-zA-Z-]{1,127}',
} as const;

const whole = (source: string, flags = '') => new RegExp(`^${source}$`, flags);

export const GUID = whole(part.guid);
export const PROJECT_ID = whole(part.project);
export const REGION = whole(part.region);
export const INSTANCE_ID = whole(part.instance);
/** PROJECT:REGION:INSTANCE. */
export const INSTANCE_CONNECTION_NAME = whole(`${part.project}:${part.region}:${part.instance}`);
/** A user-managed service account (a Google-managed one cannot be impersonated by the broker's rules). */
export const SERVICE_ACCOUNT_EMAIL = whole(`${part.serviceAccountId}@${part.project}\\.iam\\.gserviceaccount\\.com`);
export const COSMOS_ACCOUNT = whole(part.cosmosAccount);
/** Cosmos ids: 1..255 chars, none of / \ # ? and no leading whitespace. */
export const COSMOS_ID = /^[^/\\#?\s][^/\\#?]{0,254}$/;
/** PostgreSQL database name as the catalog and the policy name it (an unquoted identifier, or with `-`/`$`). */
export const PG_DATABASE = /^[A-Za-z_][A-Za-z0-9_$-]{0,62}$/;
export const QUERY_NAME = /^[a-z][a-z0-9-]{0,63}$/;
export const KEY_VAULT_SECRET_NAME = whole(part.keyVaultSecret);

/** `ACCOUNT=https://…` (COSMOS_ENDPOINTS items). */
export const COSMOS_ACCOUNT_ENDPOINT = whole(`${part.cosmosAccount}=https://[^\\s,]+`);
/** `ACCOUNT=/subscriptions/…/databaseAccounts/ACCOUNT` (COSMOS_MANAGED_ACCOUNTS items). */
export const COSMOS_MANAGED_ACCOUNT = whole(
  `${part.cosmosAccount}=/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[-\\w._()]{1,90}/providers/Microsoft\\.DocumentDB/databaseAccounts/${part.cosmosAccount}`,
);
/** `SERVICE_ACCOUNT_EMAIL=SECRET_NAME` (ROTATION_MANAGED_KEYS items). */
export const MANAGED_KEY = whole(`${part.serviceAccountId}@${part.project}\\.iam\\.gserviceaccount\\.com=${part.keyVaultSecret}`);
