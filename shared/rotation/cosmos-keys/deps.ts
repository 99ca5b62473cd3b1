import type { TokenCredential } from '@azure/identity';
import { coreConfig } from '../../config/core';
import { cosmosConfig, endpointOf } from '../../config/cosmos';
import { BrokerError } from '../../errors';
import { functionIdentity, KeyVaultSecrets } from '../../keyvault/client';
import type { Logger } from '../../observability/log';
import type { AppContext } from '../../app/context';
import { rotationLeaseFromSettings } from '../lease';
import { localEndpointCa } from '../../upstream/local-endpoints';
import { secretNameOf } from '../../cosmos/client';
import { runCosmosKeyRotation, type CosmosAccountReport, type CosmosRotationDeps } from './run';
import { CosmosManagement } from './client';

/** Settings → dependencies of the Cosmos key rotation (a bad setting is 503 config_invalid naming it). */
export function cosmosRotationDepsFromSettings(
  app: AppContext,
  log: Logger,
  overrides: {
    credential?: TokenCredential;
    now?: () => number;
    sleep?: (ms: number) => Promise<void>;
    afterStep?: CosmosRotationDeps['afterStep'];
  } = {},
): CosmosRotationDeps {
  const cfg = app.settings(cosmosConfig);
  const core = app.settings(coreConfig);
  const accounts = (cfg.managedAccounts ?? []).map((pair) => {
    const i = pair.indexOf('=');
    const account = pair.slice(0, i);
    const endpoint = endpointOf(cfg, account);
    if (!endpoint)
      throw new BrokerError('config_invalid', `COSMOS_MANAGED_ACCOUNTS names "${account}", which is not in COSMOS_ENDPOINTS.`);
    return { account, resourceId: pair.slice(i + 1), secretName: secretNameOf(cfg, account), endpoint };
  });
  const ca = localEndpointCa({
    caFile: cfg.caFile,
    url: cfg.managementEndpoint,
    setting: 'COSMOS_CA_FILE',
    service: 'Azure Resource Manager',
  });
  return {
    lock: () => rotationLeaseFromSettings('cosmos-keys', log),
    management: new CosmosManagement({
      endpoint: cfg.managementEndpoint,
      credential: overrides.credential ?? functionIdentity(app.identities),
      timeoutMs: core.upstreamTimeoutMs,
      ...(ca ? { ca } : {}),
      ...(overrides.sleep ? { sleep: overrides.sleep } : {}),
    }),
    vault: KeyVaultSecrets.fromSettings({ timeoutMs: core.upstreamTimeoutMs, identities: app.identities }),
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
 * One run over every managed account under the Cosmos rotation's blob lease, so two timers (any instances) never
 * switch or regenerate at once; the lease is checked before every step. Returns undefined when another run holds it.
 */
export async function runCosmosKeyRotationUnderLease(
  deps: CosmosRotationDeps,
  opts: { dryRun: boolean },
): Promise<CosmosAccountReport[] | undefined> {
  if (deps.accounts.length === 0) return [];
  if (opts.dryRun) return runCosmosKeyRotation(deps, opts);
  const lease = await deps.lock().acquire();
  if (!lease.acquired) {
    deps.log.info('cosmos key rotation skipped: another run holds the lease', {
      event: 'cosmos-rotation.locked',
      until: lease.until,
    });
    return undefined;
  }
  try {
    return await runCosmosKeyRotation({ ...deps, assertHeld: () => lease.lease.assertHeld() }, opts);
  } finally {
    await lease.lease.release();
  }
}
