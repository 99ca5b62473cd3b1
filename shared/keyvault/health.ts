import type { CheckResult } from '../health/types';

const CACHE_MS = 10_000;
let cache: { at: number; key: string; result: CheckResult } | undefined;

/**
 * Readiness of Key Vault: skipped when KEY_VAULT_URL is not set; else one list-secrets page of size 1
 * with the managed identity (needs only the Secrets User role), bounded to 3 s, cached for 10 s.
 * The SDK is loaded lazily, only when the check runs.
 */
export async function checkKeyVault(): Promise<CheckResult> {
  const url = process.env.KEY_VAULT_URL;
  if (!url) return { status: 'skipped', detail: 'KEY_VAULT_URL not set' };
  if (cache && cache.key === url && Date.now() - cache.at < CACHE_MS) return cache.result;
  const { createSecretClient, keyVaultFailure } = await import('./client');
  let result: CheckResult;
  try {
    await createSecretClient()
      .listPropertiesOfSecrets({ abortSignal: AbortSignal.timeout(3000) })
      .byPage({ maxPageSize: 1 })
      .next();
    result = { status: 'ok' };
  } catch (e) {
    const b = keyVaultFailure(e);
    result = { status: 'fail', detail: b.code };
  }
  cache = { at: Date.now(), key: url, result };
  return result;
}
