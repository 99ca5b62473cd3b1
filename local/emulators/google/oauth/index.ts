import { createPublicKey } from 'node:crypto';
import { compactVerify, decodeJwt, decodeProtectedHeader, type JWTPayload } from 'jose';
import { startEmulator, type Emulator, type EmuResponse } from '../../harness';
import type { GoogleState, ServiceAccountKey } from '../state';

/**
 * Google's OAuth 2.0 token endpoint (oauth2.googleapis.com/token) for service-account keys: the
 * JWT-bearer grant (RFC 7523). The RS256 assertion is verified against the public keys registered for
 * the account in GoogleState (the one named by `kid`, or, without a kid as the Node library sends it,
 * any usable key): key enabled, not deleted, within its validity; aud = the token URI; exp - iat ≤ 1 h;
 * a scope. The access token is opaque, registered in GoogleState for the account, so the IAM
 * Credentials emulator accepts it as the source of an impersonation.
 * Errors are OAuth-style `{"error", "error_description"}`, as Google's token endpoint answers.
 */

const GOOGLE_TOKEN_AUDIENCES = ['https://oauth2.googleapis.com/token', 'https://www.googleapis.com/oauth2/v4/token'];
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

export interface GoogleOAuthOptions {
  state: GoogleState;
  port?: number;
  /** Access token lifetime (default 3600 s). */
  lifetimeSeconds?: number;
}

export interface GoogleOAuthEmulator extends Emulator {
  /** The token endpoint URL (POST). */
  readonly tokenUrl: string;
  /** Key ids that successfully signed an assertion, in order. */
  readonly keysUsed: readonly string[];
}

const err = (status: number, error: string, description: string): EmuResponse => ({
  status,
  body: { error, error_description: description },
});

export async function startGoogleOAuth(opts: GoogleOAuthOptions): Promise<GoogleOAuthEmulator> {
  const { state } = opts;
  const lifetime = opts.lifetimeSeconds ?? 3600;
  const keysUsed: string[] = [];

  const usable = (k: ServiceAccountKey) => {
    const now = state.now();
    return !k.disabled && Date.parse(k.validAfterTime) <= now + 60_000 && Date.parse(k.validBeforeTime) > now;
  };
  /** A key created less than GoogleState.keyPropagationMs ago has not propagated: Google answers as for an unknown key. */
  const propagated = (k: ServiceAccountKey) => k.usableAfterMs === undefined || state.now() >= k.usableAfterMs;

  const emu = await startEmulator({
    name: 'google-oauth',
    port: opts.port,
    errorBody: (status, message) => ({
      error: status === 429 ? 'rate_limit_exceeded' : status >= 500 ? 'internal_failure' : 'invalid_request',
      error_description: message,
    }),
    routes: [
      {
        method: 'POST',
        path: '/token',
        name: 'oauth.token',
        handle: async (req) => {
          const ct = req.header('content-type') ?? '';
          const params = ct.includes('application/json')
            ? new URLSearchParams(Object.entries((req.json() as Record<string, string> | undefined) ?? {}))
            : req.form();
          const grant = params.get('grant_type');
          if (grant !== JWT_BEARER) return err(400, 'unsupported_grant_type', `Invalid grant_type: ${grant ?? ''}`);
          const assertion = params.get('assertion');
          if (!assertion) return err(400, 'invalid_request', 'Missing required parameter: assertion');
          let header: { alg?: string; kid?: string };
          let claims: JWTPayload;
          try {
            header = decodeProtectedHeader(assertion);
            claims = decodeJwt(assertion);
          } catch {
            return err(400, 'invalid_grant', 'Invalid JWT: Failed audience check.');
          }
          if (header.alg !== 'RS256') return err(400, 'invalid_grant', 'Invalid JWT Signature.');
          const email = typeof claims.iss === 'string' ? claims.iss : '';
          const sa = state.serviceAccounts.get(email);
          if (!sa) return err(400, 'invalid_grant', 'Invalid grant: account not found');
          if (sa.disabled) return err(400, 'invalid_grant', 'Invalid grant: account disabled');
          if (typeof claims.aud !== 'string' || !GOOGLE_TOKEN_AUDIENCES.includes(claims.aud)) {
            return err(400, 'invalid_grant', 'Invalid JWT: Failed audience check. The expected audience is the token endpoint.');
          }
          const nowS = Math.floor(state.now() / 1000);
          if (
            typeof claims.iat !== 'number' ||
            typeof claims.exp !== 'number' ||
            claims.exp - claims.iat > 3600 ||
            claims.exp <= nowS ||
            claims.iat > nowS + 300
          ) {
            return err(
              400,
              'invalid_grant',
              'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.',
            );
          }
          const scope = typeof claims.scope === 'string' ? claims.scope.trim() : '';
          if (!scope) return err(400, 'invalid_scope', 'Invalid OAuth scope or ID token audience provided.');
          const keys = (state.keys.get(email) ?? []).filter((k) => k.keyType === 'USER_MANAGED');
          const candidates = header.kid ? keys.filter((k) => k.keyId === header.kid) : keys;
          let signer: ServiceAccountKey | undefined;
          for (const k of candidates) {
            try {
              await compactVerify(assertion, createPublicKey(k.publicKeyPem), { algorithms: ['RS256'] });
              signer = k;
              break;
            } catch {
              // try the next key
            }
          }
          // A deleted key, a key of another account, or a bad signature all look the same to the caller.
          if (!signer) return err(400, 'invalid_grant', 'Invalid JWT Signature.');
          if (!usable(signer))
            return err(400, 'invalid_grant', signer.disabled ? 'Invalid grant: key disabled' : 'Invalid JWT Signature.');
          if (!propagated(signer)) return err(400, 'invalid_grant', 'Invalid JWT Signature.');
          keysUsed.push(signer.keyId);
          const t = state.issueToken('access', email, scope.split(/\s+/), lifetime);
          return { status: 200, body: { access_token: t.token, expires_in: lifetime - 1, token_type: 'Bearer' } };
        },
      },
    ],
  });
  return Object.assign(emu, { tokenUrl: `${emu.url}/token`, keysUsed });
}
