import { KeyObject, verify as verifySignature } from 'node:crypto';
import {
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  UnsecuredJWT,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { BrokerError } from '../errors';
import { GUID } from '../config/settings';
import { v1Issuer, v2Issuer, type Principal } from './principal';

export interface ValidatorOptions {
  /** Base URL; keys are read from {authorityHost}/{tenant}/discovery/v2.0/keys. */
  readonly authorityHost: string;
  readonly allowedTenants: readonly string[];
  readonly clockSkewSeconds: number;
  readonly maxTokenBytes: number;
  readonly jwksCooldownSeconds: number;
  readonly jwksCacheMaxAgeSeconds: number;
  readonly timeoutMs: number;
  /** Injectable clock (ms since the epoch) for tests. */
  readonly now?: () => number;
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** The header of the claims-only view handed to jose once the signature has been checked (see `verify`). */
const CLAIMS_ONLY_HEADER = Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url');

/** The smallest RSA modulus accepted for a signing key (jose's own floor for RS256). */
const MIN_RSA_MODULUS_BITS = 2048;

export function jwksUrl(authorityHost: string, tenantId: string): string {
  return `${authorityHost.replace(/\/+$/, '')}/${tenantId}/discovery/v2.0/keys`;
}

/**
 * Validates Entra ID access tokens (v1 and v2): RS256 only, signature against the tenant's JWKS
 * (cached; refetched on an unknown kid after a cooldown), issuer of an allowed tenant, audience
 * allowlist, exp/nbf with bounded skew, tid and oid required, size capped.
 */
export class TokenValidator {
  private readonly jwks = new Map<string, JWTVerifyGetKey>();
  private readonly tenants: ReadonlySet<string>;
  /**
   * Tokens already verified, each for the audience set it was verified against (a hit needs the exact same token text
   * and the same set; another set verifies again and replaces the entry). A hit skips the RSA check (identical bytes
   * verify identically) but `exp` is re-checked on every hit, and entries are never kept past `exp` or
   * VERIFIED_MAX_AGE_MS: after that the token goes through the full check again. Keyed by the token's last
   * VERIFIED_KEY_CHARS characters (the end of its signature) and compared whole on a hit: a token arrives as a new
   * ~1 KB string in every request, and a Map keyed by the whole text hashes all of it per look-up (~2 µs each, two
   * per exchange); two tokens sharing the tail share the slot (the later one replaces the other), never an answer.
   */
  private readonly verified = new Map<string, { token: string; audiences: string; principal: Principal; untilMs: number }>();
  static readonly VERIFIED_KEY_CHARS = 64;
  static readonly VERIFIED_MAX_ENTRIES = 10_000;
  static readonly VERIFIED_MAX_AGE_MS = 5 * 60_000;

  constructor(private readonly opts: ValidatorOptions) {
    this.tenants = new Set(opts.allowedTenants.map((t) => t.toLowerCase()));
  }

  private keySet(tenantId: string): JWTVerifyGetKey {
    let set = this.jwks.get(tenantId);
    if (!set) {
      const remote = createRemoteJWKSet(new URL(jwksUrl(this.opts.authorityHost, tenantId)), {
        cooldownDuration: this.opts.jwksCooldownSeconds * 1000,
        cacheMaxAge: this.opts.jwksCacheMaxAgeSeconds * 1000,
        timeoutDuration: this.opts.timeoutMs,
      });
      // Anything but "no such key" while fetching keys means the key source is unreachable.
      set = async (header, input) => {
        try {
          return await remote(header, input);
        } catch (e) {
          if (e instanceof joseErrors.JWKSNoMatchingKey || e instanceof joseErrors.JWKSMultipleMatchingKeys) throw e;
          throw new BrokerError('jwks_unavailable', 'The identity provider signing keys cannot be fetched right now.', {
            cause: e,
          });
        }
      };
      this.jwks.set(tenantId, set);
    }
    return set;
  }

  /**
   * The principal of a token this validator already verified for exactly these audiences, while that verification
   * holds (see `verified`); undefined otherwise (then `validate`). Synchronous: a cache hit makes no promise.
   */
  verifiedPrincipal(token: string | undefined | null, audiences: readonly string[]): Principal | undefined {
    if (!token) return undefined;
    const key = token.slice(-TokenValidator.VERIFIED_KEY_CHARS);
    const hit = this.verified.get(key);
    if (hit?.token !== token || hit.audiences !== audienceSetOf(audiences)) return undefined;
    if ((this.opts.now ?? Date.now)() < hit.untilMs) return hit.principal;
    this.verified.delete(key);
    return undefined;
  }

  async validate(token: string | undefined | null, audiences: readonly string[]): Promise<Principal> {
    if (!token) throw new BrokerError('token_missing', 'A bearer token is required.');
    const known = this.verifiedPrincipal(token, audiences);
    if (known) return known;
    const now = this.opts.now ?? Date.now;
    const audienceSet = audienceSetOf(audiences);
    const principal = await this.verify(token, audiences);
    // Kept as a copy of its own: the request's token is cut from its body or header (a V8 sliced string), and the
    // cache would keep that whole request text alive with it, for each of up to VERIFIED_MAX_ENTRIES tokens.
    const kept = detached(token);
    const key = kept.slice(-TokenValidator.VERIFIED_KEY_CHARS);
    const untilMs = Math.min(
      (principal.expiresAt + this.opts.clockSkewSeconds) * 1000,
      now() + TokenValidator.VERIFIED_MAX_AGE_MS,
    );
    this.verified.set(key, { token: kept, audiences: audienceSet, principal, untilMs });
    if (this.verified.size > TokenValidator.VERIFIED_MAX_ENTRIES)
      this.verified.delete(this.verified.keys().next().value as string);
    return principal;
  }

  private async verify(token: string, audiences: readonly string[]): Promise<Principal> {
    if (Buffer.byteLength(token) > this.opts.maxTokenBytes) {
      throw new BrokerError('token_too_large', `The token exceeds ${this.opts.maxTokenBytes} bytes.`);
    }
    if (!JWT_SHAPE.test(token)) {
      const parts = token.split('.').length;
      throw new BrokerError(
        'token_malformed',
        parts === 5 ? 'Encrypted tokens (JWE) are not accepted; send a signed access token.' : 'The token is not a compact JWT.',
      );
    }
    let header: ReturnType<typeof decodeProtectedHeader>;
    let unverified: JWTPayload;
    try {
      header = decodeProtectedHeader(token);
      unverified = decodeJwt(token);
    } catch (e) {
      throw new BrokerError('token_malformed', 'The token header or payload cannot be decoded.', { cause: e });
    }
    if (header.alg !== 'RS256') throw new BrokerError('token_alg_not_allowed', 'Only RS256-signed tokens are accepted.');
    if (typeof header.kid !== 'string' || header.kid.length === 0) {
      throw new BrokerError('token_malformed', 'The token header has no key id (kid).');
    }
    const tid = unverified.tid;
    if (typeof tid !== 'string' || !GUID.test(tid))
      throw new BrokerError('token_claims_missing', 'The token has no tenant (tid) claim.');
    const tenantId = tid.toLowerCase();
    if (!this.tenants.has(tenantId))
      throw new BrokerError('token_tenant_not_allowed', 'Tokens from this tenant are not accepted.');

    // The RS256 signature is checked here, synchronously, with the key jose's JWKS set selects; then jose checks the
    // claims (the same function its jwtVerify runs after its own signature check). jwtVerify checks the signature
    // through crypto.verify's callback form, i.e. on the libuv thread pool: a hop to a worker thread and back per new
    // token, ~0.25 ms of CPU more than the check itself (~0.05-0.2 ms) and, on a busy host, milliseconds of waiting
    // for both threads to be scheduled (bench/README.md, "Cache misses and memory"). Header extensions (crit, b64)
    // are refused outright: Entra never sets them, and jose would refuse all but b64.
    if (header.crit !== undefined || 'b64' in header)
      throw new BrokerError('token_malformed', 'The token header carries an extension (crit, b64) that is not accepted.');
    let payload: JWTPayload;
    try {
      const [h, p, sig] = token.split('.') as [string, string, string];
      const key = await this.keySet(tenantId)({ alg: header.alg, kid: header.kid }, { payload: p, signature: sig });
      if (
        !(key instanceof KeyObject) ||
        key.type !== 'public' ||
        key.asymmetricKeyType !== 'rsa' ||
        (key.asymmetricKeyDetails?.modulusLength ?? 0) < MIN_RSA_MODULUS_BITS
      )
        throw new BrokerError('token_malformed', 'The token signing key is not an RSA public key of 2048 bits or more.');
      if (!verifySignature('sha256', Buffer.from(`${h}.${p}`), key, Buffer.from(sig, 'base64url')))
        throw new joseErrors.JWSSignatureVerificationFailed();
      ({ payload } = UnsecuredJWT.decode(`${CLAIMS_ONLY_HEADER}.${p}.`, {
        issuer: [v1Issuer(tenantId), v2Issuer(tenantId)],
        audience: [...audiences],
        clockTolerance: this.opts.clockSkewSeconds,
        currentDate: this.opts.now ? new Date(this.opts.now()) : undefined,
        requiredClaims: ['exp', 'iss', 'aud'],
      }));
    } catch (e) {
      throw mapJoseError(e);
    }
    const oid = payload.oid;
    if (typeof oid !== 'string' || !GUID.test(oid))
      throw new BrokerError('token_claims_missing', 'The token has no object id (oid) claim.');
    if (typeof payload.tid !== 'string' || payload.tid.toLowerCase() !== tenantId) {
      throw new BrokerError('token_claims_missing', 'The token tenant claim does not match its issuer.');
    }
    const version = payload.iss === v1Issuer(tenantId) ? '1.0' : '2.0';
    const appId = typeof payload.appid === 'string' ? payload.appid : typeof payload.azp === 'string' ? payload.azp : undefined;
    const aud = Array.isArray(payload.aud) ? payload.aud[0] : payload.aud;
    return Object.freeze({
      tenantId,
      objectId: oid.toLowerCase(),
      appId,
      roles: stringArray(payload.roles),
      scopes: typeof payload.scp === 'string' ? payload.scp.split(' ').filter(Boolean) : [],
      groups: stringArray(payload.groups),
      audience: aud ?? '',
      issuer: payload.iss ?? '',
      version,
      tokenId: typeof payload.uti === 'string' ? payload.uti : typeof payload.jti === 'string' ? payload.jti : undefined,
      expiresAt: payload.exp ?? 0,
      claims: stringClaims(payload),
    });
  }
}

/** The text as a string of its own (a flat copy), holding no larger string alive. */
export function detached(text: string): string {
  return Buffer.from(text, 'utf8').toString('utf8');
}

/** The audiences a verification held for, as one comparable string (joined once per settings array). */
const audienceSets = new WeakMap<readonly string[], string>();
function audienceSetOf(audiences: readonly string[]): string {
  if (audiences.length === 1) return audiences[0]!;
  let set = audienceSets.get(audiences);
  if (set === undefined) {
    set = audiences.join(' ');
    if (Object.isFrozen(audiences)) audienceSets.set(audiences, set);
  }
  return set;
}

function stringClaims(payload: Record<string, unknown>): Readonly<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(payload)) if (typeof v === 'string') out[k] = v;
  return Object.freeze(out);
}

function stringArray(v: unknown): readonly string[] {
  return Array.isArray(v) ? Object.freeze(v.filter((x): x is string => typeof x === 'string')) : [];
}

function mapJoseError(e: unknown): BrokerError {
  if (e instanceof BrokerError) return e;
  if (e instanceof joseErrors.JWTExpired) return new BrokerError('token_expired', 'The token has expired.', { cause: e });
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    switch (e.claim) {
      case 'nbf':
        return new BrokerError('token_not_yet_valid', 'The token is not valid yet (nbf).', { cause: e });
      case 'iat':
        return new BrokerError('token_not_yet_valid', 'The token was issued in the future (iat).', { cause: e });
      case 'iss':
        return new BrokerError('token_issuer_not_allowed', 'The token issuer is not accepted.', { cause: e });
      case 'aud':
        return new BrokerError('token_audience_not_allowed', 'The token audience is not accepted.', { cause: e });
      default:
        return new BrokerError('token_claims_missing', `The token claim "${e.claim}" is missing or invalid.`, { cause: e });
    }
  }
  if (e instanceof joseErrors.JOSEAlgNotAllowed)
    return new BrokerError('token_alg_not_allowed', 'Only RS256-signed tokens are accepted.', { cause: e });
  if (e instanceof joseErrors.JWKSNoMatchingKey)
    return new BrokerError('token_kid_unknown', 'The token signing key is not known.', { cause: e });
  if (e instanceof joseErrors.JWSSignatureVerificationFailed)
    return new BrokerError('token_signature_invalid', 'The token signature is invalid.', { cause: e });
  if (e instanceof joseErrors.JOSEError) return new BrokerError('token_malformed', 'The token is malformed.', { cause: e });
  return new BrokerError('token_malformed', 'The token could not be validated.', { cause: e });
}
