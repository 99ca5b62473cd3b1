/**
 * The tag in which the broker writes when it stored a version (ISO 8601 with milliseconds, strictly increasing per
 * secret). Key Vault lists versions in no guaranteed order (ascending version id in the recordings) and `created`
 * has one-second resolution, so several versions can tie: Azure/azure-sdk-assets
 * `js/sdk/keyvault/keyvault-secrets/recordings/node/secret_client__list_secrets_in_various_ways/
 * recording_can_retrieve_all_versions_of_a_secret_by_page.json`, Azure/azure-sdk-for-net #45792. The broker orders
 * versions by this tag; `created` is only the fallback for versions written before it.
 */
export const STORED_AT_TAG = 'storedAt';

/** A version's place in the broker's own write order (ms): its `storedAt` tag, else Key Vault's `created`. */
export function storedOrderMs(tags: Readonly<Record<string, string>>, createdOnMs: number | undefined): number {
  const t = Date.parse(tags[STORED_AT_TAG] ?? '');
  return Number.isNaN(t) ? (createdOnMs ?? 0) : t;
}
