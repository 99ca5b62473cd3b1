import { coreConfig } from '../config/core';
import { policyConfig, type PolicyConfig } from '../config/policy';
import { ConfigError } from '../errors';
import { BrokerError, toBrokerError } from '../errors';
import { createLogger } from '../observability/log';
import { FilePolicySource, PolicyStore, type PolicySource, type PolicyVersion } from './store';
import type { Policy } from './schema';

/**
 * The policy every endpoint decides with: BROKER_POLICY_URL (Blob Storage, the live policy the admin API edits)
 * or BROKER_POLICY_PATH (a read-only file for local use and tests); exactly one. One store per process and
 * configuration, so its last good document and ETag survive requests.
 */

let current: { key: string; store: PolicyStore } | undefined;

function loadSettings(): { cfg: PolicyConfig; path: string | undefined } {
  try {
    return { cfg: policyConfig.get(), path: coreConfig.get().policyPath };
  } catch (e) {
    throw toBrokerError(e); // a ConfigError: config_invalid naming the settings
  }
}

async function sourceFor(cfg: PolicyConfig, path: string | undefined): Promise<PolicySource> {
  if (cfg.url && path) {
    throw new BrokerError('config_invalid', 'Set only one of BROKER_POLICY_URL and BROKER_POLICY_PATH.', {
      cause: new ConfigError('policy', ['BROKER_POLICY_URL and BROKER_POLICY_PATH are both set']),
    });
  }
  if (cfg.url) {
    const { BlobPolicySource } = await import('./blob-store'); // the storage SDK only where it is used
    return new BlobPolicySource({ ...cfg, url: cfg.url });
  }
  if (path) return new FilePolicySource(path);
  throw new BrokerError('config_invalid', 'BROKER_POLICY_URL (or, for local use, BROKER_POLICY_PATH) is required.', {
    cause: new ConfigError('policy', ['BROKER_POLICY_URL or BROKER_POLICY_PATH is required']),
  });
}

/** The store of the current configuration. */
export async function policyStore(): Promise<PolicyStore> {
  const { cfg, path } = loadSettings();
  const key = [cfg.url, path, cfg.refreshSeconds, cfg.maxStaleSeconds, cfg.caFile, cfg.storageTimeoutMs, cfg.clientId].join('|');
  if (current?.key !== key) {
    const source = await sourceFor(cfg, path);
    if (current?.key !== key) {
      current = {
        key,
        store: new PolicyStore(source, {
          refreshMs: cfg.refreshSeconds * 1000,
          maxStaleMs: cfg.maxStaleSeconds * 1000,
          log: createLogger({ fn: 'policy' }),
        }),
      };
    }
  }
  return current.store;
}

/** The policy to decide with (fresh within BROKER_POLICY_REFRESH_SECONDS), with its ETag and revision. */
async function currentPolicyVersion(): Promise<PolicyVersion> {
  return (await policyStore()).current();
}

export async function currentPolicy(): Promise<Policy> {
  return (await currentPolicyVersion()).policy;
}

/** Tests: forget the store (a new sandbox, a new blob). */
export function resetPolicyStore(): void {
  current = undefined;
}
