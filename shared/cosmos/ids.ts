import { createHash } from 'node:crypto';
import type { Principal } from '../auth/principal';
import type { CosmosDecisionGrant } from '../policy/evaluate';

/**
 * Stable Cosmos ids. Cosmos ids are at most 255 characters and may not contain / \ ? #; tenant and
 * object ids are GUIDs, so the user id is readable and always valid. The permission id names the grant
 * (container, mode, partition) by hash, so one user holds one permission per distinct grant.
 */
export function cosmosUserId(p: Pick<Principal, 'tenantId' | 'objectId'>): string {
  return `broker-${p.tenantId}-${p.objectId}`.toLowerCase();
}

export function permissionId(g: Pick<CosmosDecisionGrant, 'database' | 'container' | 'mode' | 'partitionKey'>): string {
  const h = createHash('sha256')
    .update(JSON.stringify([g.database, g.container, g.mode, g.partitionKey ?? null]))
    .digest('hex')
    .slice(0, 32);
  return `${g.mode}-${h}`;
}

export function containerLink(g: Pick<CosmosDecisionGrant, 'database' | 'container'>): string {
  return `dbs/${g.database}/colls/${g.container}`;
}
