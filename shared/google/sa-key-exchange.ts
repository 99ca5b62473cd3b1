/**
 * A service-account key file and its exchange for an access token (RFC 7523 JWT-bearer grant at Google's OAuth
 * token endpoint): the sa-key source credential and the rotation's proof that a new key works.
 */
import { SignJWT, importPKCS8 } from 'jose';
import { BrokerError } from '../errors';
import { fetchWithTimeout } from '../upstream/failure';

/** The service-account key file fields the broker relies on. */
export interface ServiceAccountKeyFile {
  readonly type: 'service_account';
  readonly client_email: string;
  readonly private_key_id: string;
  readonly private_key: string;
  readonly project_id?: string;
}

/** The `aud` of every JWT-bearer assertion, whatever token URL it is posted to (a local development endpoint's, or Google's). */
const GOOGLE_TOKEN_AUDIENCE = 'https://oauth2.googleapis.com/token';

export function parseKeyFile(json: string): ServiceAccountKeyFile {
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    throw new BrokerError('target_misconfigured', 'The service-account key is not valid JSON.');
  }
  const o = v as Record<string, unknown>;
  if (
    !o ||
    o.type !== 'service_account' ||
    typeof o.client_email !== 'string' ||
    typeof o.private_key_id !== 'string' ||
    typeof o.private_key !== 'string'
  ) {
    throw new BrokerError('target_misconfigured', 'The service-account key file is incomplete.');
  }
  return o as unknown as ServiceAccountKeyFile;
}

/**
 * Exchange a key for an access token at Google's token endpoint with the JWT-bearer grant (RFC 7523):
 * an RS256 assertion with `kid` = the key id, so Google checks exactly this key.
 * google-auth-library's JWT client cannot be pointed at another token URL, hence this small signer.
 */
export async function exchangeKey(
  key: ServiceAccountKeyFile,
  opts: { tokenUrl: string; scope: string; nowMs: number; timeoutMs: number },
): Promise<{ accessToken: string; expiresAtMs: number }> {
  let assertion: string;
  try {
    const pk = await importPKCS8(key.private_key, 'RS256');
    const iat = Math.floor(opts.nowMs / 1000);
    assertion = await new SignJWT({ scope: opts.scope })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: key.private_key_id })
      .setIssuer(key.client_email)
      .setSubject(key.client_email)
      .setAudience(GOOGLE_TOKEN_AUDIENCE)
      .setIssuedAt(iat)
      .setExpirationTime(iat + 3600)
      .sign(pk);
  } catch (e) {
    throw new BrokerError('target_misconfigured', 'The service-account key cannot sign.', { cause: e });
  }
  const res = await fetchWithTimeout(
    'Google OAuth',
    opts.tokenUrl,
    {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion }).toString(),
    },
    opts.timeoutMs,
  );
  const body = (await res.json().catch(() => undefined)) as
    { access_token?: string; expires_in?: number; error?: string } | undefined;
  if (res.status === 200 && body?.access_token) {
    return { accessToken: body.access_token, expiresAtMs: opts.nowMs + (body.expires_in ?? 3600) * 1000 };
  }
  if (res.status >= 500 || res.status === 429) {
    throw new BrokerError(res.status === 429 ? 'upstream_throttled' : 'upstream_error', 'Google OAuth failed.', {
      cause: new Error(`HTTP ${res.status}`),
    });
  }
  const code = body?.error && /^[a-z_]+$/.test(body.error) ? body.error : 'rejected';
  throw new BrokerError('upstream_denied', 'Google refused the service-account key.', {
    detail: { upstreamError: code },
    cause: new Error(`HTTP ${res.status} ${code}`),
  });
}
