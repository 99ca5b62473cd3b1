import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify, errors as joseErrors, type JWTPayload } from 'jose';

class DiscoveryError extends Error {}
class MissingKid extends Error {}
import { startEmulator, type Emulator, type EmuRequest, type EmuResponse } from '../../harness';
import type { GoogleState } from '../state';

/**
 * Google Security Token Service (`POST /v1/token`, https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token)
 * for workload identity federation with an OIDC provider (Entra ID): the subject token must be a valid,
 * unexpired RS256 JWT from the provider's issuer (checked against its JWKS) whose `aud` is one of the
 * provider's allowed audiences. The answer is an opaque federated access token registered in GoogleState
 * for `principal://iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/subject/SUB`.
 * Errors are OAuth error bodies (`{error, error_description}`), as the real STS answers.
 */

const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const SUBJECT_TOKEN_TYPES = ['urn:ietf:params:oauth:token-type:jwt', 'urn:ietf:params:oauth:token-type:id_token'];

export interface WorkloadIdentityProvider {
  readonly projectNumber: string;
  readonly poolId: string;
  readonly providerId: string;
  /**
   * The OIDC issuer the provider trusts (`issuer_uri`). For the broker: `https://sts.windows.net/{tid}/`, the issuer of the
   * v1.0 token a managed identity gets for the app registration Google's Azure guide sets up. The token's `iss` must
   * equal it exactly (no trailing-slash leniency: stricter than Google is known to be).
   */
  readonly issuer: string;
  /**
   * Where the issuer's discovery document is fetched: in production `{issuer without a trailing /}/.well-known/openid-configuration`
   * (OpenID Connect Discovery 1.0 §4); in the sandbox the Entra emulator's ({@link discoveryUrlOf} gives the production
   * form). Its `issuer` must equal `issuer`, and its `jwks_uri` gives the signing keys.
   */
  readonly discoveryUrl: string;
  /** Accepted `aud` values of subject tokens (empty: only `https://iam.googleapis.com/` + the provider name). */
  readonly allowedAudiences: readonly string[];
  /**
   * The provider's `attribute_condition` (CEL), as infra/gcp/main.tf writes it. The emulator evaluates the subset the
   * broker uses: `assertion.CLAIM == 'VALUE'` terms joined by `&&`; anything else is refused when STS starts.
   */
  readonly attributeCondition?: string;
  disabled?: boolean;
}

/**
 * A workforce identity pool provider (OIDC) of the organization: STS admits a subject token of `issuer` whose `aud` is
 * the provider's `clientId`, maps `google.subject` (and others) from the token's claims as `attributeMapping` says
 * (the `assertion.CLAIM` form only), applies `attributeCondition`, and requires `options.userProject`
 * (https://cloud.google.com/iam/docs/reference/sts/rest/v1/Options; the emulator refuses a workforce exchange without
 * it: strictest, docs/cloudsql.md). The federated principal is
 * `principal://iam.googleapis.com/locations/global/workforcePools/POOL/subject/SUBJECT`.
 */
export interface WorkforcePoolProvider {
  readonly poolId: string;
  readonly providerId: string;
  readonly issuer: string;
  readonly discoveryUrl: string;
  /** The OIDC provider's `client_id`: the only accepted `aud`. */
  readonly clientId: string;
  /** `google.subject` → `assertion.CLAIM` (infra/gcp/workforce.tf). */
  readonly attributeMapping: Readonly<Record<string, string>>;
  readonly attributeCondition?: string;
  disabled?: boolean;
}

export function workforceAudience(p: Pick<WorkforcePoolProvider, 'poolId' | 'providerId'>): string {
  return `//iam.googleapis.com/locations/global/workforcePools/${p.poolId}/providers/${p.providerId}`;
}

function workforcePrincipal(poolId: string, subject: string): string {
  return `principal://iam.googleapis.com/locations/global/workforcePools/${poolId}/subject/${subject}`;
}

/** Compile `assertion.CLAIM` mapping expressions (anything else is refused when STS starts). */
function compileAttributeMapping(m: Readonly<Record<string, string>>): (c: JWTPayload) => Record<string, unknown> {
  const entries = Object.entries(m).map(([attr, expr]) => {
    const mm = /^assertion\.([A-Za-z_][A-Za-z0-9_]*)$/.exec(expr.trim());
    if (!mm) throw new Error(`attribute_mapping: unsupported expression "${expr}" (the emulator maps assertion.CLAIM only)`);
    return [attr, mm[1]!] as const;
  });
  if (!entries.some(([a]) => a === 'google.subject')) throw new Error('attribute_mapping must map google.subject');
  return (c) => Object.fromEntries(entries.map(([a, claim]) => [a, c[claim]]));
}

export interface StsEmulator extends Emulator {
  readonly providers: readonly WorkloadIdentityProvider[];
  /** `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/providers/PROVIDER` */
  audienceOf(p: WorkloadIdentityProvider): string;
  /** The federated principal of a subject in a pool. */
  principalOf(p: Pick<WorkloadIdentityProvider, 'projectNumber' | 'poolId'>, subject: string): string;
  /** Lifetime of federated tokens, seconds (capped by the subject token's own expiry). */
  federatedLifetimeSeconds: number;
  readonly workforceProviders: readonly WorkforcePoolProvider[];
}

export interface StsOptions {
  readonly state: GoogleState;
  readonly providers: readonly WorkloadIdentityProvider[];
  readonly workforceProviders?: readonly WorkforcePoolProvider[];
  readonly port?: number;
  readonly federatedLifetimeSeconds?: number;
}

export function providerAudience(p: Pick<WorkloadIdentityProvider, 'projectNumber' | 'poolId' | 'providerId'>): string {
  return `//iam.googleapis.com/projects/${p.projectNumber}/locations/global/workloadIdentityPools/${p.poolId}/providers/${p.providerId}`;
}

/**
 * Google's STS reference (`subjectToken`): `iat` "Must be in the past", `exp` "Must be less than 48 hours after iat".
 * https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token
 */
const MAX_SUBJECT_TOKEN_LIFETIME_SECONDS = 48 * 3600;

type Condition = (claims: JWTPayload) => boolean;

/** Compile the CEL subset: `assertion.a == 'x' && assertion.b == 'y'` (no other operators, no functions). */
export function compileAttributeCondition(cel: string): Condition {
  const terms = cel.split('&&').map((t) => t.trim());
  const checks = terms.map((t) => {
    const m = /^assertion\.([A-Za-z_][A-Za-z0-9_]*)\s*==\s*'([^'\\]*)'$/.exec(t);
    if (!m)
      throw new Error(
        `attribute_condition: unsupported term "${t}" (the emulator evaluates assertion.CLAIM == 'VALUE' joined by &&)`,
      );
    const [, claim, value] = m as unknown as [string, string, string];
    return (c: JWTPayload) => c[claim] === value;
  });
  return (c) => checks.every((f) => f(c));
}

export function federatedPrincipal(p: Pick<WorkloadIdentityProvider, 'projectNumber' | 'poolId'>, subject: string): string {
  return `principal://iam.googleapis.com/projects/${p.projectNumber}/locations/global/workloadIdentityPools/${p.poolId}/subject/${subject}`;
}

const oauthError = (status: number, error: string, description: string): EmuResponse => ({
  status,
  headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' },
  body: { error, error_description: description },
});

/** STS accepts the form encoding (what client libraries send) and JSON with camelCase or snake_case fields. */
function readRequest(req: EmuRequest): Record<string, string> | undefined {
  const type = (req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') {
    const out: Record<string, string> = {};
    for (const [k, v] of req.form()) out[k] = v;
    return out;
  }
  if (type === 'application/json') {
    const j = req.json();
    if (!j || typeof j !== 'object' || Array.isArray(j)) return undefined;
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(j as Record<string, unknown>)) {
      const snake = k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      if (typeof v === 'string') out[snake] = v;
    }
    return out;
  }
  return undefined;
}

export async function startSts(opts: StsOptions): Promise<StsEmulator> {
  const providers = [...opts.providers];
  const conditions = new Map(
    providers.map((p) => [p, p.attributeCondition === undefined ? undefined : compileAttributeCondition(p.attributeCondition)]),
  );
  const jwks = new Map<string, ReturnType<typeof createRemoteJWKSet>>();
  /** OIDC discovery of the provider's issuer (as Google does), then its JWKS. Refetched after a failure. */
  const keysOf = async (
    p: Pick<WorkloadIdentityProvider, 'discoveryUrl' | 'issuer'>,
  ): Promise<ReturnType<typeof createRemoteJWKSet>> => {
    const cached = jwks.get(p.discoveryUrl);
    if (cached) return cached;
    const res = await fetch(p.discoveryUrl, { signal: AbortSignal.timeout(5000) });
    const doc = (await res.json().catch(() => undefined)) as { issuer?: unknown; jwks_uri?: unknown } | undefined;
    if (!res.ok || !doc || typeof doc.jwks_uri !== 'string')
      throw new DiscoveryError("The discovery document of the provider's issuer could not be fetched.");
    if (doc.issuer !== p.issuer)
      throw new DiscoveryError("The issuer in the discovery document does not match the provider's issuer.");
    const k = createRemoteJWKSet(new URL(doc.jwks_uri), { cooldownDuration: 0, timeoutDuration: 5000 });
    jwks.set(p.discoveryUrl, k);
    return k;
  };
  const workforce = [...(opts.workforceProviders ?? [])];
  const workforceRules = new Map(
    workforce.map((p) => [
      p,
      {
        map: compileAttributeMapping(p.attributeMapping),
        condition: p.attributeCondition === undefined ? undefined : compileAttributeCondition(p.attributeCondition),
      },
    ]),
  );

  /** The workforce exchange: `audience` names a workforce pool provider (already checked to have that form). */
  const workforceToken = async (f: Record<string, string>, scopes: string[]): Promise<EmuResponse> => {
    const provider = workforce.find((p) => workforceAudience(p) === f.audience);
    if (!provider || provider.disabled)
      return oauthError(
        400,
        'invalid_target',
        'The target service indicated by the "audience" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn\'t exist.',
      );
    // userProject: quota and billing project of a workforce token (no client id identifies one).
    let userProject: unknown;
    try {
      userProject = f.options === undefined ? undefined : (JSON.parse(f.options) as { userProject?: unknown }).userProject;
    } catch {
      return oauthError(400, 'invalid_request', 'Invalid value for "options": not a JSON object.');
    }
    if (f.options !== undefined && f.options.length > 4096)
      return oauthError(400, 'invalid_request', 'Invalid value for "options": longer than 4096 characters.');
    if (typeof userProject !== 'string' || !/^[a-z0-9][a-z0-9-]{0,31}$/.test(userProject))
      return oauthError(
        400,
        'invalid_request',
        'A workforce pool token exchange requires "options" with a "userProject" (a project number or ID of at most 32 characters).',
      );
    let claims: JWTPayload;
    try {
      ({ payload: claims } = await jwtVerify(f.subject_token!, await keysOf(provider), {
        algorithms: ['RS256'],
        issuer: provider.issuer,
        audience: provider.clientId,
        requiredClaims: ['iat', 'exp'],
        clockTolerance: 0,
      }));
    } catch (e) {
      if (e instanceof DiscoveryError) return oauthError(400, 'invalid_grant', `Invalid value for "subject_token". ${e.message}`);
      const why =
        e instanceof joseErrors.JWTExpired
          ? 'The token has expired.'
          : e instanceof joseErrors.JWTClaimValidationFailed
            ? `The ${e.claim} claim is invalid.`
            : 'The subject token could not be validated.';
      return oauthError(400, 'invalid_grant', `Invalid value for "subject_token". ${why}`);
    }
    const rules = workforceRules.get(provider)!;
    if (rules.condition && !rules.condition(claims))
      return oauthError(400, 'unauthorized_client', 'The given credential is rejected by the attribute condition.');
    const subject = rules.map(claims)['google.subject'];
    if (typeof subject !== 'string' || subject.length === 0 || subject.length > 127)
      return oauthError(
        400,
        'invalid_grant',
        'The mapped attribute "google.subject" must be a non-empty string of at most 127 characters.',
      );
    const untilSubjectExpiry = claims.exp! - Math.floor(opts.state.now() / 1000);
    const lifetime = Math.max(1, Math.min(self.federatedLifetimeSeconds, untilSubjectExpiry));
    const t = opts.state.issueToken('federated', workforcePrincipal(provider.poolId, subject), scopes, lifetime);
    return {
      status: 200,
      headers: { 'cache-control': 'no-store' },
      body: { access_token: t.token, issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', expires_in: lifetime },
    };
  };

  let self: { federatedLifetimeSeconds: number } = { federatedLifetimeSeconds: opts.federatedLifetimeSeconds ?? 3600 };

  const token = async (req: EmuRequest): Promise<EmuResponse> => {
    const f = readRequest(req);
    if (!f)
      return oauthError(400, 'invalid_request', 'Content-Type must be application/x-www-form-urlencoded or application/json.');
    if (f.grant_type !== TOKEN_EXCHANGE_GRANT) {
      return f.grant_type
        ? oauthError(400, 'unsupported_grant_type', `Invalid value for "grant_type": ${f.grant_type}`)
        : oauthError(400, 'invalid_request', 'Missing required parameter: "grant_type".');
    }
    for (const name of ['audience', 'subject_token', 'subject_token_type', 'requested_token_type']) {
      if (!f[name]) return oauthError(400, 'invalid_request', `Missing required parameter: "${name}".`);
    }
    if (f.requested_token_type !== ACCESS_TOKEN_TYPE) {
      return oauthError(400, 'invalid_request', `Invalid value for "requested_token_type": ${f.requested_token_type}`);
    }
    if (!SUBJECT_TOKEN_TYPES.includes(f.subject_token_type!)) {
      return oauthError(400, 'invalid_request', `Invalid value for "subject_token_type": ${f.subject_token_type}`);
    }
    if (f.audience!.startsWith('//iam.googleapis.com/locations/global/workforcePools/')) {
      const wfScopes = (f.scope ?? '').split(/\s+/).filter((x) => x.length > 0);
      if (wfScopes.length === 0) return oauthError(400, 'invalid_request', 'Missing required parameter: "scope".');
      return workforceToken(f, wfScopes);
    }
    const provider = providers.find((p) => providerAudience(p) === f.audience);
    if (!provider || provider.disabled) {
      return oauthError(
        400,
        'invalid_target',
        'The target service indicated by the "audience" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn\'t exist.',
      );
    }
    const scopes = (f.scope ?? '').split(/\s+/).filter((s) => s.length > 0);
    // An access token without a scope is refused (Google: "scope" is required when requesting an access token).
    if (scopes.length === 0) return oauthError(400, 'invalid_request', 'Missing required parameter: "scope".');
    let claims: JWTPayload;
    try {
      const allowed =
        provider.allowedAudiences.length > 0 ? [...provider.allowedAudiences] : [`https:${providerAudience(provider)}`];
      ({ payload: claims } = await jwtVerify(f.subject_token!, await keysOf(provider), {
        algorithms: ['RS256'],
        issuer: provider.issuer,
        audience: allowed,
        requiredClaims: ['iat', 'exp'],
        clockTolerance: 0,
        currentDate: new Date(),
      }));
      if (!decodeProtectedHeader(f.subject_token!).kid) throw new MissingKid();
    } catch (e) {
      if (e instanceof DiscoveryError) return oauthError(400, 'invalid_grant', `Invalid value for "subject_token". ${e.message}`);
      if (e instanceof MissingKid)
        return oauthError(400, 'invalid_grant', 'Invalid value for "subject_token". The JWT header must contain a "kid".');
      const why =
        e instanceof joseErrors.JWTExpired
          ? 'The token has expired.'
          : e instanceof joseErrors.JWTClaimValidationFailed
            ? `The ${e.claim} claim is invalid.`
            : e instanceof joseErrors.JWKSNoMatchingKey || e instanceof joseErrors.JWSSignatureVerificationFailed
              ? 'The token signature is invalid.'
              : 'The subject token could not be validated.';
      return oauthError(400, 'invalid_grant', `Invalid value for "subject_token". ${why}`);
    }
    if (claims.iat! > Math.floor(Date.now() / 1000)) {
      return oauthError(400, 'invalid_grant', 'Invalid value for "subject_token". The "iat" claim must be in the past.');
    }
    if (claims.exp! - claims.iat! >= MAX_SUBJECT_TOKEN_LIFETIME_SECONDS) {
      return oauthError(
        400,
        'invalid_grant',
        'Invalid value for "subject_token". The "exp" claim must be less than 48 hours after "iat".',
      );
    }
    const condition = conditions.get(provider);
    if (condition && !condition(claims))
      // unauthorized_client, not invalid_grant (terraform-google-modules/terraform-example-foundation #1362, #1404).
      return oauthError(400, 'unauthorized_client', 'The given credential is rejected by the attribute condition.');
    if (typeof claims.sub !== 'string' || claims.sub.length === 0 || claims.sub.length > 127) {
      return oauthError(
        400,
        'invalid_grant',
        'The mapped attribute "google.subject" must be a non-empty string of at most 127 characters.',
      );
    }
    const untilSubjectExpiry =
      typeof claims.exp === 'number' ? claims.exp - Math.floor(opts.state.now() / 1000) : self.federatedLifetimeSeconds;
    const lifetime = Math.max(1, Math.min(self.federatedLifetimeSeconds, untilSubjectExpiry));
    const t = opts.state.issueToken('federated', federatedPrincipal(provider, claims.sub), scopes, lifetime);
    return {
      status: 200,
      headers: { 'cache-control': 'no-store' },
      body: { access_token: t.token, issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', expires_in: lifetime },
    };
  };

  const emu = await startEmulator({
    name: 'google-sts',
    port: opts.port,
    errorBody: (_status, message) => ({ error: 'invalid_request', error_description: message }),
    routes: [{ method: 'POST', path: '/v1/token', name: 'sts.token', handle: token }],
  });
  const out: StsEmulator = Object.assign(emu, {
    providers,
    audienceOf: providerAudience,
    principalOf: federatedPrincipal,
    federatedLifetimeSeconds: opts.federatedLifetimeSeconds ?? 3600,
    workforceProviders: workforce,
  });
  self = out;
  return out;
}
