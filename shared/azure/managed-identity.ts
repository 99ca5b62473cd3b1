import type { AccessToken, TokenCredential } from '@azure/core-auth';
import { BrokerError, isBrokerError } from '../errors';
import { isTimeout, statusOf } from '../upstream/error-shape';
import { withDeadline } from '../upstream/deadline';
import { recordUpstream } from '../observability/telemetry';

/**
 * The Function's managed identity: the one credential every Azure-side token comes from (Key Vault, the
 * Google STS subject token of the keyless exchange and of rotation, Application Insights ingestion). One per
 * process and client id (it caches its tokens). User-assigned when AZURE_CLIENT_ID is set, else system-assigned.
 * No retries of its own: every caller bounds the call with its deadline and answers 503/504 with Retry-After.
 */

/**
 * One credential per client id: the Function's own and the user-assigned identities the policy names (Cosmos
 * rbac). The app context holds one (shared/app/context.ts).
 */
export class ManagedIdentities {
  private readonly credentials = new Map<string, TokenCredential>();

  get(clientId: string | undefined): TokenCredential {
    const key = clientId ?? '';
    let c = this.credentials.get(key);
    if (!c) {
      // @azure/identity is loaded on the first credential only (off the cold path of functions that need none).
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { ManagedIdentityCredential } = require('@azure/identity') as typeof import('@azure/identity');
      c = new ManagedIdentityCredential({ ...(clientId ? { clientId } : {}), retryOptions: { maxRetries: 0 } });
      this.credentials.set(key, c);
    }
    return c;
  }
}

/**
 * Map a failure to get the Function's managed identity token. @azure/identity reports an unreachable or
 * failing endpoint as CredentialUnavailableError / AuthenticationError; neither is the caller's fault.
 */
export function managedIdentityFailure(err: unknown): BrokerError {
  if (isBrokerError(err)) return err;
  if (isTimeout(err))
    return new BrokerError('upstream_timeout', 'The managed identity endpoint did not answer in time.', { cause: err });
  const status = statusOf(err ?? {});
  if (status !== undefined && status >= 400 && status < 500 && status !== 429) {
    return new BrokerError('upstream_denied', 'The managed identity endpoint refused the broker.', { cause: err });
  }
  return new BrokerError('upstream_unavailable', 'The managed identity endpoint cannot be reached right now.', { cause: err });
}

/**
 * An access token of the identity for `scope`, within `timeoutMs`: failures mapped (managedIdentityFailure) and
 * counted as the `managed-identity` upstream.
 */
export async function managedIdentityToken(credential: TokenCredential, scope: string, timeoutMs: number): Promise<AccessToken> {
  let token: AccessToken | null;
  try {
    token = await withDeadline(
      credential.getToken(scope, { abortSignal: AbortSignal.timeout(timeoutMs) }),
      timeoutMs,
      () => new BrokerError('upstream_timeout', 'The managed identity endpoint did not answer in time.'),
    );
  } catch (e) {
    const err = managedIdentityFailure(e);
    recordUpstream('managed-identity', err.code);
    throw err;
  }
  if (!token?.token || !Number.isFinite(token.expiresOnTimestamp)) {
    recordUpstream('managed-identity', 'upstream_unavailable');
    throw new BrokerError('upstream_unavailable', 'The managed identity endpoint returned no token.');
  }
  recordUpstream('managed-identity', 'ok');
  return token;
}
