import { cosmosConfig } from '../config/cosmos';
import type { Logger } from '../observability/log';
import type { AppContext } from '../app/context';
import { rotationDepsFromSettings } from './google-keys/deps';
import { runRotation } from './google-keys/run';

/**
 * One scheduled rotation run: the Google service-account keys that are due (rotate, repair, retire after the grace
 * period), then the account keys of COSMOS_MANAGED_ACCOUNTS (dual-key procedure, ./cosmos-keys/run.ts), each under
 * its own blob lease. Failures are logged, never thrown: the next tick retries, and the host must not retry a
 * half-run at once. One rotation failing never keeps the other from running.
 */
export async function runAllRotations(app: AppContext, log: Logger): Promise<void> {
  try {
    await runRotation(rotationDepsFromSettings(app, log), { dryRun: false, trigger: 'timer' });
  } catch (e) {
    log.error('rotation run failed', { event: 'rotation.error', err: e });
  }
  try {
    if ((app.settings(cosmosConfig).managedAccounts ?? []).length > 0) {
      const { cosmosRotationDepsFromSettings, runCosmosKeyRotationUnderLease } = await import('./cosmos-keys/deps');
      await runCosmosKeyRotationUnderLease(cosmosRotationDepsFromSettings(app, log), { dryRun: false });
    }
  } catch (e) {
    log.error('cosmos key rotation run failed', { event: 'cosmos-rotation.error', err: e });
  }
}
