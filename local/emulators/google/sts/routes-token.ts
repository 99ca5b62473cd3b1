import { decodeProtectedHeader, jwtVerify, errors as joseErrors, type JWTPayload } from 'jose';
import type { EmuRequest, EmuResponse } from '../../harness';
import {
  ACCESS_TOKEN_TYPE,
  DiscoveryError,
  MAX_SUBJECT_TOKEN_LIFETIME_SECONDS,
  MissingKid,
  oauthError,
  readRequest,
  SUBJECT_TOKEN_TYPES,
  TOKEN_EXCHANGE_GRANT,
  type StsContext,
} from './context';
import { federatedPrincipal, providerAudience } from './providers';
import { workforceExchange } from './routes-workforce';

/** `POST /v1/token`: request checks, then the workforce exchange (routes-workforce.ts) or the workload one (here). */
export function tokenRoute(ctx: StsContext) {
  const { providers, conditions, keysOf } = ctx;
  const workforceToken = workforceExchange(ctx);

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
      typeof claims.exp === 'number' ? claims.exp - Math.floor(ctx.state.now() / 1000) : ctx.self.federatedLifetimeSeconds;
    const lifetime = Math.max(1, Math.min(ctx.self.federatedLifetimeSeconds, untilSubjectExpiry));
    const t = ctx.state.issueToken('federated', federatedPrincipal(provider, claims.sub), scopes, lifetime);
    return {
      status: 200,
      headers: { 'cache-control': 'no-store' },
      body: { access_token: t.token, issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', expires_in: lifetime },
    };
  };

  return token;
}
