import { BrokerError, isBrokerError } from '../errors';
import { networkFailure, retryAfterSeconds, upstreamStatusFailure } from '../upstream';

/**
 * Turn what google-auth-library (gaxios) or @azure/identity threw into a BrokerError. The upstream's
 * text never reaches the client message: it stays in `cause`, which only the (redacted) log sees.
 */

interface ErrorShape {
  name?: string;
  code?: string | number;
  status?: number;
  statusCode?: number;
  response?: { status?: number; headers?: { get?(name: string): string | null } };
  cause?: unknown;
}

function statusOf(err: ErrorShape): number | undefined {
  const s = err.response?.status ?? err.status ?? err.statusCode;
  return typeof s === 'number' && s >= 100 && s <= 599 ? s : undefined;
}

/**
 * Whether a thrown value (or its cause chain) says "timed out". The broker aborts upstream calls only
 * through timeouts, so an AbortError (what gaxios reports for its `timeout`) is one too.
 */
function isTimeout(err: unknown, depth = 0): boolean {
  if (!err || typeof err !== 'object' || depth > 4) return false;
  const e = err as ErrorShape;
  if (e.name === 'TimeoutError' || e.name === 'AbortError' || e.code === 'TimeoutError' || e.code === 'ETIMEDOUT' || e.code === 'UND_ERR_HEADERS_TIMEOUT') return true;
  return isTimeout(e.cause, depth + 1);
}

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

/**
 * Map a failure to get the Function's managed identity token. @azure/identity reports an unreachable or
 * failing endpoint as CredentialUnavailableError / AuthenticationError; neither is the caller's fault.
 */
export function managedIdentityFailure(err: unknown): BrokerError {
  if (isBrokerError(err)) return err;
  if (isTimeout(err)) return new BrokerError('upstream_timeout', 'The managed identity endpoint did not answer in time.', { cause: err });
  const status = statusOf((err ?? {}) as ErrorShape);
  if (status !== undefined && status >= 400 && status < 500 && status !== 429) {
    return new BrokerError('upstream_denied', 'The managed identity endpoint refused the broker.', { cause: err });
  }
  return new BrokerError('upstream_unavailable', 'The managed identity endpoint cannot be reached right now.', { cause: err });
}

function withCause(e: BrokerError, cause: unknown): BrokerError {
  return new BrokerError(e.code, e.message, { cause, retryAfterSeconds: e.retryAfterSeconds, detail: e.detail });
}

/** Race a promise against a deadline, so no upstream call can hang a request. */
export async function withDeadline<T>(p: Promise<T>, ms: number, onTimeout: () => BrokerError): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
    timer.unref?.();
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}
