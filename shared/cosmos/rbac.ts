import { tokenFingerprint } from '../observability/audit';
import { cosmosConfig, endpointOf } from '../config/cosmos';
import { coreConfig } from '../config/core';
import { BrokerError } from '../errors';
import type { IssueInput, ProviderResult } from '../exchange/types';
import { ACCESS_TOKEN_TYPE } from '../exchange/types';
import { managedIdentityToken } from '../azure/managed-identity';
import type { CosmosRbacGrant } from '../policy/evaluate';

/**
 * Keyless CosmosDB (Entra ID data-plane RBAC): the answer is an Entra access token of the user-assigned managed
 * identity the grant names, for the account's audience `https://{account}.documents.azure.com`, with its real
 * expiry. No account key is read. The identity's role assignment (infra: a read-only or read-write role scoped to
 * exactly that container) decides what the token can do; the broker cannot narrow it (no partition, no shorter
 * lifetime), so the APIM policy for this mode keeps it inside APIM (infra/apim/cosmos-rbac-api.xml).
 *
 * Tokens are cached per (identity, account) while more than COSMOS_TOKEN_MIN_REMAINING_SECONDS (at most half the
 * life left) remains; concurrent misses share one managed-identity call, bounded by BROKER_UPSTREAM_TIMEOUT_MS.
 */

const COSMOS_AAD_AUTH_PREFIX = 'type=aad&ver=1.0&sig=';

function cosmosAadScope(account: string): string {
  return `https://${account}.documents.azure.com/.default`;
}

export async function issueCosmosRbacToken(input: IssueInput<CosmosRbacGrant>): Promise<ProviderResult> {
  const { grant } = input;
  const cfg = input.app.settings(cosmosConfig);
  if (input.requestedLifetimeSeconds !== undefined) {
    throw new BrokerError(
      'invalid_parameter',
      'requested_lifetime cannot be honoured for keyless (rbac) CosmosDB access: the Entra token lives as long as Entra issues it and cannot be shortened. Send no requested_lifetime.',
      { detail: { parameter: 'requested_lifetime' } },
    );
  }
  const endpoint = endpointOf(cfg, grant.account);
  if (!endpoint)
    throw new BrokerError('target_misconfigured', `CosmosDB account "${grant.account}" is not configured (COSMOS_ENDPOINTS).`);
  const clientId = grant.identityClientId.toLowerCase();
  if (!(cfg.rbacIdentityClientIds ?? []).some((c) => c.toLowerCase() === clientId)) {
    throw new BrokerError(
      'target_misconfigured',
      'The managed identity this policy rule names is not declared in COSMOS_RBAC_IDENTITY_CLIENT_IDS.',
    );
  }
  const timeoutMs = input.app.settings(coreConfig).upstreamTimeoutMs;
  const cosmos = await input.app.cosmos();
  const scope = cosmosAadScope(grant.account);
  let fetched = false;
  const issued = await cosmos.rbacTokens.get(JSON.stringify([clientId, grant.account]), async () => {
    fetched = true;
    const t = await managedIdentityToken(input.app.identities.get(clientId), scope, timeoutMs);
    const lifeMs = t.expiresOnTimestamp - Date.now();
    if (lifeMs <= 0) throw new BrokerError('upstream_error', 'The managed identity endpoint returned an expired token.');
    const marginMs = Math.min(cfg.minRemainingSeconds * 1000, Math.floor(lifeMs / 2));
    return { token: t.token, validUntilMs: t.expiresOnTimestamp, expiresAtMs: t.expiresOnTimestamp - marginMs };
  });
  input.log.debug('cosmos.rbac_token', { account: grant.account, cached: !fetched });
  return {
    response: {
      access_token: issued.token,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: Math.max(0, Math.floor((issued.validUntilMs - Date.now()) / 1000)),
      auth: 'rbac',
      authorization_format: `${COSMOS_AAD_AUTH_PREFIX}{access_token}`,
      account_endpoint: endpoint,
      database: grant.database,
      container: grant.container,
      partition_key: null,
      mode: grant.mode,
    },
    tokenIdHash: tokenFingerprint(issued.token),
    cached: !fetched,
  };
}
