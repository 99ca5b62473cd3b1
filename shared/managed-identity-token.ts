import type { AccessToken, TokenCredential } from '@azure/core-auth';
import { BrokerError } from './errors';
import { managedIdentityFailure } from './managed-identity';
import { recordUpstream } from './telemetry';
import { withDeadline } from './upstream-call';

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
