import { BrokerError } from '../errors';
import { googleRefusal } from './errors';
import { retryAfterSeconds, upstreamStatusFailure } from '../upstream/failure';
import { requestJson } from '../upstream/json-request';

/**
 * IAM Service Account Credentials `generateAccessToken`: the source token impersonates a service
 * account and gets an access token with exactly the given scopes and lifetime.
 * https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken
 */

const SERVICE = 'Google IAM Credentials';

export interface GenerateAccessTokenInput {
  readonly endpoint: string;
  readonly sourceToken: string;
  readonly serviceAccount: string;
  readonly scopes: readonly string[];
  readonly lifetimeSeconds: number;
  readonly timeoutMs: number;
}

export interface ImpersonatedToken {
  readonly token: string;
  /** From Google's `expireTime`, never a local guess. */
  readonly expiresAtMs: number;
}

/** IAM answered 401: the source token is no longer accepted (the caller may refresh it once). */
export class SourceTokenRejected extends BrokerError {
  constructor(cause: BrokerError) {
    super(cause.code, cause.message, { cause });
  }
}

function generateAccessTokenUrl(endpoint: string, serviceAccount: string): string {
  return `${endpoint.replace(/\/+$/, '')}/v1/projects/-/serviceAccounts/${encodeURIComponent(serviceAccount)}:generateAccessToken`;
}

export async function generateAccessToken(input: GenerateAccessTokenInput): Promise<ImpersonatedToken> {
  // node:http(s) rather than fetch: this is the Cloud SQL cache miss's one upstream call (shared/upstream/json-request.ts).
  // The deadline covers the body read too: a body that stalls past it is a timeout.
  const res = await requestJson(
    SERVICE,
    generateAccessTokenUrl(input.endpoint, input.serviceAccount),
    {
      method: 'POST',
      headers: { authorization: `Bearer ${input.sourceToken}`, 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ scope: [...input.scopes], lifetime: `${input.lifetimeSeconds}s` }),
    },
    input.timeoutMs,
  );
  if (res.ok && res.unreadable) throw new BrokerError('upstream_error', `${SERVICE} sent an unreadable answer.`);
  const body = res.body;
  if (!res.ok) {
    const err = upstreamStatusFailure(SERVICE, res.status, retryAfterSeconds(res.header('retry-after')));
    // Google's error status (e.g. PERMISSION_DENIED) is logged via cause; its message is not passed on.
    const status = (body as { error?: { status?: unknown } } | undefined)?.error?.status;
    // Which fix it needs (IAM binding vs scope), from Google's machine-readable parts only.
    const refusal = googleRefusal(body, res.header('www-authenticate'));
    const logged = new BrokerError(err.code, err.message, {
      cause: { httpStatus: res.status, googleStatus: typeof status === 'string' ? status : undefined, refusal },
      retryAfterSeconds: err.retryAfterSeconds,
      ...(refusal ? { detail: { refusal } } : {}),
    });
    if (res.status === 401) throw new SourceTokenRejected(logged);
    throw logged;
  }
  const b = body as { accessToken?: unknown; expireTime?: unknown } | undefined;
  const expiresAtMs = typeof b?.expireTime === 'string' ? Date.parse(b.expireTime) : NaN;
  if (typeof b?.accessToken !== 'string' || b.accessToken.length === 0 || !Number.isFinite(expiresAtMs)) {
    throw new BrokerError('upstream_error', `${SERVICE} sent an answer without accessToken/expireTime.`);
  }
  return { token: b.accessToken, expiresAtMs };
}
