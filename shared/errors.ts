/**
 * One closed union of reason codes, each mapped in one place (here) to an HTTP status, an
 * RFC 6749 §5.2 error (token-style endpoints) and an RFC 9457 problem title (everything else).
 *
 * A BrokerError's message is written for the client and must never carry upstream text, tokens or
 * key material. The `cause` is for logs only (and is itself redacted by the logger).
 */

export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_scope'
  | 'invalid_target'
  | 'access_denied'
  | 'temporarily_unavailable'
  | 'server_error';

interface CodeSpec {
  readonly status: number;
  readonly oauth: OAuthErrorCode;
  readonly title: string;
  /** `Retry-After` (seconds) answered with this code unless the error carries its own (e.g. the upstream's). */
  readonly retryAfter?: number;
}

const CODES = {
  // --- request shape ---
  bad_request: { status: 400, oauth: 'invalid_request', title: 'Bad request' },
  unsupported_media_type: { status: 415, oauth: 'invalid_request', title: 'Unsupported media type' },
  payload_too_large: { status: 413, oauth: 'invalid_request', title: 'Payload too large' },
  unsupported_grant_type: { status: 400, oauth: 'unsupported_grant_type', title: 'Unsupported grant type' },
  unsupported_token_type: { status: 400, oauth: 'invalid_request', title: 'Unsupported token type' },
  invalid_target: { status: 400, oauth: 'invalid_target', title: 'Invalid target' },
  invalid_parameter: { status: 400, oauth: 'invalid_request', title: 'Invalid parameter' },
  scope_not_supported: { status: 400, oauth: 'invalid_scope', title: 'Scope not supported' },
  not_found: { status: 404, oauth: 'invalid_request', title: 'Not found' },
  method_not_allowed: { status: 405, oauth: 'invalid_request', title: 'Method not allowed' },
  not_acceptable: { status: 406, oauth: 'invalid_request', title: 'Not acceptable' },
  request_timeout: { status: 408, oauth: 'invalid_request', title: 'Request timeout' },
  certificate_malformed: { status: 400, oauth: 'invalid_request', title: 'Client certificate header malformed' },
  policy_invalid: { status: 400, oauth: 'invalid_request', title: 'Policy document invalid' },
  precondition_failed: { status: 412, oauth: 'invalid_request', title: 'Precondition failed' },
  precondition_required: { status: 428, oauth: 'invalid_request', title: 'Precondition required' },

  // --- identity front door (401: who are you?) ---
  token_missing: { status: 401, oauth: 'invalid_client', title: 'Token missing' },
  token_malformed: { status: 401, oauth: 'invalid_client', title: 'Token malformed' },
  token_too_large: { status: 401, oauth: 'invalid_client', title: 'Token too large' },
  token_alg_not_allowed: { status: 401, oauth: 'invalid_client', title: 'Token algorithm not allowed' },
  token_kid_unknown: { status: 401, oauth: 'invalid_client', title: 'Token signing key unknown' },
  token_signature_invalid: { status: 401, oauth: 'invalid_client', title: 'Token signature invalid' },
  token_expired: { status: 401, oauth: 'invalid_client', title: 'Token expired' },
  token_not_yet_valid: { status: 401, oauth: 'invalid_client', title: 'Token not yet valid' },
  token_issuer_not_allowed: { status: 401, oauth: 'invalid_client', title: 'Token issuer not allowed' },
  token_audience_not_allowed: { status: 401, oauth: 'invalid_client', title: 'Token audience not allowed' },
  token_tenant_not_allowed: { status: 401, oauth: 'invalid_client', title: 'Token tenant not allowed' },
  token_claims_missing: { status: 401, oauth: 'invalid_client', title: 'Token claims missing' },
  certificate_invalid: { status: 401, oauth: 'invalid_grant', title: 'Client certificate not accepted' },

  // --- authorization (403: known identity, no grant) ---
  client_not_allowed: { status: 403, oauth: 'unauthorized_client', title: 'Client not allowed' },
  subject_denied: { status: 403, oauth: 'access_denied', title: 'Subject denied' },
  not_granted: { status: 403, oauth: 'access_denied', title: 'Not granted' },
  origin_not_allowed: { status: 403, oauth: 'access_denied', title: 'Origin not allowed' },
  insufficient_scope: { status: 403, oauth: 'invalid_scope', title: 'Insufficient scope' },
  role_required: { status: 403, oauth: 'access_denied', title: 'Role required' },
  upstream_denied: { status: 403, oauth: 'unauthorized_client', title: 'Upstream denied the broker' },
  db_permission_denied: { status: 403, oauth: 'access_denied', title: 'Database permission denied' },
  /** Caller identity mode: Entra, Google or the instance refused to let the caller act as themself (detail.reason says what is missing). */
  caller_identity_refused: { status: 403, oauth: 'access_denied', title: 'Caller identity refused' },
  key_creation_disabled: { status: 403, oauth: 'access_denied', title: 'Key creation disabled by organization policy' },

  // --- conflicts and limits ---
  conflict: { status: 409, oauth: 'invalid_request', title: 'Conflict' },
  key_limit_reached: { status: 409, oauth: 'invalid_request', title: 'Service-account key limit reached' },
  rate_limited: { status: 429, oauth: 'temporarily_unavailable', title: 'Too many requests', retryAfter: 5 },

  // --- dependencies (5xx, never 500) ---
  upstream_error: { status: 502, oauth: 'temporarily_unavailable', title: 'Upstream error', retryAfter: 5 },
  upstream_unavailable: { status: 503, oauth: 'temporarily_unavailable', title: 'Upstream unavailable', retryAfter: 5 },
  upstream_throttled: { status: 503, oauth: 'temporarily_unavailable', title: 'Upstream throttled', retryAfter: 5 },
  upstream_timeout: { status: 504, oauth: 'temporarily_unavailable', title: 'Upstream timeout', retryAfter: 5 },
  jwks_unavailable: { status: 503, oauth: 'temporarily_unavailable', title: 'Signing keys unavailable', retryAfter: 5 },
  db_unavailable: { status: 503, oauth: 'temporarily_unavailable', title: 'Database unavailable', retryAfter: 5 },
  query_timeout: { status: 504, oauth: 'temporarily_unavailable', title: 'Query timeout', retryAfter: 1 },
  config_invalid: { status: 503, oauth: 'temporarily_unavailable', title: 'Broker misconfigured', retryAfter: 30 },
  policy_unavailable: { status: 503, oauth: 'temporarily_unavailable', title: 'Policy unavailable', retryAfter: 5 },
  target_misconfigured: { status: 502, oauth: 'server_error', title: 'Target misconfigured' },

  // --- bugs: the only code that maps to 500 ---
  internal: { status: 500, oauth: 'server_error', title: 'Internal error' },
} as const satisfies Record<string, CodeSpec>;

export type ErrorCode = keyof typeof CODES;

export function specOf(code: ErrorCode): CodeSpec {
  return CODES[code];
}

export function isErrorCode(value: string): value is ErrorCode {
  return Object.prototype.hasOwnProperty.call(CODES, value);
}

/** Who presented the token that failed: the gateway (client) or the end caller (subject). */
export type Party = 'client' | 'subject';

export interface BrokerErrorOptions {
  cause?: unknown;
  /** Seconds the client should wait before retrying (sets `Retry-After`). */
  retryAfterSeconds?: number;
  /** Which token failed validation, for token_* codes. */
  party?: Party;
  /** Extra, client-safe fields (e.g. the parameter name that was bad). */
  detail?: Record<string, string | number | boolean>;
  /**
   * The `WWW-Authenticate` challenge to answer with instead of the default one (the MCP endpoint's, which names its
   * Protected Resource Metadata and the scope needed: RFC 9728 §5.1, RFC 6750 §3).
   */
  challenge?: string;
}

export class BrokerError extends Error {
  readonly code: ErrorCode;
  readonly retryAfterSeconds?: number;
  readonly party?: Party;
  readonly detail?: Record<string, string | number | boolean>;
  readonly challenge?: string;

  constructor(code: ErrorCode, message: string, options: BrokerErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BrokerError';
    this.code = code;
    this.retryAfterSeconds = options.retryAfterSeconds ?? (CODES[code] as CodeSpec).retryAfter;
    this.party = options.party;
    this.detail = options.detail;
    this.challenge = options.challenge;
  }

  get status(): number {
    return CODES[this.code].status;
  }

  /** The same error, attributed to the party whose token failed. */
  withParty(party: Party): BrokerError {
    return new BrokerError(this.code, this.message, {
      cause: this.cause,
      retryAfterSeconds: this.retryAfterSeconds,
      party,
      detail: this.detail,
      challenge: this.challenge,
    });
  }

  /** The same error, answered with this `WWW-Authenticate` challenge. */
  withChallenge(challenge: string): BrokerError {
    return new BrokerError(this.code, this.message, {
      cause: this.cause,
      retryAfterSeconds: this.retryAfterSeconds,
      party: this.party,
      detail: this.detail,
      challenge,
    });
  }
}

export function isBrokerError(err: unknown): err is BrokerError {
  return err instanceof BrokerError;
}

/** The OAuth error for a code: token failures of the subject are `invalid_grant`, of the client `invalid_client`. */
export function oauthErrorFor(err: BrokerError): OAuthErrorCode {
  const spec = CODES[err.code];
  if (err.code.startsWith('token_') && err.party === 'subject') return 'invalid_grant';
  return spec.oauth;
}

/** Anything thrown that is not a BrokerError is a bug: it becomes `internal` (500) and is logged in full. */
export function toBrokerError(err: unknown): BrokerError {
  if (isBrokerError(err)) return err;
  // A settings section that fails to load names the bad settings (never their secret values): 503, not 500.
  if (err instanceof ConfigError) return new BrokerError('config_invalid', err.message, { cause: err });
  return new BrokerError('internal', 'An unexpected error occurred; quote the correlation id to the operator.', {
    cause: err,
  });
}

export class ConfigError extends Error {
  constructor(
    readonly section: string,
    readonly problems: readonly string[],
  ) {
    super(`Invalid configuration (${section}): ${problems.join('; ')}`);
    this.name = 'ConfigError';
  }
}
