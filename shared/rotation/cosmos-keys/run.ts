import { Agent } from 'node:https';
import { CosmosClient } from '@azure/cosmos';
import { audit } from '../../observability/audit';
import { BrokerError } from '../../errors';
import type { Logger } from '../../observability/log';
import type { KeyVaultSecrets, SecretValue } from '../../keyvault/client';
import type { AccountKeys, CosmosManagement, MasterKeyKind } from './client';
import { COSMOS_MAX_TTL_SECONDS } from '../../cosmos/provider';
import type { RotationLock } from '../lease';

/**
 * Rotation of the account keys of resource-token Cosmos accounts, by Microsoft's dual-key procedure
 * (https://learn.microsoft.com/azure/cosmos-db/database-security#key-rotation-and-regeneration): the broker signs
 * with one key (K, named by the Key Vault secret's latest version); when K is due,
 *   1. regenerate the other key (nobody uses it: its tokens expired, see 5),
 *   2. read it (listKeys) and prove it against the data plane,
 *   3. store it as a new Key Vault version, tagged with which key it is — issuance switches to it (every issuing
 *      instance re-reads the version within COSMOS_KEY_REFRESH_SECONDS),
 *   4. wait until every resource token signed with K has expired: refresh interval + the longest resource-token
 *      lifetime Cosmos allows (18,000 s, at least what any policy can grant) + a margin,
 *   5. regenerate K (now the other key), and record that on the version (`otherRegeneratedAt`).
 * The key the latest version holds always works: it is stored only after its proof, and it is never the key a
 * step regenerates. Every step is idempotent against the observed state, so a crash anywhere and a re-run lose
 * nothing: before 3 the other key is simply regenerated again; after 3 the switch is done; a repeated 5 is harmless.
 */

export const TAG = {
  keyKind: 'keyKind',
  storedAt: 'storedAt',
  otherRegeneratedAt: 'otherRegeneratedAt',
  managedBy: 'managedBy',
} as const;
export const MANAGED_BY = 'token-broker-cosmos-rotation';
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
  const tagged = v.tags[TAG.keyKind];
  const inUse = matches; // what the value proves, whatever the tag says
  const storedAtMs = Date.parse(v.tags[TAG.storedAt] ?? '') || (v.createdOn?.getTime() ?? now);
  const retired = tagged === inUse && v.tags[TAG.otherRegeneratedAt] !== undefined;
  const safeToRegenerateOther = retired || now >= storedAtMs + retireAfterMs(s);
  const due = now >= storedAtMs + s.periodDays * DAY_MS;
  if (due && safeToRegenerateOther) return { inUse, storedAtMs, actions: [{ kind: 'rotate', from: inUse, to: other(inUse) }] };
  if (!retired && safeToRegenerateOther)
    return { inUse, storedAtMs, actions: [{ kind: 'retire', keyKind: other(inUse), inUse }] };
  const nextAtMs = retired ? storedAtMs + s.periodDays * DAY_MS : storedAtMs + retireAfterMs(s);
  return { inUse, storedAtMs, actions: [], nextAtMs };
}

export interface CosmosRotationDeps {
  /** The run lease (Blob Storage); runCosmosKeyRotationUnderLease takes it. */
  readonly lock: () => RotationLock;
  /** Throws when the lease was lost: checked before every step. */
  readonly assertHeld?: () => void;
  readonly management: CosmosManagement;
  readonly vault: KeyVaultSecrets;
  readonly accounts: readonly { account: string; resourceId: string; secretName: string; endpoint: string }[];
  readonly settings: CosmosRotationSettings;
  readonly now: () => number;
  readonly log: Logger;
  readonly timeoutMs: number;
  /** PEM CA for a loopback (local development) data-plane endpoint. */
  readonly ca?: string;
  /** Called after each completed step (tests inject crashes here). */
  readonly afterStep?: (step: CosmosRotationStep, account: string) => void | Promise<void>;
}

export interface CosmosAccountReport {
  readonly account: string;
  readonly inUse?: MasterKeyKind;
  readonly actions: readonly {
    readonly action: CosmosKeyAction;
    readonly outcome: 'planned' | 'done' | 'failed';
    readonly error?: string;
    readonly newVersion?: string;
  }[];
  readonly nextAt?: string;
  readonly error?: string;
}

/** Prove a master key against the data plane: the database account read (the SDK's first call) must succeed. */
async function prove(deps: CosmosRotationDeps, endpoint: string, key: string): Promise<void> {
  const agent = deps.ca ? new Agent({ ca: deps.ca }) : undefined;
  const client = new CosmosClient({
    endpoint,
    key,
    ...(agent ? { agent } : {}),
    connectionPolicy: {
      requestTimeout: deps.timeoutMs,
      retryOptions: { maxRetryAttemptCount: 2, fixedRetryIntervalInMilliseconds: 500, maxWaitTimeInSeconds: 5 },
    },
  });
  try {
    await client.getDatabaseAccount();
  } catch (e) {
    throw new BrokerError('upstream_denied', 'CosmosDB refused the new account key.', { cause: e });
  } finally {
    client.dispose();
    agent?.destroy();
  }
}

const code = (e: unknown) => (e instanceof BrokerError ? e.code : 'internal');

async function applyAccount(
  deps: CosmosRotationDeps,
  a: CosmosRotationDeps['accounts'][number],
  dryRun: boolean,
): Promise<CosmosAccountReport> {
  const [latest, keys] = await Promise.all([deps.vault.get(a.secretName), deps.management.listKeys(a.resourceId)]);
  const p = planCosmosKeys({ ...a, latest, keys }, deps.settings, deps.now());
  const base = {
    account: a.account,
    ...(p.inUse ? { inUse: p.inUse } : {}),
    ...(p.nextAtMs ? { nextAt: new Date(p.nextAtMs).toISOString() } : {}),
  };
  if (dryRun) return { ...base, actions: p.actions.map((action) => ({ action, outcome: 'planned' as const })) };
  const event = (action: string, ok: boolean, reason: string, extra: Record<string, string | undefined>) =>
    audit(deps.log, {
      decision: ok ? 'grant' : 'deny',
      action: `cosmos-rotation.${action}`,
      target: a.account,
      reason,
      extra: { secretName: a.secretName, ...extra },
    });
  const step = async (s: CosmosRotationStep) => {
    await deps.afterStep?.(s, a.account);
    deps.assertHeld?.();
  };
  const reports: CosmosAccountReport['actions'][number][] = [];
  for (const action of p.actions) {
    try {
      deps.assertHeld?.();
      if (action.kind === 'retire') {
        await deps.management.regenerate(a.resourceId, action.keyKind);
        event('retire', true, 'previous-key-tokens-expired', { keyKind: action.keyKind });
        await step('retired');
        await deps.vault.update(a.secretName, latest!.version, {
          tags: { ...latest!.tags, [TAG.keyKind]: action.inUse, [TAG.otherRegeneratedAt]: new Date(deps.now()).toISOString() },
        });
        reports.push({ action, outcome: 'done' });
        continue;
      }
      const to = action.kind === 'rotate' ? action.to : action.keyKind;
      if (action.kind === 'rotate') {
        // 1. the key not in use gets a fresh value (its old tokens are expired: the plan checked)
        await deps.management.regenerate(a.resourceId, to);
        event('regenerate-other', true, 'due', { keyKind: to });
        await step('regenerated-other');
      } else if (action.why === 'repair') {
        deps.log.error('cosmos key rotation repair: the stored key works no more, storing the current primary', {
          event: 'cosmos-rotation.repair',
          account: a.account,
        });
      }
      // 2. read and prove
      const fresh = await deps.management.listKeys(a.resourceId);
      const value = fresh[to];
      try {
        await prove(deps, a.endpoint, value);
      } catch (e) {
        event('prove', false, code(e), { keyKind: to });
        throw e;
      }
      event('prove', true, 'data-plane-read', { keyKind: to });
      await step('proved');
      // 3. store (tag check first: nobody else switched meanwhile)
      const now = await deps.vault.get(a.secretName);
      if ((now?.version ?? '') !== (latest?.version ?? ''))
        throw new BrokerError('conflict', 'The Cosmos key was switched concurrently.');
      const stored = await deps.vault.set(a.secretName, value, {
        contentType: 'text/plain',
        tags: { [TAG.keyKind]: to, [TAG.storedAt]: new Date(deps.now()).toISOString(), [TAG.managedBy]: MANAGED_BY },
      });
      event('store', true, action.kind === 'rotate' ? 'due' : action.why, { keyKind: to, vaultVersion: stored.version });
      reports.push({ action, outcome: 'done', newVersion: stored.version });
      await step('stored');
    } catch (e) {
      reports.push({ action, outcome: 'failed', error: code(e) });
      deps.log.warn('cosmos key rotation step failed', {
        event: 'cosmos-rotation.failed',
        account: a.account,
        action: action.kind,
        code: code(e),
        err: e,
      });
      return { ...base, actions: reports, error: code(e) };
    }
  }
  return { ...base, actions: reports };
}

export async function runCosmosKeyRotation(deps: CosmosRotationDeps, opts: { dryRun: boolean }): Promise<CosmosAccountReport[]> {
  const out: CosmosAccountReport[] = [];
  for (const a of deps.accounts) {
    try {
      out.push(await applyAccount(deps, a, opts.dryRun));
    } catch (e) {
      deps.log.warn('cosmos key rotation could not observe an account', {
        event: 'cosmos-rotation.observe-failed',
        account: a.account,
        code: code(e),
        err: e,
      });
      out.push({ account: a.account, actions: [], error: code(e) });
    }
  }
  return out;
}
