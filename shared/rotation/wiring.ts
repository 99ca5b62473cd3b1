import { BrokerError } from '../errors';
import type { Logger } from '../log';
import { coreConfig } from '../config/core';
import { lockBlobUrl, policyConfig } from '../config/policy';
import { managedKeysOf, rotationConfig, type RotationConfig } from '../config/rotation';
import { blobClientFor } from '../policy/blob-store';
import { blobLeaseLock, type RotationLock } from './lock';
import { KeyVaultSecrets, functionIdentity } from '../keyvault/client';
import { FederatedTokenSource } from './googleAuth';
import { GoogleIamKeys, type GoogleTokenSource } from './iam';
import type { RotationDeps } from './run';

/** The blob lease of ROTATION_LOCK_URL (default: rotation-lock beside the policy blob). */
export function rotationLockFromSettings(cfg: RotationConfig, log: Logger): RotationLock {
  let pol;
  let url: string;
  try {
    pol = policyConfig.get();
    url = lockBlobUrl(cfg.lockUrl, pol);
  } catch (e) {
    throw new BrokerError('config_invalid', (e as Error).message, { cause: e });
  }
  return blobLeaseLock(blobClientFor(pol, url), { durationSeconds: cfg.lockSeconds, timeoutMs: pol.storageTimeoutMs, log });
}

let tokenSource: { key: string; source: GoogleTokenSource } | undefined;

/** Build the rotation's dependencies from app settings (a ConfigError becomes a 503 config_invalid). */
export function rotationDepsFromSettings(log: Logger, overrides: { tokens?: GoogleTokenSource; now?: () => number; sleep?: (ms: number) => Promise<void> } = {}): RotationDeps {
  let cfg;
  let core;
  try {
    cfg = rotationConfig.get();
    core = coreConfig.get();
  } catch (e) {
    throw new BrokerError('config_invalid', (e as Error).message, { cause: e });
  }
  let tokens = overrides.tokens;
  if (!tokens) {
    if (!cfg.wifAudience) throw new BrokerError('config_invalid', 'ROTATION_WIF_AUDIENCE is required for key rotation.');
    const key = `${cfg.stsUrl}|${cfg.wifAudience}|${cfg.entraTokenResource}`;
    if (tokenSource?.key !== key) {
      tokenSource = {
        key,
        source: new FederatedTokenSource({
          credential: functionIdentity(),
          entraResource: cfg.entraTokenResource,
          stsUrl: cfg.stsUrl,
          audience: cfg.wifAudience,
          timeoutMs: core.upstreamTimeoutMs,
        }),
      };
    }
    tokens = tokenSource.source;
  }
  return {
    iam: new GoogleIamKeys(cfg.iamEndpoint, tokens, core.upstreamTimeoutMs),
    vault: KeyVaultSecrets.fromSettings({ timeoutMs: core.upstreamTimeoutMs }),
    managed: managedKeysOf(cfg),
    settings: {
      periodDays: cfg.periodDays,
      graceDays: cfg.graceDays,
      oauthTokenUrl: cfg.oauthTokenUrl,
      timeoutMs: core.upstreamTimeoutMs,
    },
    lock: () => rotationLockFromSettings(cfg, log),
    now: overrides.now ?? Date.now,
    sleep: overrides.sleep,
    log,
  };
}
