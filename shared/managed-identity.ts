import type { TokenCredential } from '@azure/core-auth';
import { ManagedIdentityCredential } from '@azure/identity';

/**
 * The Function's managed identity: the one credential every Azure-side token comes from (Key Vault, the
 * Google STS subject token of the keyless exchange and of rotation, Application Insights ingestion). One per
 * process and client id (it caches its tokens). User-assigned when AZURE_CLIENT_ID is set, else system-assigned.
 * No retries of its own: every caller bounds the call with its deadline and answers 503/504 with Retry-After.
 */

let cached: { clientId: string; credential: TokenCredential } | undefined;

export function managedIdentity(clientId: string | undefined): TokenCredential {
  const key = clientId ?? '';
  if (cached?.clientId !== key) {
    cached = {
      clientId: key,
      credential: new ManagedIdentityCredential({ ...(clientId ? { clientId } : {}), retryOptions: { maxRetries: 0 } }),
    };
  }
  return cached.credential;
}
