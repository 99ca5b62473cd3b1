import { decodeJwt } from 'jose';
import type { Principal } from '../auth/principal';
import { subjectTokenOf } from '../auth/subject-token';
import { loadCore } from '../auth/frontdoor';
import { managedIdentityToken, type ManagedIdentities } from '../azure/managed-identity';
import { callerConfig, type CallerConfig } from '../config/caller';
import { googleConfig } from '../config/google';
import { BrokerError, toBrokerError } from '../errors';
import { JWT_SUBJECT_TOKEN_TYPE, SQL_LOGIN_SCOPE } from '../google/scopes';
import { TokenCache } from '../lib/token-cache';
import type { Logger } from '../observability/log';
import { fetchWithTimeout, retryAfterSeconds, upstreamStatusFailure } from '../upstream/failure';

/**
 * The caller identity mode's keyless chain (docs/cloudsql.md, "Two identity modes"), per caller:
 * 1. Entra on-behalf-of: the broker's app registration (CALLER_OBO_CLIENT_ID; for an MCP caller the MCP resource's app,
 *    CALLER_OBO_MCP_CLIENT_ID, when that is another app: oboClientFor) exchanges the caller's own validated
 *    token for a token for the workforce pool provider's app (CALLER_WORKFORCE_TOKEN_SCOPE), authenticated by the
 *    managed identity's token for `api://AzureADTokenExchange` as its client assertion (a federated identity
 *    credential: no secret, no certificate);
 * 2. Google STS, workforce pool: that token for a Google access token of the caller's workforce principal, scope
 *    sqlservice.login only, `options.userProject` = CALLER_WORKFORCE_USER_PROJECT;
 * 3. the result is the caller's Cloud SQL IAM login (the password of database user = the mapped google.subject).
 * Cached per caller (tenant + object id) with single-flight and refresh ahead; bounded in entries. Upstream text never
 * reaches a client message: refusals name what is missing (`detail.reason`), the upstream body stays in `cause`.
 */

export const TOKEN_EXCHANGE_SCOPE = 'api://AzureADTokenExchange/.default';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

export interface CallerLogin {
  /** The caller's Cloud SQL login token (a Google access token of their workforce principal). */
  readonly token: string;
  readonly expiresAtMs: number;
  /** The database user Cloud SQL admits it as (the provider's google.subject). */
  readonly databaseUser: string;
  readonly cached: boolean;
}

export interface CallerLoginDeps {
  readonly identities: ManagedIdentities;
  readonly now: () => number;
  readonly settingsRecheckMs?: number;
}

function required<K extends keyof CallerConfig>(cfg: CallerConfig, key: K, name: string): NonNullable<CallerConfig[K]> {
  const v = cfg[key];
  if (v === undefined || v === null)
    throw new BrokerError('config_invalid', `${name} is required for Cloud SQL grants with identity "caller".`, {
      detail: { setting: name },
    });
  return v;
}

/**
 * The app registration that makes the on-behalf-of request: Entra requires the incoming token's `aud` to be that app
 * (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow). A caller of the token and query
 * endpoints presents a token for CALLER_OBO_CLIENT_ID; an MCP caller one for the MCP resource's app, which is
 * CALLER_OBO_MCP_CLIENT_ID when that is a different app (docs/mcp.md, "Caller identity mode").
 */
function oboClientFor(subject: Principal, cfg: CallerConfig): string {
  const aud = subject.audience.toLowerCase();
  const names = (id: string) => aud === id.toLowerCase() || aud === `api://${id.toLowerCase()}`;
  if (cfg.oboMcpClientId && names(cfg.oboMcpClientId)) return cfg.oboMcpClientId;
  return required(cfg, 'oboClientId', 'CALLER_OBO_CLIENT_ID');
}

const refused = (reason: string, message: string, cause?: unknown) =>
  new BrokerError('caller_identity_refused', message, { cause, detail: { refusal: reason } });

/** Entra's refusal of the on-behalf-of request, by its AADSTS code (never its text). */
function oboFailure(status: number, body: unknown, retryAfter?: number): BrokerError {
  const b = (body ?? {}) as { error?: unknown; error_codes?: unknown };
  const codes = Array.isArray(b.error_codes) ? (b.error_codes as unknown[]).filter((c) => typeof c === 'number') : [];
  const has = (...c: number[]) => codes.some((x) => c.includes(x));
  const cause = { status, error: b.error, error_codes: codes };
  if (status >= 500 || status === 429) return upstreamStatusFailure('Entra ID', status, retryAfter);
  if (has(65001))
    return refused(
      'consent_required',
      'Entra ID has no consent for the broker to reach the database on your behalf (an administrator must grant it).',
      cause,
    );
  if (has(500133)) return new BrokerError('token_expired', 'The subject token expired.', { cause, party: 'subject' });
  if (has(50013)) return refused('assertion_rejected', 'Entra ID refused to act on your behalf with the presented token.', cause);
  if (has(70021, 700211, 700212, 700213, 7002138, 700024, 7000218, 5002727))
    return new BrokerError(
      'upstream_denied',
      "Entra ID refused the broker's federated credential for the on-behalf-of exchange (deployment set-up).",
      { cause, detail: { refusal: 'federated_credential' } },
    );
  return new BrokerError('upstream_denied', 'Entra ID refused the on-behalf-of exchange.', {
    cause,
    detail: { refusal: 'obo_refused' },
  });
}

/** Google STS's refusal of the workforce exchange, by its OAuth error (never its text). */
function stsFailure(status: number, body: unknown, retryAfter?: number): BrokerError {
  const error = (body as { error?: unknown } | undefined)?.error;
  const cause = { status, error };
  if (status >= 500 || status === 429) return upstreamStatusFailure('Google STS', status, retryAfter);
  if (error === 'unauthorized_client')
    return refused(
      'attribute_condition',
      "The workforce pool provider's attribute condition does not admit you (Google STS refused the exchange).",
      cause,
    );
  if (error === 'invalid_grant')
    return refused('workforce_token_rejected', 'Google STS refused your on-behalf-of token for the workforce pool.', cause);
  return new BrokerError('upstream_denied', 'Google STS refused the workforce exchange (deployment set-up).', {
    cause,
    detail: { refusal: 'workforce_provider' },
  });
}

async function readJson(res: Response): Promise<unknown> {
  return res.json().catch(() => undefined);
}

export class CallerLogins {
  private readonly cache: TokenCache<Omit<CallerLogin, 'cached'>>;

  constructor(private readonly deps: CallerLoginDeps) {
    const cfg = this.config();
    this.cache = new TokenCache({
      maxEntries: cfg?.maxLoginTokens ?? 10000,
      // Served while 2 min are left; refreshed in the background in the last 5 min (the pools refresh on new
      // connections, the token exchange hands out at least 2 min).
      minRemainingMs: 120_000,
      refreshAheadMs: 300_000,
      now: deps.now,
    });
  }

  private config(): CallerConfig | undefined {
    try {
      return callerConfig.get(this.deps.settingsRecheckMs);
    } catch {
      return undefined;
    }
  }

  /** The caller's Cloud SQL login (cached per caller; concurrent misses share one OBO + STS chain). */
  async login(subject: Principal, log?: Logger): Promise<CallerLogin> {
    let cfg: CallerConfig;
    try {
      cfg = callerConfig.get(this.deps.settingsRecheckMs);
    } catch (e) {
      throw toBrokerError(e);
    }
    const key = `${subject.tenantId}/${subject.objectId}`;
    // get (not peek): a hit in the last minutes of the token's life also starts one background refresh.
    let fetched = false;
    const v = await this.cache.get(key, () => {
      fetched = true;
      return this.fetch(subject, cfg, log);
    });
    return { ...v, cached: !fetched };
  }

  /** Forget a caller's login (after the instance refused it: the next login runs the chain again). */
  forget(subject: Pick<Principal, 'tenantId' | 'objectId'>): void {
    this.cache.delete(`${subject.tenantId}/${subject.objectId}`);
  }

  private async fetch(subject: Principal, cfg: CallerConfig, log?: Logger): Promise<Omit<CallerLogin, 'cached'>> {
    const assertion = subjectTokenOf(subject);
    if (!assertion) throw new BrokerError('internal', 'The caller token is not available for the on-behalf-of exchange.');
    const clientId = oboClientFor(subject, cfg);
    const scope = required(cfg, 'workforceTokenScope', 'CALLER_WORKFORCE_TOKEN_SCOPE');
    const audience = required(cfg, 'workforceAudience', 'CALLER_WORKFORCE_AUDIENCE');
    const userProject = required(cfg, 'userProject', 'CALLER_WORKFORCE_USER_PROJECT');
    const google = googleConfig.get(this.deps.settingsRecheckMs);
    const core = loadCore(this.deps.settingsRecheckMs);
    const timeoutMs = core.upstreamTimeoutMs;

    // 1. The client assertion: the managed identity's token for Entra's token exchange audience.
    const mi = await managedIdentityToken(
      this.deps.identities.get(google.managedIdentityClientId),
      TOKEN_EXCHANGE_SCOPE,
      timeoutMs,
    );
    // 2. Entra on-behalf-of.
    const oboRes = await fetchWithTimeout(
      'Entra ID',
      `${core.authorityHost}/${encodeURIComponent(subject.tenantId)}/oauth2/v2.0/token`,
      {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({
          grant_type: JWT_BEARER,
          client_id: clientId,
          client_assertion_type: CLIENT_ASSERTION_TYPE,
          client_assertion: mi.token,
          assertion,
          scope,
          requested_token_use: 'on_behalf_of',
        }).toString(),
      },
      timeoutMs,
    );
    const oboBody = (await readJson(oboRes)) as { access_token?: unknown } | undefined;
    if (!oboRes.ok) throw oboFailure(oboRes.status, oboBody, retryAfterSeconds(oboRes.headers.get('retry-after')));
    const oboToken = oboBody?.access_token;
    if (typeof oboToken !== 'string' || oboToken.length === 0)
      throw new BrokerError('upstream_error', 'Entra ID answered the on-behalf-of exchange without a token.');
    let databaseUser: unknown;
    try {
      databaseUser = decodeJwt(oboToken)[cfg.databaseUserClaim];
    } catch {
      databaseUser = undefined;
    }
    if (typeof databaseUser !== 'string' || databaseUser.length === 0 || databaseUser.length > 63)
      throw refused(
        'no_database_user_claim',
        `Your on-behalf-of token has no usable "${cfg.databaseUserClaim}" claim to name your database user.`,
      );
    // 3. Google STS, workforce pool: the caller's Cloud SQL login token.
    const stsRes = await fetchWithTimeout(
      'Google STS',
      google.stsTokenUrl,
      {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({
          grant_type: TOKEN_EXCHANGE_GRANT,
          audience,
          scope: SQL_LOGIN_SCOPE,
          requested_token_type: ACCESS_TOKEN_TYPE,
          subject_token_type: JWT_SUBJECT_TOKEN_TYPE,
          subject_token: oboToken,
          options: JSON.stringify({ userProject }),
        }).toString(),
      },
      timeoutMs,
    );
    const stsBody = (await readJson(stsRes)) as { access_token?: unknown; expires_in?: unknown } | undefined;
    if (!stsRes.ok) throw stsFailure(stsRes.status, stsBody, retryAfterSeconds(stsRes.headers.get('retry-after')));
    const token = stsBody?.access_token;
    const expiresIn = stsBody?.expires_in;
    if (typeof token !== 'string' || token.length === 0 || typeof expiresIn !== 'number' || !(expiresIn > 0))
      throw new BrokerError('upstream_error', 'Google STS answered the workforce exchange without a usable token.');
    log?.info('caller login obtained', { databaseUser, expiresInSeconds: expiresIn });
    return { token, expiresAtMs: this.deps.now() + expiresIn * 1000, databaseUser };
  }
}
