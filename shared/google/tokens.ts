import { TokenCache, SingleFlight } from '../lib/token-cache';
import { coreConfig } from '../config/core';
import { googleConfig, type GoogleConfig } from '../config/google';
import { BrokerError, toBrokerError } from '../errors';
import type { LogFields, Logger } from '../observability/log';
import { ManagedIdentities } from '../azure/managed-identity';
import { generateAccessToken, SourceTokenRejected } from './iamcredentials';
import { createSourceCredential } from './source';
import type { SourceCredential, SourceToken } from './source-types';

/**
 * Google access tokens for service accounts the policy names, via impersonation from one source
 * credential (keyless federation by default). Both layers are cached and single-flight:
 *
 * - the source (federated) token: one entry, served while it has more than the minimum remaining life;
 * - impersonated tokens: keyed by (service account, scope). An entry is served while it has more than
 *   GOOGLE_TOKEN_MIN_REMAINING_SECONDS left and no more life than the caller's cap allows (a token cannot
 *   be shortened, so a longer-lived entry is replaced by one minted for the smaller cap). Once less than
 *   min(GOOGLE_TOKEN_REFRESH_AHEAD_SECONDS, half its lifetime) is left, one background refresh replaces it. Concurrent misses for one
 *   (service account, scope, lifetime) share one STS call and one generateAccessToken call.
 *
 * google-auth-library and @azure/identity are loaded on the first miss only.
 */

export { SQL_LOGIN_SCOPE } from './scopes';
import { SQL_ADMIN_SCOPE, SQL_LOGIN_SCOPE } from './scopes';
/** generateAccessToken's default (and, without an org policy exception, maximum) lifetime. */
export const MAX_IMPERSONATION_LIFETIME_SECONDS = 3600;

export interface GoogleAccessToken {
  readonly token: string;
  /** From Google's expireTime. */
  readonly expiresAtMs: number;
  /** Whole seconds of life left when served (floored, never above the requested lifetime). */
  readonly expiresInSeconds: number;
  /** Served from the cache (no upstream call for this request). */
  readonly cached: boolean;
}

export interface TokenRequest {
  readonly serviceAccount: string;
  readonly scopes: readonly string[];
  /** Upper bound of the returned token's remaining life, 1–3600 s. */
  readonly lifetimeSeconds: number;
  readonly log?: Logger;
}

export interface GoogleTokenServiceOptions {
  readonly config: GoogleConfig;
  readonly timeoutMs: number;
  readonly now?: () => number;
  /** Override the source credential (the sa-key fallback, or tests); default from config.authMode. */
  readonly source?: SourceCredential;
  /** Where the default source credential's managed identity comes from (default: its own). */
  readonly identities?: ManagedIdentities;
  readonly logger?: (fields: LogFields) => Logger;
}

interface Entry {
  readonly token: string;
  readonly expiresAtMs: number;
  /** When the broker received it (its own clock), to size the refresh-ahead window. */
  readonly receivedAtMs: number;
}

export interface GoogleTokenStats {
  readonly hits: number;
  readonly misses: number;
  readonly coalesced: number;
  readonly refreshes: number;
  readonly sourceFetches: number;
  readonly impersonations: number;
  readonly cachedTokens: number;
}

const LOGIN_SCOPES: readonly string[] = Object.freeze([SQL_LOGIN_SCOPE]);

/** The request of a Cloud SQL IAM database login token (scope sqlservice.login only). */
function loginRequest(input: { serviceAccount: string; lifetimeSeconds: number; log?: Logger }): TokenRequest {
  return {
    serviceAccount: input.serviceAccount,
    scopes: LOGIN_SCOPES,
    lifetimeSeconds: Math.min(input.lifetimeSeconds, MAX_IMPERSONATION_LIFETIME_SECONDS),
    log: input.log,
  };
}

/** The cache entry of a service account's token with exactly these scopes (order and repeats do not matter). */
function cacheKeyOf(serviceAccount: string, scopes: readonly string[]): string {
  return `${serviceAccount}\u0000${scopes.length === 1 ? scopes[0] : [...new Set(scopes)].sort().join(' ')}`;
}

class GoogleTokenService {
  private readonly now: () => number;
  private readonly minRemainingMs: number;
  private readonly refreshAheadMs: number;
  private readonly tokens: TokenCache<Entry>;
  private readonly source: TokenCache<SourceToken>;
  private readonly flights = new SingleFlight<Entry>();
  private readonly refreshing = new Set<string>();
  private sourceCredential?: Promise<SourceCredential>;
  private counters = { hits: 0, misses: 0, coalesced: 0, refreshes: 0, sourceFetches: 0, impersonations: 0 };
  private readonly inflightKeys = new Set<string>();

  constructor(private readonly opts: GoogleTokenServiceOptions) {
    this.now = opts.now ?? Date.now;
    this.minRemainingMs = opts.config.minRemainingSeconds * 1000;
    this.refreshAheadMs = Math.max(opts.config.refreshAheadSeconds * 1000, this.minRemainingMs);
    this.tokens = new TokenCache<Entry>({
      maxEntries: opts.config.cacheMaxEntries,
      minRemainingMs: this.minRemainingMs,
      now: this.now,
    });
    // The federated token must outlive the impersonation call made with it; one minute is plenty.
    this.source = new TokenCache<SourceToken>({ maxEntries: 1, minRemainingMs: 60_000, now: this.now });
    if (opts.source) this.sourceCredential = Promise.resolve(opts.source);
  }

  /** The source credential's mode (keyless or sa-key). */
  get mode(): GoogleConfig['authMode'] {
    return this.opts.config.authMode;
  }

  /**
   * The source token itself (cloud-platform), from the same cache and single flight as the impersonations:
   * the rotation's own IAM calls use it (keyless mode), so the exchange and rotation make one STS call.
   */
  sourceAccessToken(): Promise<SourceToken> {
    return this.sourceToken();
  }

  /** Drop the cached source token (its holder answered 401). */
  dropSourceToken(): void {
    this.source.clear();
  }

  stats(): GoogleTokenStats {
    return { ...this.counters, cachedTokens: this.tokens.size };
  }

  clear(): void {
    this.tokens.clear();
    this.source.clear();
  }

  /**
   * A consumer was refused with the cached token (revoked or expired early upstream): forget it, so the
   * next request gets a fresh one.
   */
  forget(req: { serviceAccount: string; scopes: readonly string[] }): void {
    this.tokens.delete(cacheKeyOf(req.serviceAccount, req.scopes));
  }

  /** A token for the service account with exactly `scopes`, with at most `lifetimeSeconds` of life left. */
  async getAccessToken(req: TokenRequest): Promise<GoogleAccessToken> {
    const hit = this.cachedAccessToken(req);
    if (hit) return hit;
    const lifetime = req.lifetimeSeconds;
    const scopes = [...new Set(req.scopes)].sort();
    const key = cacheKeyOf(req.serviceAccount, scopes);
    const flightKey = `${key}\u0000${lifetime}`;
    if (this.inflightKeys.has(flightKey)) this.counters.coalesced++;
    else this.counters.misses++;
    const fresh = await this.fetchOnce(flightKey, key, req, scopes, lifetime);
    return this.served(fresh, lifetime, false);
  }

  /**
   * `getAccessToken`'s answer when the cache has it (counted as a hit; a refresh ahead started when due), without a
   * promise; undefined when it must be fetched (then `getAccessToken`). Throws for a lifetime out of range.
   */
  cachedAccessToken(req: TokenRequest): GoogleAccessToken | undefined {
    const lifetime = req.lifetimeSeconds;
    if (!Number.isInteger(lifetime) || lifetime < 1 || lifetime > MAX_IMPERSONATION_LIFETIME_SECONDS) {
      throw new BrokerError('invalid_parameter', `The token lifetime must be 1–${MAX_IMPERSONATION_LIFETIME_SECONDS} s.`);
    }
    const scopes = req.scopes.length === 1 ? req.scopes : [...new Set(req.scopes)].sort();
    const key = cacheKeyOf(req.serviceAccount, scopes);
    const capMs = (lifetime + 1) * 1000; // expireTime has whole seconds; expires_in is floored
    const cached = this.tokens.peek(key);
    if (!cached) return undefined;
    const left = cached.expiresAtMs - this.now();
    if (left >= capMs) return undefined;
    this.counters.hits++;
    if (left <= this.refreshWindowMs(cached)) this.refreshInBackground(key, req, scopes, lifetime);
    return this.served(cached, lifetime, true);
  }

  /**
   * Refresh ahead when less than min(refresh-ahead, half the token's life) is left, but never inside the
   * minimum remaining life (there the entry is a miss): a short-lived token is not refreshed on every hit.
   */
  private refreshWindowMs(e: Entry): number {
    const total = e.expiresAtMs - e.receivedAtMs;
    return Math.max(this.minRemainingMs, Math.min(this.refreshAheadMs, total / 2));
  }

  private served(e: Entry, lifetime: number, cached: boolean): GoogleAccessToken {
    const left = Math.floor((e.expiresAtMs - this.now()) / 1000);
    return { token: e.token, expiresAtMs: e.expiresAtMs, expiresInSeconds: Math.max(0, Math.min(lifetime, left)), cached };
  }

  private fetchOnce(
    flightKey: string,
    key: string,
    req: TokenRequest,
    scopes: readonly string[],
    lifetime: number,
  ): Promise<Entry> {
    return this.flights.run(flightKey, async () => {
      this.inflightKeys.add(flightKey);
      try {
        const entry = await this.impersonate(req, scopes, lifetime);
        // A token that can never be served from the cache (cap below the minimum life) is not stored,
        // so it does not displace a longer-lived one.
        if (entry.expiresAtMs - this.now() > this.minRemainingMs) this.tokens.set(key, entry);
        return entry;
      } finally {
        this.inflightKeys.delete(flightKey);
      }
    });
  }

  private refreshInBackground(key: string, req: TokenRequest, scopes: readonly string[], lifetime: number): void {
    const flightKey = `${key}\u0000${lifetime}`;
    if (this.refreshing.has(key) || this.inflightKeys.has(flightKey)) return;
    this.refreshing.add(key);
    this.counters.refreshes++;
    this.fetchOnce(flightKey, key, req, scopes, lifetime)
      .catch((e: unknown) => {
        // The served token is still good; the next request past the minimum life retries in the foreground.
        req.log?.warn('google token refresh-ahead failed', {
          serviceAccount: req.serviceAccount,
          code: (e as BrokerError).code,
          cause: e,
        });
      })
      .finally(() => this.refreshing.delete(key));
  }

  private async impersonate(req: TokenRequest, scopes: readonly string[], lifetime: number): Promise<Entry> {
    const call = async (source: SourceToken) => {
      this.counters.impersonations++;
      return generateAccessToken({
        endpoint: this.opts.config.iamCredentialsEndpoint,
        sourceToken: source.token,
        serviceAccount: req.serviceAccount,
        scopes,
        lifetimeSeconds: lifetime,
        timeoutMs: this.opts.timeoutMs,
      });
    };
    const received = (t: { token: string; expiresAtMs: number }): Entry => ({
      token: t.token,
      expiresAtMs: t.expiresAtMs,
      receivedAtMs: this.now(),
    });
    try {
      return received(await call(await this.sourceToken()));
    } catch (e) {
      if (!(e instanceof SourceTokenRejected)) throw e;
      // IAM no longer accepts the cached source token (revoked or expired early): get a new one, once.
      req.log?.warn('google source token rejected; refreshing it once', { serviceAccount: req.serviceAccount });
      this.source.clear();
      try {
        return received(await call(await this.sourceToken()));
      } catch (again) {
        if (again instanceof SourceTokenRejected) throw new BrokerError(again.code, again.message, { cause: again.cause });
        throw again;
      }
    }
  }

  private sourceToken(): Promise<SourceToken> {
    return this.source.get('source', async () => {
      this.counters.sourceFetches++;
      const cred = await this.credential();
      return cred.fetchSourceToken();
    });
  }

  private credential(): Promise<SourceCredential> {
    this.sourceCredential ??= createSourceCredential({
      config: this.opts.config,
      timeoutMs: this.opts.timeoutMs,
      now: this.now,
      identities: this.opts.identities ?? new ManagedIdentities(),
      logger: this.opts.logger,
    }).catch((e: unknown) => {
      this.sourceCredential = undefined; // a config fix (or a transient import failure) is picked up next time
      throw e;
    });
    return this.sourceCredential;
  }
}

// ---------- the app's Google tokens (one per app context, shared/app/context.ts) ----------

export interface GoogleTokensOptions {
  readonly now: () => number;
  readonly identities: ManagedIdentities;
  readonly logger: (fields: LogFields) => Logger;
  /** How often the GOOGLE_* settings are re-read (the app context's). */
  readonly settingsRecheckMs?: number;
}

/**
 * The app's Google token services for the current settings: the exchange's (rebuilt, with empty caches, when the
 * settings change) and the rotation's federated one.
 */
export class GoogleTokens {
  private instance: { config: GoogleConfig; timeoutMs: number; service: GoogleTokenService } | undefined;
  private federatedInstance: { config: GoogleConfig; timeoutMs: number; service: GoogleTokenService } | undefined;

  constructor(private readonly opts: GoogleTokensOptions) {}

  private settings(): { config: GoogleConfig; timeoutMs: number } {
    try {
      return {
        config: googleConfig.get(this.opts.settingsRecheckMs),
        timeoutMs: coreConfig.get(this.opts.settingsRecheckMs).upstreamTimeoutMs,
      };
    } catch (e) {
      throw toBrokerError(e); // a settings section that failed to load: config_invalid naming the bad settings
    }
  }

  /** The shared service for the current settings (rebuilt, with empty caches, when the settings change). */
  service(): GoogleTokenService {
    const { config, timeoutMs } = this.settings();
    // Sections are memoised on the raw settings: the same object back means nothing changed.
    if (!this.instance || this.instance.config !== config || this.instance.timeoutMs !== timeoutMs) {
      this.instance = {
        config,
        timeoutMs,
        service: new GoogleTokenService({
          config,
          timeoutMs,
          now: this.opts.now,
          identities: this.opts.identities,
          logger: this.opts.logger,
        }),
      };
    }
    return this.instance.service;
  }

  /**
   * The broker's federated Google identity (workload identity federation from the managed identity, the keyless
   * source credential): what the rotation calls the IAM keys API with. In keyless mode it is the exchange's own
   * source token (one cache, one STS call for both); in sa-key mode a keyless credential from the same GOOGLE_*
   * settings (the key being rotated does not administer itself; infra/gcp grants the federated principal).
   */
  federated(): GoogleTokenService {
    const svc = this.service();
    if (svc.mode === 'keyless') return svc;
    const { config, timeoutMs } = this.settings();
    if (!this.federatedInstance || this.federatedInstance.config !== config || this.federatedInstance.timeoutMs !== timeoutMs) {
      this.federatedInstance = {
        config,
        timeoutMs,
        service: new GoogleTokenService({
          config: { ...config, authMode: 'keyless' },
          timeoutMs,
          now: this.opts.now,
          identities: this.opts.identities,
          logger: this.opts.logger,
        }),
      };
    }
    return this.federatedInstance.service;
  }

  /**
   * A Cloud SQL IAM database login token (scope sqlservice.login only) for `serviceAccount`, with at most
   * `lifetimeSeconds` of life left (1–3600), from the shared cache / single-flight.
   */
  sqlLoginToken(input: { serviceAccount: string; lifetimeSeconds: number; log?: Logger }): Promise<GoogleAccessToken> {
    return this.service().getAccessToken(loginRequest(input));
  }

  /** `sqlLoginToken`'s answer when it is cached, without a promise; undefined when it must be fetched (then that). */
  cachedSqlLoginToken(input: { serviceAccount: string; lifetimeSeconds: number; log?: Logger }): GoogleAccessToken | undefined {
    return this.service().cachedAccessToken(loginRequest(input));
  }

  /**
   * The service account's token for the Cloud SQL Admin API alone (sqlservice.admin): the broker's own connect
   * settings look-up. Never handed to a caller (callers get the login-only token).
   */
  sqlAdminToken(input: { serviceAccount: string; log?: Logger }): Promise<GoogleAccessToken> {
    return this.service().getAccessToken({
      serviceAccount: input.serviceAccount,
      scopes: [SQL_ADMIN_SCOPE],
      lifetimeSeconds: MAX_IMPERSONATION_LIFETIME_SECONDS,
      log: input.log,
    });
  }

  /**
   * What the query function's Cloud SQL connector needs from one credential: the Admin API (sqlservice.admin: connect
   * settings, the ephemeral certificate) and the IAM database login (sqlservice.login, embedded in the certificate).
   * The connector takes a single auth client for both, so the token carries both scopes; it stays inside the broker.
   */
  sqlConnectorToken(input: { serviceAccount: string; lifetimeSeconds: number; log?: Logger }): Promise<GoogleAccessToken> {
    return this.service().getAccessToken({
      serviceAccount: input.serviceAccount,
      scopes: [SQL_ADMIN_SCOPE, SQL_LOGIN_SCOPE],
      lifetimeSeconds: Math.min(input.lifetimeSeconds, MAX_IMPERSONATION_LIFETIME_SECONDS),
      log: input.log,
    });
  }

  /** The database refused this login token: the next login asks Google for a fresh one. */
  forgetSqlLoginToken(input: { serviceAccount: string }): void {
    this.instance?.service.forget({ serviceAccount: input.serviceAccount, scopes: [SQL_ADMIN_SCOPE, SQL_LOGIN_SCOPE] });
  }
}
