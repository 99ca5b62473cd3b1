import { BrokerError, isBrokerError } from '../errors';
import { networkFailure, retryAfterSeconds, upstreamStatusFailure } from '../upstream/failure';
import { isTimeout, statusOf, type ErrorShape } from '../upstream/error-shape';
import { withDeadline } from '../upstream/deadline';

export { withDeadline };

/**
 * Turn what google-auth-library (gaxios) or @azure/identity threw into a BrokerError. The upstream's
 * text never reaches the client message: it stays in `cause`, which only the (redacted) log sees.
 */

/** Map a failure of a Google call (STS via gaxios, or our own fetch) to the broker's codes. */
export function googleFailure(service: string, err: unknown): BrokerError {
  if (isBrokerError(err)) return err;
  const e = (err ?? {}) as ErrorShape;
  const status = statusOf(e);
  if (status !== undefined) {
    const ra = e.response?.headers?.get?.('retry-after');
    return withCause(upstreamStatusFailure(service, status, retryAfterSeconds(ra)), err);
  }
  if (isTimeout(err)) return new BrokerError('upstream_timeout', `${service} did not answer in time.`, { cause: err });
  return networkFailure(service, err);
}

function withCause(e: BrokerError, cause: unknown): BrokerError {
  const data = (cause as { response?: { data?: unknown; headers?: { get?: (n: string) => string | null } } })?.response;
  const refusal = googleRefusal(data?.data, data?.headers?.get?.('www-authenticate'));
  return new BrokerError(e.code, e.message, {
    cause,
    retryAfterSeconds: e.retryAfterSeconds,
    ...(refusal || e.detail ? { detail: { ...(e.detail ?? {}), ...(refusal ? { refusal } : {}) } } : {}),
  });
}

/**
 * What a Google refusal says an operator must fix, read from its machine-readable parts only (never its text):
 * - `missing_scope`: `WWW-Authenticate … error="insufficient_scope"`, ErrorInfo `ACCESS_TOKEN_SCOPE_INSUFFICIENT`, or
 *   `errors[].reason` `insufficientPermissions` (kwent/react-google-contacts #6, analogdotnow/Analog #296);
 * - `missing_iam_binding`: ErrorInfo `IAM_PERMISSION_DENIED` (google-github-actions/auth #340) or SQL Admin's
 *   `errors[].reason` `notAuthorized` (GoogleCloudPlatform/cloud-sql-proxy #79);
 * - `attribute_condition`: STS `unauthorized_client` (terraform-google-modules/terraform-example-foundation #1362).
 */
export type GoogleRefusal = 'missing_scope' | 'missing_iam_binding' | 'attribute_condition';

export function googleRefusal(body: unknown, wwwAuthenticate?: string | null): GoogleRefusal | undefined {
  if (wwwAuthenticate && /error="?insufficient_scope/.test(wwwAuthenticate)) return 'missing_scope';
  const b = body as { error?: unknown } | undefined;
  if (b?.error === 'unauthorized_client') return 'attribute_condition';
  const e = b?.error as { details?: unknown; errors?: unknown } | undefined;
  if (!e || typeof e !== 'object') return undefined;
  const list = (x: unknown): unknown[] => (Array.isArray(x) ? (x as unknown[]) : []);
  const reasons = [...list(e.details), ...list(e.errors)].map((d) => (d as { reason?: unknown } | null)?.reason);
  if (reasons.includes('ACCESS_TOKEN_SCOPE_INSUFFICIENT') || reasons.includes('insufficientPermissions')) return 'missing_scope';
  if (reasons.includes('IAM_PERMISSION_DENIED') || reasons.includes('notAuthorized')) return 'missing_iam_binding';
  return undefined;
}
