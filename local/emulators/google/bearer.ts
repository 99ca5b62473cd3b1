import type { EmuRequest, EmuResponse } from '../harness';
import { googleError, type GoogleState, type GoogleToken } from './state';

/**
 * The `Authorization: Bearer` check every Google API emulator makes (IAM keys, IAM Credentials, SQL Admin): the
 * token must be present, live in the shared GoogleState (issued by STS, IAM Credentials or the OAuth endpoint, not
 * expired) and carry one of the API's scopes. Google's answers: 401 UNAUTHENTICATED for a missing or an unknown /
 * expired token, 403 PERMISSION_DENIED "Request had insufficient authentication scopes." for a token without the
 * scope. The services word their 401 messages a little differently; each passes its own.
 */
export interface GoogleBearerCheck {
  /** The token must carry at least one of these scopes. */
  readonly scopes: readonly string[];
  /** Only access tokens are accepted (a federated STS token is then as good as unknown). Default: any kind. */
  readonly accessTokensOnly?: boolean;
  /** The 401 message when there is no bearer token. */
  readonly missingMessage: string;
  /** The 401 message when the token is unknown or expired. */
  readonly invalidMessage: string;
  /** How the service shapes an error (default: `googleError`, Google's `{"error": {code, message, status}}`). */
  readonly error?: (code: number, status: string, message: string) => EmuResponse;
}

/** Google's 401 messages (IAM and IAM Credentials; IAM adds a link to the missing-credential one). */
export const MISSING_CREDENTIAL =
  'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.';
export const INVALID_CREDENTIAL =
  'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.';

/** The bearer token of a request (`Authorization: Bearer <token>`), if any. */
function bearerToken(req: EmuRequest): string | undefined {
  return /^Bearer\s+(\S+)$/i.exec(req.header('authorization') ?? '')?.[1];
}

/** The caller's live token, or the error response the service answers with. */
export function checkGoogleBearer(req: EmuRequest, state: GoogleState, check: GoogleBearerCheck): GoogleToken | EmuResponse {
  const error = check.error ?? googleError;
  const token = bearerToken(req);
  if (!token) return error(401, 'UNAUTHENTICATED', check.missingMessage);
  const t = state.lookupToken(token);
  if (!t || (check.accessTokensOnly && t.kind !== 'access')) return error(401, 'UNAUTHENTICATED', check.invalidMessage);
  if (!t.scopes.some((s) => check.scopes.includes(s))) return insufficientScope(check.scopes, req);
  return t;
}

/**
 * Google's insufficient-scope refusal, as answered by googleapis.com APIs: 403 with
 * `WWW-Authenticate: Bearer realm="https://accounts.google.com/", error="insufficient_scope", scope="…"`, `errors[]`
 * reason `insufficientPermissions` and `details[]` ErrorInfo `ACCESS_TOKEN_SCOPE_INSUFFICIENT` (issues:
 * kwent/react-google-contacts #6 for the header, analogdotnow/Analog #296 for the body).
 */
function insufficientScope(scopes: readonly string[], req: EmuRequest): EmuResponse {
  const message = 'Request had insufficient authentication scopes.';
  return {
    status: 403,
    headers: {
      'content-type': 'application/json; charset=UTF-8',
      'www-authenticate': `Bearer realm="https://accounts.google.com/", error="insufficient_scope", scope="${scopes.join(' ')}"`,
    },
    body: {
      error: {
        code: 403,
        message,
        errors: [{ message: 'Insufficient Permission', domain: 'global', reason: 'insufficientPermissions' }],
        status: 'PERMISSION_DENIED',
        details: [
          {
            '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
            reason: 'ACCESS_TOKEN_SCOPE_INSUFFICIENT',
            domain: 'googleapis.com',
            metadata: { service: req.url.hostname || 'googleapis.com', method: req.path },
          },
        ],
      },
    },
  };
}

/** Whether a check answered with an error rather than a token. */
export const isEmuResponse = (x: GoogleToken | EmuResponse): x is EmuResponse => 'status' in x;
