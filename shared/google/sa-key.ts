import type { ManagedIdentities } from '../azure/managed-identity';
import { BrokerError } from '../errors';
import { createLogger, type Logger } from '../observability/log';
import { KeyVaultSecrets } from '../keyvault/client';
import { saKeyConfig } from '../config/rotation';
import { exchangeKey, parseKeyFile, type ServiceAccountKeyFile } from './sa-key-exchange';
import { CLOUD_PLATFORM_SCOPE } from './scopes';
import type { SourceCredential, SourceCredentialContext } from './source-types';

/**
 * A Google source token from a service-account key kept in Key Vault (the rotation timer keeps it fresh):
 * every fetch reads the latest secret version (a fetch happens about once per source-token lifetime, the
 * caller caches tokens), so a rotation is picked up on the next fetch. When Key Vault cannot be read,
 * the last key read is used (Key Vault outages do not break the exchange). When Google refuses the
 * key (it was disabled or deleted after a rotation), the secret is re-read and the exchange retried once.
 */
export class KeyVaultKeySource {
  private cached?: { version: string; key: ServiceAccountKeyFile };

  constructor(
    private readonly opts: {
      vault: KeyVaultSecrets;
      secretName: string;
      tokenUrl: string;
      timeoutMs: number;
      now: () => number;
      log?: Logger;
    },
  ) {}

  private async read(): Promise<{ version: string; key: ServiceAccountKeyFile }> {
    let secret;
    try {
      secret = await this.opts.vault.get(this.opts.secretName);
    } catch (e) {
      if (this.cached) {
        this.opts.log?.warn('source key: Key Vault unreadable, using the cached key', {
          event: 'sa-key.cached',
          vaultVersion: this.cached.version,
          code: e instanceof BrokerError ? e.code : 'internal',
        });
        return this.cached;
      }
      throw e;
    }
    if (!secret) throw new BrokerError('target_misconfigured', 'The source service-account key is not in Key Vault.');
    if (this.cached?.version !== secret.version) {
      this.cached = { version: secret.version, key: parseKeyFile(secret.value) };
      this.opts.log?.info('source key loaded', {
        event: 'sa-key.loaded',
        vaultVersion: secret.version,
        keyId: this.cached.key.private_key_id,
      });
    }
    return this.cached;
  }

  async fetchSourceToken(): Promise<{ token: string; expiresAtMs: number }> {
    const exchange = (key: ServiceAccountKeyFile) =>
      exchangeKey(key, {
        tokenUrl: this.opts.tokenUrl,
        scope: CLOUD_PLATFORM_SCOPE,
        nowMs: this.opts.now(),
        timeoutMs: this.opts.timeoutMs,
      });
    const first = await this.read();
    try {
      const t = await exchange(first.key);
      return { token: t.accessToken, expiresAtMs: t.expiresAtMs };
    } catch (e) {
      if (!(e instanceof BrokerError) || e.code !== 'upstream_denied') throw e;
      // The key was refused: drop it and re-read (a rotation may have just replaced it).
      this.cached = undefined;
      const again = await this.read();
      if (again.version === first.version) throw e;
      const t = await exchange(again.key);
      return { token: t.accessToken, expiresAtMs: t.expiresAtMs };
    }
  }
}

let shared: { key: string; source: KeyVaultKeySource } | undefined;

/**
 * The `sa-key` source credential from settings (GOOGLE_SA_KEY_SECRET, GOOGLE_OAUTH_TOKEN_URL, KEY_VAULT_URL),
 * shaped as the Cloud SQL exchange's SourceCredential (`mode`, `fetchSourceToken`). One per configuration,
 * so the cached key survives across requests.
 */
function saKeySourceFromSettings(ctx: { timeoutMs: number; now: () => number; log?: Logger; identities?: ManagedIdentities }): {
  readonly mode: 'sa-key';
  fetchSourceToken(): Promise<{ token: string; expiresAtMs: number }>;
} {
  const cfg = saKeyConfig.load();
  const key = `${cfg.secretName}|${cfg.tokenUrl}|${ctx.timeoutMs}`;
  if (shared?.key !== key) {
    shared = {
      key,
      source: new KeyVaultKeySource({
        vault: KeyVaultSecrets.fromSettings({ timeoutMs: ctx.timeoutMs, identities: ctx.identities }),
        secretName: cfg.secretName,
        tokenUrl: cfg.tokenUrl,
        timeoutMs: ctx.timeoutMs,
        now: ctx.now,
        log: ctx.log,
      }),
    };
  }
  const source = shared.source;
  return { mode: 'sa-key', fetchSourceToken: () => source.fetchSourceToken() };
}

/**
 * Fallback source credential (GOOGLE_AUTH_MODE=sa-key): the service-account key JSON the rotation timer
 * keeps in Key Vault (GOOGLE_SA_KEY_SECRET), read through the Function's managed identity, exchanged at
 * Google's OAuth token endpoint (JWT bearer) for a cloud-platform token. That account then needs
 * roles/iam.serviceAccountTokenCreator on every service account the policy names.
 */
export function createSaKeySource(ctx: SourceCredentialContext): SourceCredential {
  // The source outlives any one request: its lines carry no request's correlation id.
  return saKeySourceFromSettings({
    timeoutMs: ctx.timeoutMs,
    now: ctx.now,
    identities: ctx.identities,
    log: (ctx.logger ?? createLogger)({ fn: 'google.sa-key' }),
  });
}
