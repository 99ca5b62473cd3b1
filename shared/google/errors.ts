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
  return new BrokerError(e.code, e.message, { cause, retryAfterSeconds: e.retryAfterSeconds, detail: e.detail });
}
