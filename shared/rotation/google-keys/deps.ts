import { BrokerError } from '../../errors';
import type { Logger } from '../../observability/log';
import { coreConfig } from '../../config/core';
import { googleConfig } from '../../config/google';
import { managedKeysOf, rotationConfig } from '../../config/rotation';
import { KeyVaultSecrets } from '../../keyvault/client';
import type { AppContext } from '../../app/context';
import { GoogleIamKeys, type GoogleTokenSource } from './client';
import { rotationLeaseFromSettings } from '../lease';
import type { RotationDeps } from './run';

/**
 * The rotation's own Google identity: the broker's one keyless source credential (GOOGLE_WIF_AUDIENCE,
 * GOOGLE_STS_TOKEN_URL, GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE; shared/google/keyless.ts), whose federated
 * principal holds roles/iam.serviceAccountKeyAdmin on the rotated accounts.
 */
const federatedTokens = (app: AppContext): GoogleTokenSource => ({
  async getAccessToken() {
    return (await app.google.federated().sourceAccessToken()).token;
  },
});

/** Build the rotation's dependencies from app settings (a ConfigError becomes a 503 config_invalid). */
export function rotationDepsFromSettings(
  app: AppContext,
  log: Logger,
  overrides: { tokens?: GoogleTokenSource; now?: () => number; sleep?: (ms: number) => Promise<void> } = {},
): RotationDeps {
  const cfg = app.settings(rotationConfig);
  const core = app.settings(coreConfig);
  const google = app.settings(googleConfig);
  if (!overrides.tokens && !google.wifAudience)
    throw new BrokerError('config_invalid', 'GOOGLE_WIF_AUDIENCE is required for key rotation.');
  return {
    iam: new GoogleIamKeys(cfg.iamEndpoint, overrides.tokens ?? federatedTokens(app), core.upstreamTimeoutMs),
    vault: KeyVaultSecrets.fromSettings({ timeoutMs: core.upstreamTimeoutMs, identities: app.identities }),
    managed: managedKeysOf(cfg),
    settings: {
      periodDays: cfg.periodDays,
      graceDays: cfg.graceDays,
      oauthTokenUrl: cfg.oauthTokenUrl,
      timeoutMs: core.upstreamTimeoutMs,
    },
    lock: () => rotationLeaseFromSettings('google-keys', log),
    now: overrides.now ?? app.now,
    sleep: overrides.sleep,
    log,
  };
}
