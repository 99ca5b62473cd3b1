import { createHash } from 'node:crypto';
import type { Principal } from '../auth/principal';
import type { CosmosDecisionGrant } from '../policy/evaluate';

/**
 * Stable Cosmos ids. Cosmos ids are at most 255 characters and may not contain / \ ? #.
 *
 * Cosmos allows **one permission per (user, resource)**: a second permission of the same user on the same
 * container is 409 Conflict (https://learn.microsoft.com/rest/api/cosmos-db/permissions), whatever its mode or
 * partition. So the broker keeps one Cosmos user per subject *and grant shape* (container, mode, partition):
 * `broker-{tid}-{oid}-{hash}`, each holding exactly one permission. A caller with a read grant and an all grant
 * on one container (or two partitions of it) gets two users, two permissions, two tokens; none replaces another.
 */

type GrantShape = Pick<CosmosDecisionGrant, 'database' | 'container' | 'mode' | 'partitionKey'>;

/** Hashes of recent grant shapes (a cache hit asks for the same few on every request), bounded. */
const grantHashes = new Map<string, string>();

function grantHash(g: GrantShape): string {
  // JSON of a fixed-shape tuple: unambiguous (null, never a sentinel string, for "no partition").
  const shape = JSON.stringify([g.database, g.container, g.mode, g.partitionKey ?? null]);
  let hash = grantHashes.get(shape);
  if (hash === undefined) {
    hash = createHash('sha256').update(shape).digest('hex').slice(0, 32);
    if (grantHashes.size >= 1024) grantHashes.clear();
    grantHashes.set(shape, hash);
  }
  return hash;
}

/** The Cosmos user of one subject for one grant shape: ≤ 7 + 36 + 1 + 36 + 1 + 32 = 113 characters. */
export function cosmosUserId(p: Pick<Principal, 'tenantId' | 'objectId'>, g: GrantShape): string {
  return `broker-${p.tenantId}-${p.objectId}-${grantHash(g)}`.toLowerCase();
}

/** The one permission of that user. */
export function permissionId(g: GrantShape): string {
  return `${g.mode}-${grantHash(g)}`;
}

export function containerLink(g: Pick<CosmosDecisionGrant, 'database' | 'container'>): string {
  return `dbs/${g.database}/colls/${g.container}`;
}
