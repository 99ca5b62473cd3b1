import { Agent } from 'node:https';
import { CosmosClient } from '@azure/cosmos';
import { coreConfig } from '../config/core';
import { cosmosConfig, endpointOf, type CosmosConfig } from '../config/cosmos';
import { BrokerError } from '../errors';
import { KeyVaultSecrets } from '../keyvault/client';
import { sandboxCa } from '../upstream/local-endpoints';
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

let secrets: KeyVaultSecrets | undefined;
const handles = new Map<string, Promise<AccountHandle>>();

function keyVault(): KeyVaultSecrets {
  secrets ??= KeyVaultSecrets.fromSettings();
  return secrets;
}

export function secretNameOf(cfg: CosmosConfig, account: string): string {
  return cfg.keySecretName.replace('{account}', account);
}

function agentFor(cfg: CosmosConfig, endpoint: string): Agent | undefined {
  const ca = sandboxCa({ caFile: cfg.caFile, url: endpoint, setting: 'COSMOS_CA_FILE', service: 'CosmosDB' });
  return ca ? new Agent({ keepAlive: true, ca }) : undefined;
}

async function open(account: string): Promise<AccountHandle> {
  const cfg = cosmosConfig.get();
  const endpoint = endpointOf(cfg, account);
  if (!endpoint) {
    throw new BrokerError('target_misconfigured', `CosmosDB account "${account}" is not configured (COSMOS_ENDPOINTS).`);
  }
  const name = secretNameOf(cfg, account);
  const secret = await keyVault().get(name);
  if (!secret || !secret.enabled || secret.value.length === 0) {
    throw new BrokerError(
      'config_invalid',
      `The key of CosmosDB account "${account}" is missing from Key Vault (secret ${name}).`,
    );
  }
  return build(cfg, account, endpoint, secret);
}

function build(cfg: CosmosConfig, account: string, endpoint: string, secret: { value: string; version: string }): AccountHandle {
  const budgetMs = cfg.throttleBudgetMs;
  const agent = agentFor(cfg, endpoint);
  const client = new CosmosClient({
    endpoint,
    key: secret.value,
    ...(agent ? { agent } : {}),
    userAgentSuffix: 'token-broker',
    connectionPolicy: {
      requestTimeout: coreConfig.get().upstreamTimeoutMs,
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
async function refreshed(account: string, pending: Promise<AccountHandle>, h: AccountHandle): Promise<AccountHandle> {
  const cfg = cosmosConfig.get();
  const now = Date.now();
  if (now - h.checkedAtMs < cfg.keyRefreshSeconds * 1000) return h;
  h.checkedAtMs = now; // one check at a time per handle
  try {
    const secret = await keyVault().get(secretNameOf(cfg, account));
    if (!secret || !secret.enabled || secret.value.length === 0 || secret.version === h.keyVersion) return h;
    const endpoint = endpointOf(cfg, account);
    if (!endpoint || handles.get(account) !== pending) return h;
    const next = Promise.resolve(build(cfg, account, endpoint, secret));
    handles.set(account, next);
    setTimeout(() => h.client.dispose(), 30_000).unref();
    return await next;
  } catch {
    h.checkedAtMs = now - cfg.keyRefreshSeconds * 1000 + 30_000;
    return h;
  }
}

function accountHandle(account: string): Promise<AccountHandle> {
  let h = handles.get(account);
  if (!h) {
    h = open(account);
    handles.set(account, h);
    h.catch(() => handles.delete(account)); // a failed open is retried on the next call
  }
  return h;
}

/** Forget a handle whose key Cosmos refused (unless another call already replaced it). */
function drop(account: string, h: AccountHandle, current: Promise<AccountHandle> | undefined): void {
  if (current && handles.get(account) === current) handles.delete(account);
  // Calls still running on the old client finish first; then its background timers are released.
  setTimeout(() => h.client.dispose(), 30_000).unref();
}

/** Run `fn` with the account's client; on a 401 re-read the key and retry once if it changed. */
export async function withAccount<T>(account: string, fn: (h: AccountHandle) => Promise<T>): Promise<T> {
  let pending = accountHandle(account);
  const current = await pending;
  const h = await refreshed(account, pending, current);
  if (h !== current) pending = handles.get(account) ?? pending;
  try {
    return await fn(h);
  } catch (e) {
    if (cosmosStatus(e) !== 401) throw e;
    drop(account, h, pending);
    const fresh = await accountHandle(account);
    if (fresh.keyVersion === h.keyVersion) throw e; // same key: Cosmos refuses it for another reason
    return fn(fresh);
  }
}

/** Forget every client and the Key Vault client (tests and settings changes). */
export function resetCosmosClients(): void {
  for (const h of handles.values()) void h.then((x) => x.client.dispose()).catch(() => undefined);
  handles.clear();
  secrets = undefined;
}
