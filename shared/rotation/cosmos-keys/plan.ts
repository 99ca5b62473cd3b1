import type { SecretValue } from '../../keyvault/client';
import { COSMOS_MAX_TTL_SECONDS } from '../../cosmos/provider';
import type { AccountKeys, MasterKeyKind } from './client';

/** The plan of the Cosmos account-key rotation (pure): what to do for one account, given what Key Vault and ARM hold. */

export const COSMOS_KEY_TAG = {
  keyKind: 'keyKind',
  storedAt: 'storedAt',
  otherRegeneratedAt: 'otherRegeneratedAt',
  managedBy: 'managedBy',
} as const;
export const COSMOS_KEYS_MANAGED_BY = 'token-broker-cosmos-rotation';
const DAY_MS = 86_400_000;

export type CosmosRotationStep = 'regenerated-other' | 'proved' | 'stored' | 'retired';

export interface CosmosAccountState {
  readonly account: string;
  readonly resourceId: string;
  readonly secretName: string;
  readonly latest: SecretValue | undefined;
  readonly keys: AccountKeys;
}

export type CosmosKeyAction =
  | { readonly kind: 'store'; readonly keyKind: MasterKeyKind; readonly why: 'initial' | 'repair' }
  | { readonly kind: 'rotate'; readonly from: MasterKeyKind; readonly to: MasterKeyKind }
  | { readonly kind: 'retire'; readonly keyKind: MasterKeyKind; readonly inUse: MasterKeyKind };

export interface CosmosKeyPlan {
  readonly inUse: MasterKeyKind | undefined;
  readonly storedAtMs: number | undefined;
  readonly actions: readonly CosmosKeyAction[];
  /** When the next action becomes possible (for the report), if none is due now. */
  readonly nextAtMs?: number;
}

export interface CosmosRotationSettings {
  readonly periodDays: number;
  readonly refreshSeconds: number;
}

const other = (k: MasterKeyKind): MasterKeyKind => (k === 'primary' ? 'secondary' : 'primary');

/** How long after a switch the previous key may still have live resource tokens. */
export function retireAfterMs(s: CosmosRotationSettings): number {
  return (s.refreshSeconds + COSMOS_MAX_TTL_SECONDS + 300) * 1000;
}

/** Pure: what to do for one account, given what Key Vault and ARM hold now. */
export function planCosmosKeys(st: CosmosAccountState, s: CosmosRotationSettings, now: number): CosmosKeyPlan {
  const v = st.latest;
  const matches: MasterKeyKind | undefined =
    !v || !v.enabled
      ? undefined
      : v.value === st.keys.primary
        ? 'primary'
        : v.value === st.keys.secondary
          ? 'secondary'
          : undefined;
  if (!v) return { inUse: undefined, storedAtMs: undefined, actions: [{ kind: 'store', keyKind: 'primary', why: 'initial' }] };
  if (!matches) {
    // The stored key is neither account key (regenerated behind the broker's back) or disabled: issuance is broken now.
    return { inUse: undefined, storedAtMs: undefined, actions: [{ kind: 'store', keyKind: 'primary', why: 'repair' }] };
  }
  const tagged = v.tags[COSMOS_KEY_TAG.keyKind];
  const inUse = matches; // what the value proves, whatever the tag says
  const storedAtMs = Date.parse(v.tags[COSMOS_KEY_TAG.storedAt] ?? '') || (v.createdOn?.getTime() ?? now);
  const retired = tagged === inUse && v.tags[COSMOS_KEY_TAG.otherRegeneratedAt] !== undefined;
  const safeToRegenerateOther = retired || now >= storedAtMs + retireAfterMs(s);
  const due = now >= storedAtMs + s.periodDays * DAY_MS;
  if (due && safeToRegenerateOther) return { inUse, storedAtMs, actions: [{ kind: 'rotate', from: inUse, to: other(inUse) }] };
  if (!retired && safeToRegenerateOther)
    return { inUse, storedAtMs, actions: [{ kind: 'retire', keyKind: other(inUse), inUse }] };
  const nextAtMs = retired ? storedAtMs + s.periodDays * DAY_MS : storedAtMs + retireAfterMs(s);
  return { inUse, storedAtMs, actions: [], nextAtMs };
}
