import { ManagedIdentities } from '../azure/managed-identity';
import { CallerLogins } from '../cloudsql/caller-chain';
import { CallerPools } from '../query/caller-pools';
import type { CosmosAccounts } from '../cosmos/client';
import { GoogleTokens } from '../google/tokens';
import { createLogger, stdoutSink, type LogFields, type Logger, type LogSink } from '../observability/log';
import { PolicyHolder } from '../policy/current';
import { QueryPools } from '../query/pools';
import { SETTINGS_RECHECK_MS, type Section, type SectionValues, type SettingSpec } from '../config/settings';

/**
 * The composition root: the app's process-wide objects (policy store, Google token services, Cosmos clients and
 * caches, managed identities, query pools, clock, log sink), each built on first use, so a cold start builds only
 * what its first request needs. The Functions use one per process (`appContext()`); handlers are made from a
 * context (shared/app/handlers.ts), request code reaches it as `scope.app`, providers as `input.app`.
 */

export interface ContextOptions {
  /** The clock of the caches (default Date.now). */
  readonly now?: () => number;
  /** Where log records go (default: JSON lines on stdout). */
  readonly logSink?: LogSink;
  /**
   * How often app settings are re-read from process.env (default SETTINGS_RECHECK_MS: settings do not change during
   * the life of a Functions process). 0: on every read (a caller that rewrites process.env between calls).
   */
  readonly settingsRecheckMs?: number;
}

export class AppContext {
  readonly now: () => number;
  readonly settingsRecheckMs: number;
  private readonly logSink: LogSink;
  private policyHolder?: PolicyHolder;
  private googleTokens?: GoogleTokens;
  private cosmosLoaded?: CosmosAccounts;
  private cosmosAccounts?: Promise<CosmosAccounts>;
  private managedIdentities?: ManagedIdentities;
  private pools?: QueryPools;
  private logins?: CallerLogins;
  private perCallerPools?: CallerPools;

  constructor(opts: ContextOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.logSink = opts.logSink ?? stdoutSink;
    this.settingsRecheckMs = opts.settingsRecheckMs ?? SETTINGS_RECHECK_MS;
  }

  /** A logger writing to this context's sink. */
  logger(fields: LogFields = {}): Logger {
    return createLogger(fields, { sink: this.logSink, settingsRecheckMs: this.settingsRecheckMs });
  }

  /** A settings section, re-read as often as this context says; a bad setting is 503 config_invalid naming it. */
  settings<S extends Record<string, SettingSpec<unknown>>>(section: Section<S>): SectionValues<S> {
    return section.load(this.settingsRecheckMs);
  }

  /** The managed identity credentials, one per client id (each caches its tokens). */
  get identities(): ManagedIdentities {
    this.managedIdentities ??= new ManagedIdentities();
    return this.managedIdentities;
  }

  /** The policy store of the current settings and the policy to decide with. */
  get policy(): PolicyHolder {
    this.policyHolder ??= new PolicyHolder({
      identities: this.identities,
      log: this.logger({ fn: 'policy' }),
      settingsRecheckMs: this.settingsRecheckMs,
    });
    return this.policyHolder;
  }

  /** The Google token services (exchange and rotation) and the Cloud SQL tokens. */
  get google(): GoogleTokens {
    this.googleTokens ??= new GoogleTokens({
      now: this.now,
      identities: this.identities,
      logger: (fields) => this.logger(fields),
      settingsRecheckMs: this.settingsRecheckMs,
    });
    return this.googleTokens;
  }

  /** The CosmosDB account clients and issued-token caches (the Cosmos SDK is loaded on first use). */
  cosmos(): Promise<CosmosAccounts> {
    this.cosmosAccounts ??= import('../cosmos/client').then(
      (m) =>
        (this.cosmosLoaded = new m.CosmosAccounts({ identities: this.identities, settingsRecheckMs: this.settingsRecheckMs })),
    );
    return this.cosmosAccounts;
  }

  /** The CosmosDB clients once `cosmos()` has made them (what every later request finds), without a promise. */
  get loadedCosmos(): CosmosAccounts | undefined {
    return this.cosmosLoaded;
  }

  /** The query function's database pools. */
  get queryPools(): QueryPools {
    this.pools ??= new QueryPools({
      google: this.google,
      log: this.logger({ fn: 'query.pool' }),
      settingsRecheckMs: this.settingsRecheckMs,
    });
    return this.pools;
  }

  /** The caller identity mode's logins (Entra OBO → Google STS workforce), cached per caller. */
  get callerLogins(): CallerLogins {
    this.logins ??= new CallerLogins({ identities: this.identities, now: this.now, settingsRecheckMs: this.settingsRecheckMs });
    return this.logins;
  }

  /** The query function's per-caller pools (caller identity mode). */
  get callerPools(): CallerPools {
    this.perCallerPools ??= new CallerPools({
      logins: this.callerLogins,
      google: this.google,
      log: this.logger({ fn: 'query.caller-pool' }),
      now: this.now,
      settingsRecheckMs: this.settingsRecheckMs,
    });
    return this.perCallerPools;
  }

  /** Release what holds connections or timers: the database pools and the Cosmos clients (shutdown). */
  async close(): Promise<void> {
    const cosmos = this.cosmosAccounts;
    this.cosmosAccounts = undefined;
    await Promise.all([
      this.pools?.closeAll(),
      this.perCallerPools?.closeAll(),
      cosmos?.then((c) => c.close()).catch(() => undefined),
    ]);
  }
}

export function createContext(opts: ContextOptions = {}): AppContext {
  return new AppContext(opts);
}

let processContext: AppContext | undefined;

/** The process's context (what the Functions run with), built on first use. */
export function appContext(): AppContext {
  processContext ??= createContext();
  return processContext;
}
