import type { TokenCredential } from '@azure/identity';
import { coreConfig } from '../config/core';
import { cosmosConfig, endpointOf } from '../config/cosmos';
import { rotationConfig } from '../config/rotation';
import { BrokerError } from '../errors';
import { functionIdentity, KeyVaultSecrets } from '../keyvault/client';
import type { Logger } from '../log';
import { acquireLease } from '../rotation/lock';
import { sandboxCa } from '../sandbox-ca';
import { secretNameOf } from './client';
import { runCosmosKeyRotation, type CosmosAccountReport, type CosmosRotationDeps } from './key-rotation';
import { CosmosManagement } from './management';

/** Settings → dependencies of the Cosmos key rotation (a bad setting is 503 config_invalid naming it). */
export function cosmosRotationDepsFromSettings(
  log: Logger,
  overrides: { credential?: TokenCredential; now?: () => number; sleep?: (ms: number) => Promise<void>; afterStep?: CosmosRotationDeps['afterStep'] } = {},
): CosmosRotationDeps {
  let cfg;
  let core;
  try {
    cfg = cosmosConfig.get();
    core = coreConfig.get();
  } catch (e) {
    throw new BrokerError('config_invalid', (e as Error).message, { cause: e });
  }
  const accounts = (cfg.managedAccounts ?? []).map((pair) => {
    const i = pair.indexOf('=');
    const account = pair.slice(0, i);
    const endpoint = endpointOf(cfg, account);
    if (!endpoint) throw new BrokerError('config_invalid', `COSMOS_MANAGED_ACCOUNTS names "${account}", which is not in COSMOS_ENDPOINTS.`);
    return { account, resourceId: pair.slice(i + 1), secretName: secretNameOf(cfg, account), endpoint };
  });
  const ca = sandboxCa({ caFile: cfg.caFile, url: cfg.managementEndpoint, setting: 'COSMOS_CA_FILE', service: 'Azure Resource Manager' });
  return {
    management: new CosmosManagement({
      endpoint: cfg.managementEndpoint,
      credential: overrides.credential ?? functionIdentity(),
      timeoutMs: core.upstreamTimeoutMs,
      ...(ca ? { ca } : {}),
      ...(overrides.sleep ? { sleep: overrides.sleep } : {}),
    }),
    vault: KeyVaultSecrets.fromSettings({ timeoutMs: core.upstreamTimeoutMs }),
    accounts,
    settings: { periodDays: cfg.keyPeriodDays, refreshSeconds: cfg.keyRefreshSeconds },
    now: overrides.now ?? Date.now,
    log,
    timeoutMs: core.upstreamTimeoutMs,
    ...(ca ? { ca } : {}),
    ...(overrides.afterStep ? { afterStep: overrides.afterStep } : {}),
  };
}

/**
 * One run over every managed account, under its own Key Vault lease (`{ROTATION_LOCK_SECRET}-cosmos`), so two
 * timers never switch or regenerate at once. Returns undefined when another run holds the lease.
 */
export async function runCosmosKeyRotationUnderLease(deps: CosmosRotationDeps, opts: { dryRun: boolean; sleep?: (ms: number) => Promise<void> }): Promise<CosmosAccountReport[] | undefined> {
  if (deps.accounts.length === 0) return [];
  if (opts.dryRun) return runCosmosKeyRotation(deps, opts);
  const r = rotationConfig.get();
  const lease = await acquireLease(deps.vault, { secretName: `${r.lockSecret}-cosmos`, ttlSeconds: r.lockSeconds, settleMs: r.lockSettleMs, now: deps.now, sleep: opts.sleep });
  if (!lease.acquired) {
    deps.log.info('cosmos key rotation skipped: another run holds the lease', { event: 'cosmos-rotation.locked' });
    return undefined;
  }
  try {
    return await runCosmosKeyRotation(deps, opts);
  } finally {
    await lease.lease.release();
  }
}
