import { storedOrderMs } from './version-order';
import type { TokenCredential } from '@azure/core-auth';
import { SecretClient, type KeyVaultSecret, type SecretProperties } from '@azure/keyvault-secrets';
import { keyVaultConfig, type KeyVaultConfig } from '../config/keyvault';
import { coreConfig } from '../config/core';
import { BrokerError } from '../errors';
import { managedIdentityFailure } from '../azure/managed-identity';
import { networkFailure, retryAfterSeconds, upstreamStatusFailure } from '../upstream/failure';
import { isLoopbackUrl, localEndpointCa } from '../upstream/local-endpoints';
import { recordUpstream } from '../observability/telemetry';
import { ManagedIdentities } from '../azure/managed-identity';

/**
 * Key Vault secrets through `@azure/keyvault-secrets` and the Function's managed identity. The client is
 * the unmodified SDK; for a loopback local development vault only, it trusts that endpoint's CA per client (core-rest-pipeline
 * `tlsOptions.ca`, since NODE_EXTRA_CA_CERTS is read only at process start) and skips the challenge
 * resource check (a local development vault is not a *.vault.azure.net host). Never `allowInsecureConnection`.
 */

export interface SecretClientDeps {
  /** Default: ManagedIdentityCredential (user-assigned when AZURE_CLIENT_ID is set). */
  credential?: TokenCredential;
  /** Default: keyVaultConfig.get(). */
  config?: KeyVaultConfig;
  /** Where the default credential comes from (the app context's identities). */
  identities?: ManagedIdentities;
}

/** The Function's managed identity (from the app context's identities). */
export function functionIdentity(identities: ManagedIdentities, clientId = keyVaultConfig.get().clientId): TokenCredential {
  return identities.get(clientId);
}

export function createSecretClient(deps: SecretClientDeps = {}): SecretClient {
  const cfg = deps.config ?? keyVaultConfig.get();
  const loopback = isLoopbackUrl(cfg.vaultUrl);
  const ca = localEndpointCa({ caFile: cfg.caFile, url: cfg.vaultUrl, setting: 'KEY_VAULT_CA_FILE', service: 'Key Vault' });
  return new SecretClient(
    cfg.vaultUrl,
    deps.credential ?? functionIdentity(deps.identities ?? new ManagedIdentities(), cfg.clientId),
    {
      disableChallengeResourceVerification: loopback,
      ...(ca ? { tlsOptions: { ca } } : {}),
      retryOptions: { maxRetries: cfg.maxRetries, retryDelayInMs: 200, maxRetryDelayInMs: 2000 },
    },
  );
}

interface RestErrorLike {
  name?: string;
  statusCode?: number;
  code?: string;
  response?: { headers?: { get(name: string): string | undefined } };
  details?: { error?: { code?: string; innerError?: { code?: string } } };
}

/** The inner Key Vault error code (e.g. SecretDisabled, ForbiddenByRbac), if any. */
export function keyVaultErrorCode(err: unknown): string | undefined {
  const e = err as RestErrorLike;
  return e?.details?.error?.innerError?.code ?? e?.details?.error?.code ?? e?.code;
}

/** Map any Key Vault SDK failure to a client-safe BrokerError (upstream text stays in `cause`). */
export function keyVaultFailure(err: unknown): BrokerError {
  if (err instanceof BrokerError) return err;
  const e = err as RestErrorLike;
  if (e?.name === 'AbortError') return new BrokerError('upstream_timeout', 'Key Vault did not answer in time.', { cause: err });
  // The managed identity failing is not Key Vault refusing: @azure/identity's AuthenticationError carries the token
  // endpoint's status (a 400 for an identity not attached), which must not read as a Key Vault 4xx.
  if (e?.name === 'CredentialUnavailableError' || e?.name === 'AuthenticationError') return managedIdentityFailure(err);
  if (typeof e?.statusCode === 'number') {
    const b = upstreamStatusFailure('Key Vault', e.statusCode, retryAfterSeconds(e.response?.headers?.get('retry-after')));
    const code = keyVaultErrorCode(err);
    return new BrokerError(b.code, b.message, {
      cause: err,
      retryAfterSeconds: b.retryAfterSeconds,
      ...(code && /^[A-Za-z]+$/.test(code) ? { detail: { upstreamCode: code } } : {}),
    });
  }
  return networkFailure('Key Vault', err);
}

/** keyVaultFailure, counted (telemetry: upstream key-vault, outcome = the broker code). */
function failed(err: unknown): BrokerError {
  const b = keyVaultFailure(err);
  recordUpstream('key-vault', b.code);
  return b;
}

export interface SecretVersionInfo {
  readonly name: string;
  readonly version: string;
  readonly enabled: boolean;
  readonly contentType?: string;
  readonly expiresOn?: Date;
  readonly createdOn?: Date;
  readonly tags: Readonly<Record<string, string>>;
}

function info(p: SecretProperties): SecretVersionInfo {
  return {
    name: p.name,
    version: p.version ?? '',
    enabled: p.enabled !== false,
    contentType: p.contentType,
    expiresOn: p.expiresOn,
    createdOn: p.createdOn,
    tags: { ...(p.tags ?? {}) },
  };
}

export interface SecretValue extends SecretVersionInfo {
  readonly value: string;
}

/**
 * The few secret operations the broker uses, each bounded by the upstream timeout and mapped to
 * BrokerErrors. `get` returns undefined for a secret (or version) that does not exist.
 */
export class KeyVaultSecrets {
  constructor(
    readonly client: SecretClient,
    private readonly timeoutMs: number = coreConfig.get().upstreamTimeoutMs,
  ) {}

  static fromSettings(deps: SecretClientDeps & { timeoutMs?: number } = {}): KeyVaultSecrets {
    return new KeyVaultSecrets(createSecretClient(deps), deps.timeoutMs ?? coreConfig.get().upstreamTimeoutMs);
  }

  private signal(): AbortSignal {
    return AbortSignal.timeout(this.timeoutMs);
  }

  private async call<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    try {
      const out = await fn(this.signal());
      recordUpstream('key-vault', 'ok');
      return out;
    } catch (e) {
      throw failed(e);
    }
  }

  async get(name: string, version?: string): Promise<SecretValue | undefined> {
    try {
      const s: KeyVaultSecret = await this.client.getSecret(name, { version, abortSignal: this.signal() });
      recordUpstream('key-vault', 'ok');
      return { ...info(s.properties), value: s.value ?? '' };
    } catch (e) {
      if ((e as RestErrorLike)?.statusCode === 404) {
        recordUpstream('key-vault', 'ok'); // an answer: the secret does not exist
        return undefined;
      }
      throw failed(e);
    }
  }

  set(
    name: string,
    value: string,
    opts: { contentType?: string; expiresOn?: Date; tags?: Record<string, string>; enabled?: boolean } = {},
  ): Promise<SecretVersionInfo> {
    return this.call(async (abortSignal) =>
      info((await this.client.setSecret(name, value, { ...opts, abortSignal })).properties),
    );
  }

  /** Every version (paged through nextLink), oldest first in the broker's write order (`storedOrderMs`). */
  async versions(name: string): Promise<SecretVersionInfo[]> {
    try {
      const out: SecretVersionInfo[] = [];
      for await (const p of this.client.listPropertiesOfSecretVersions(name, { abortSignal: this.signal() })) out.push(info(p));
      recordUpstream('key-vault', 'ok');
      const at = (v: SecretVersionInfo) => storedOrderMs(v.tags, v.createdOn?.getTime());
      return out.sort((a, b) => at(a) - at(b));
    } catch (e) {
      if ((e as RestErrorLike)?.statusCode === 404) {
        recordUpstream('key-vault', 'ok');
        return [];
      }
      throw failed(e);
    }
  }

  update(
    name: string,
    version: string,
    props: { enabled?: boolean; expiresOn?: Date; contentType?: string; tags?: Record<string, string> },
  ): Promise<SecretVersionInfo> {
    return this.call(async (abortSignal) =>
      info(await this.client.updateSecretProperties(name, version, { ...props, abortSignal })),
    );
  }
}
