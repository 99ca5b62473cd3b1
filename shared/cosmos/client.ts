import { Agent } from 'node:https';
import { CosmosClient } from '@azure/cosmos';
import { coreConfig } from '../config/core';
import { cosmosConfig, endpointOf, type CosmosConfig } from '../config/cosmos';
import { BrokerError } from '../errors';
import { KeyVaultSecrets } from '../keyvault/client';
import type { ManagedIdentities } from '../azure/managed-identity';
import { TokenCache } from '../lib/token-cache';
import { localEndpointCa, sharedHttpsAgent } from '../upstream/local-endpoints';
import { cosmosStatus } from './errors';

/**
 * One CosmosClient per account, built with the account key read from Key Vault through the Function's
 * managed identity (never from an app setting). The key is cached with its Key Vault version; when
 * Cosmos answers 401 (the key was regenerated), the key is read again and the call retried once with
 * the new version. Concurrent first uses of an account share one Key Vault read.
 */

export interface AccountHandle {
  readonly account: string;
  readonly endpoint: string;
  readonly client: CosmosClient;
  readonly keyVersion: string;
  /** When Key Vault was last asked whether the key version changed (key rotation: see refresh below). */
  checkedAtMs: number;
}

export function secretNameOf(cfg: CosmosConfig, account: string): string {
  return cfg.keySecretName.replace('{account}', account);
}

/** The HTTPS agent of an account endpoint (a local CA only for a loopback endpoint; else the SDK's own). */
export function agentFor(cfg: CosmosConfig, endpoint: string): Agent | undefined {
  const ca = localEndpointCa({ caFile: cfg.caFile, url: endpoint, setting: 'COSMOS_CA_FILE', service: 'CosmosDB' });
  // The SDK's own default agent is one keep-alive agent per process; a local CA gets one per process too.
  return ca ? sharedHttpsAgent(ca) : undefined;
}

/** A set of at most `max` strings: adding one more forgets the oldest. */
export class RecentSet {
  private readonly items = new Set<string>();
  constructor(readonly max: number) {}
  get size(): number {
    return this.items.size;
  }
  has(k: string): boolean {
    return this.items.has(k);
  }
  add(k: string): void {
    this.items.delete(k);
    this.items.add(k);
    if (this.items.size > this.max) this.items.delete(this.items.values().next().value as string);
  }
  delete(k: string): void {
    this.items.delete(k);
  }
  clear(): void {
    this.items.clear();
  }
}

/** An issued Cosmos credential in the broker's cache. */
export interface IssuedCosmosToken {
  readonly token: string;
  /** When the broker stops serving it from cache (real expiry minus the margin). */
  readonly expiresAtMs: number;
  /** When Cosmos stops accepting it. */
  readonly validUntilMs: number;
}

/**
 * The app's CosmosDB state (one per app context, shared/app/context.ts): the account clients, the issued resource
 * tokens and the Cosmos users known to exist, and the keyless (rbac) tokens.
 */
export class CosmosAccounts {
  private secrets: KeyVaultSecrets | undefined;
  private readonly handles = new Map<string, Promise<AccountHandle>>();
  /** Issued resource tokens (cosmos/provider.ts). */
  readonly resourceTokens = new TokenCache<IssuedCosmosToken>({ maxEntries: 10_000, minRemainingMs: 0 });
  /**
   * Users known to exist, per account/database (skips the user upsert on later misses): the 10,000 most recently
   * added, as many as the resource-token cache holds (forgetting one only costs one more upsert).
   */
  readonly knownUsers = new RecentSet(10_000);
  /** Keyless (Entra) tokens per identity and account (cosmos/rbac.ts). */
  readonly rbacTokens = new TokenCache<IssuedCosmosToken>({ maxEntries: 1_000, minRemainingMs: 0 });

  constructor(
    private readonly opts: {
      readonly identities: ManagedIdentities;
      /** How often the settings are re-read (the app context's). */
      readonly settingsRecheckMs?: number;
    },
  ) {}

  private keyVault(): KeyVaultSecrets {
    this.secrets ??= KeyVaultSecrets.fromSettings({ identities: this.opts.identities });
    return this.secrets;
  }

  private config(): CosmosConfig {
    return cosmosConfig.get(this.opts.settingsRecheckMs);
  }
  private async open(account: string): Promise<AccountHandle> {
    const cfg = this.config();
    const endpoint = endpointOf(cfg, account);
    if (!endpoint) {
      throw new BrokerError('target_misconfigured', `CosmosDB account "${account}" is not configured (COSMOS_ENDPOINTS).`);
    }
    const name = secretNameOf(cfg, account);
    const secret = await this.keyVault().get(name);
    if (!secret || !secret.enabled || secret.value.length === 0) {
      throw new BrokerError(
        'config_invalid',
        `The key of CosmosDB account "${account}" is missing from Key Vault (secret ${name}).`,
      );
    }
    return this.build(cfg, account, endpoint, secret);
  }

  private build(cfg: CosmosConfig, account: string, endpoint: string, secret: { value: string; version: string }): AccountHandle {
    const budgetMs = cfg.throttleBudgetMs;
    const agent = agentFor(cfg, endpoint);
    const client = new CosmosClient({
      endpoint,
      key: secret.value,
      ...(agent ? { agent } : {}),
      userAgentSuffix: 'token-broker',
      connectionPolicy: {
        requestTimeout: coreConfig.get(this.opts.settingsRecheckMs).upstreamTimeoutMs,
        retryOptions: {
          // The SDK honours x-ms-retry-after-ms on 429 until this budget is spent, then surfaces the 429.
          maxRetryAttemptCount: budgetMs === 0 ? 0 : 9,
          fixedRetryIntervalInMilliseconds: 0,
          maxWaitTimeInSeconds: Math.max(0, Math.floor(budgetMs / 1000)),
        },
      },
    });
    return { account, endpoint, client, keyVersion: secret.version, checkedAtMs: Date.now() };
  }

  /**
   * Key rotation switches issuance by writing a new Key Vault version; every instance picks it up within
   * COSMOS_KEY_REFRESH_SECONDS (the rotation waits that long, plus the longest token lifetime, before it regenerates
   * the previous key). A failed check keeps the current key (it still works: the rotation never regenerates the key
   * of the latest version) and is retried 30 s later; a request never fails because of it.
   */
  private async refreshed(account: string, pending: Promise<AccountHandle>, h: AccountHandle): Promise<AccountHandle> {
    const cfg = this.config();
    const now = Date.now();
    if (now - h.checkedAtMs < cfg.keyRefreshSeconds * 1000) return h;
    h.checkedAtMs = now; // one check at a time per handle
    try {
      const secret = await this.keyVault().get(secretNameOf(cfg, account));
      if (!secret || !secret.enabled || secret.value.length === 0 || secret.version === h.keyVersion) return h;
      const endpoint = endpointOf(cfg, account);
      if (!endpoint || this.handles.get(account) !== pending) return h;
      const next = Promise.resolve(this.build(cfg, account, endpoint, secret));
      this.handles.set(account, next);
      setTimeout(() => h.client.dispose(), 30_000).unref();
      return await next;
    } catch {
      h.checkedAtMs = now - cfg.keyRefreshSeconds * 1000 + 30_000;
      return h;
    }
  }

  accountHandle(account: string): Promise<AccountHandle> {
    let h = this.handles.get(account);
    if (!h) {
      h = this.open(account);
      this.handles.set(account, h);
      h.catch(() => this.handles.delete(account)); // a failed open is retried on the next call
    }
    return h;
  }

  /** Forget a handle whose key Cosmos refused (unless another call already replaced it). */
  private drop(account: string, h: AccountHandle, current: Promise<AccountHandle> | undefined): void {
    if (current && this.handles.get(account) === current) this.handles.delete(account);
    // Calls still running on the old client finish first; then its background timers are released.
    setTimeout(() => h.client.dispose(), 30_000).unref();
  }

  /** Run `fn` with the account's client; on a 401 re-read the key and retry once if it changed. */
  async withAccount<T>(account: string, fn: (h: AccountHandle) => Promise<T>): Promise<T> {
    let pending = this.accountHandle(account);
    const current = await pending;
    const h = await this.refreshed(account, pending, current);
    if (h !== current) pending = this.handles.get(account) ?? pending;
    try {
      return await fn(h);
    } catch (e) {
      if (cosmosStatus(e) !== 401) throw e;
      this.drop(account, h, pending);
      const fresh = await this.accountHandle(account);
      if (fresh.keyVersion === h.keyVersion) throw e; // same key: Cosmos refuses it for another reason
      return fn(fresh);
    }
  }

  /** Release every client (the app context closes). */
  close(): void {
    for (const h of this.handles.values()) void h.then((x) => x.client.dispose()).catch(() => undefined);
    this.handles.clear();
    this.secrets = undefined;
    this.resourceTokens.clear();
    this.knownUsers.clear();
    this.rbacTokens.clear();
  }
}
