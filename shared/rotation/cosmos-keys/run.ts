import { Agent } from 'node:https';
import { CosmosClient } from '@azure/cosmos';
import { audit } from '../../observability/audit';
import { BrokerError } from '../../errors';
import type { Logger } from '../../observability/log';
import type { KeyVaultSecrets } from '../../keyvault/client';
import type { CosmosManagement, MasterKeyKind } from './client';
import type { RotationLock } from '../lease';
import {
  planCosmosKeys,
  COSMOS_KEY_TAG,
  COSMOS_KEYS_MANAGED_BY,
  type CosmosKeyAction,
  type CosmosRotationSettings,
  type CosmosRotationStep,
} from './plan';

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
          tags: {
            ...latest!.tags,
            [COSMOS_KEY_TAG.keyKind]: action.inUse,
            [COSMOS_KEY_TAG.otherRegeneratedAt]: new Date(deps.now()).toISOString(),
          },
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
        tags: {
          [COSMOS_KEY_TAG.keyKind]: to,
          [COSMOS_KEY_TAG.storedAt]: new Date(deps.now()).toISOString(),
          [COSMOS_KEY_TAG.managedBy]: COSMOS_KEYS_MANAGED_BY,
        },
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
