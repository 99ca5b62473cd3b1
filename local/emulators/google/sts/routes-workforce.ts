import { jwtVerify, errors as joseErrors, type JWTPayload } from 'jose';
import type { EmuResponse } from '../../harness';
import { ACCESS_TOKEN_TYPE, DiscoveryError, oauthError, type StsContext } from './context';
import { workforceAudience, workforcePrincipal } from './providers';

export function workforceExchange(ctx: StsContext) {
  const { keysOf, workforce, workforceRules } = ctx;

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
    const untilSubjectExpiry = claims.exp! - Math.floor(ctx.state.now() / 1000);
    const lifetime = Math.max(1, Math.min(ctx.self.federatedLifetimeSeconds, untilSubjectExpiry));
    const t = ctx.state.issueToken('federated', workforcePrincipal(provider.poolId, subject), scopes, lifetime);
    return {
      status: 200,
      headers: { 'cache-control': 'no-store' },
      body: { access_token: t.token, issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', expires_in: lifetime },
    };
  };

  return workforceToken;
}
