import { coreConfig } from '../config/core';
import { policyConfig, type PolicyConfig } from '../config/policy';
import { ConfigError } from '../errors';
import { BrokerError, toBrokerError } from '../errors';
import type { Logger } from '../observability/log';
import type { ManagedIdentities } from '../azure/managed-identity';
import { FilePolicySource, PolicyStore, type PolicySource, type PolicyVersion } from './store';
import type { Policy } from './schema';

/**
 * The policy every endpoint decides with: BROKER_POLICY_URL (Blob Storage, the live policy the admin API edits)
 * or BROKER_POLICY_PATH (a read-only file for local use and tests); exactly one. One store per app context
 * (shared/app/context.ts) and configuration, so its last good document and ETag survive requests.
 */
export class PolicyHolder {
  private held: { key: string; store: PolicyStore } | undefined;

  constructor(
    private readonly opts: {
      readonly identities: ManagedIdentities;
      readonly log: Logger;
      /** How often the settings are re-read (the app context's). */
      readonly settingsRecheckMs?: number;
    },
  ) {}

  private loadSettings(): { cfg: PolicyConfig; path: string | undefined } {
    try {
      return {
        cfg: policyConfig.get(this.opts.settingsRecheckMs),
        path: coreConfig.get(this.opts.settingsRecheckMs).policyPath,
      };
    } catch (e) {
      throw toBrokerError(e); // a ConfigError: config_invalid naming the settings
    }
  }

  private async sourceFor(cfg: PolicyConfig, path: string | undefined): Promise<PolicySource> {
    if (cfg.url && path) {
      throw new BrokerError('config_invalid', 'Set only one of BROKER_POLICY_URL and BROKER_POLICY_PATH.', {
        cause: new ConfigError('policy', ['BROKER_POLICY_URL and BROKER_POLICY_PATH are both set']),
      });
    }
    if (cfg.url) {
      const { BlobPolicySource } = await import('./blob-store'); // the storage SDK only where it is used
      return new BlobPolicySource({ ...cfg, url: cfg.url }, this.opts.identities.get(cfg.clientId));
    }
    if (path) return new FilePolicySource(path);
    throw new BrokerError('config_invalid', 'BROKER_POLICY_URL (or, for local use, BROKER_POLICY_PATH) is required.', {
      cause: new ConfigError('policy', ['BROKER_POLICY_URL or BROKER_POLICY_PATH is required']),
    });
  }

  /** The store of the current configuration. */
  async store(): Promise<PolicyStore> {
    const { cfg, path } = this.loadSettings();
    const key = [cfg.url, path, cfg.refreshSeconds, cfg.maxStaleSeconds, cfg.caFile, cfg.storageTimeoutMs, cfg.clientId].join(
      '|',
    );
    if (this.held?.key !== key) {
      const source = await this.sourceFor(cfg, path);
      if (this.held?.key !== key) {
        this.held = {
          key,
          store: new PolicyStore(source, {
            refreshMs: cfg.refreshSeconds * 1000,
            maxStaleMs: cfg.maxStaleSeconds * 1000,
            log: this.opts.log,
          }),
        };
      }
    }
    return this.held.store;
  }

  /** The policy to decide with (fresh within BROKER_POLICY_REFRESH_SECONDS), with its ETag and revision. */
  async currentVersion(): Promise<PolicyVersion> {
    return (await this.store()).current();
  }

  async current(): Promise<Policy> {
    return (await this.currentVersion()).policy;
  }
}
