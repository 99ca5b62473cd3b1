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
  private held: { key: string; store: PolicyStore; cfg: PolicyConfig; path: string | undefined } | undefined;

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
    if (this.held?.cfg === cfg && this.held.path === path) return this.held.store;
    const key = [cfg.url, path, cfg.refreshSeconds, cfg.maxStaleSeconds, cfg.caFile, cfg.storageTimeoutMs, cfg.clientId].join(
      '|',
    );
    if (this.held?.key !== key) {
      const source = await this.sourceFor(cfg, path);
      if (this.held?.key !== key) {
        this.held = {
          key,
          cfg,
          path,
          store: new PolicyStore(source, {
            refreshMs: cfg.refreshSeconds * 1000,
            maxStaleMs: cfg.maxStaleSeconds * 1000,
            log: this.opts.log,
          }),
        };
      }
    }
    // The same values in new settings objects (the environment changed and changed back): remember these.
    if (this.held.cfg !== cfg || this.held.path !== path) this.held = { ...this.held, cfg, path };
    return this.held.store;
  }

  /**
   * The policy without a promise layer per step, when the settings are the ones the held store was made for (the
   * same memoized settings objects) and no read is due: what every cache hit finds. Undefined otherwise (then the
   * async path reads); throws what current() would reject with.
   */
  private checked(): PolicyVersion | undefined {
    const { cfg, path } = this.loadSettings();
    const held = this.held;
    return held?.cfg === cfg && held.path === path ? held.store.currentIfChecked() : undefined;
  }

  /** The policy to decide with (fresh within BROKER_POLICY_REFRESH_SECONDS), with its ETag and revision. */
  currentVersion(): Promise<PolicyVersion> {
    try {
      const v = this.checked();
      if (v) return Promise.resolve(v);
    } catch (e) {
      return Promise.reject(toBrokerError(e)); // a BrokerError already: the same object
    }
    return this.store().then((store) => store.current());
  }

  /**
   * The policy when no read is due (what every cache hit finds), without a promise; undefined when it must be read
   * (then `current()`). Throws what `current()` would reject with.
   */
  currentIfChecked(): Policy | undefined {
    try {
      return this.checked()?.policy;
    } catch (e) {
      throw toBrokerError(e); // a BrokerError already: the same object
    }
  }

  current(): Promise<Policy> {
    try {
      const v = this.checked();
      if (v) return Promise.resolve(v.policy);
    } catch (e) {
      return Promise.reject(toBrokerError(e)); // a BrokerError already: the same object
    }
    return this.store()
      .then((store) => store.current())
      .then((v) => v.policy);
  }
}
