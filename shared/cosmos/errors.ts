import { BrokerError } from '../errors';
import { networkFailure, upstreamStatusFailure } from '../upstream/failure';

/** The fields of @azure/cosmos' ErrorResponse / TimeoutError the broker reads. */
interface CosmosErrorLike {
  name?: string;
  code?: number | string;
  substatus?: number;
  retryAfterInMs?: number;
  retryAfterInMilliseconds?: number;
  body?: { code?: string };
}

export function cosmosStatus(err: unknown): number | undefined {
  const c = (err as CosmosErrorLike)?.code;
  return typeof c === 'number' ? c : undefined;
}

/**
 * Map any @azure/cosmos failure to a client-safe BrokerError; Cosmos' own text stays in `cause`.
 * - 429 after the SDK spent the throttle budget → 503 with Retry-After from `x-ms-retry-after-ms`;
 * - 404 (database or container of the rule missing) → 502 target_misconfigured;
 * - 401/403 (the broker's key refused) → 403 upstream_denied; other 4xx → 502 (the broker built a bad request);
 * - 5xx → 502/503/504; timeouts → 504; network → 503.
 */
export function cosmosFailure(err: unknown, what: string): BrokerError {
  if (err instanceof BrokerError) return err;
  const e = err as CosmosErrorLike;
  if (e?.code === 'TimeoutError' || e?.name === 'TimeoutError' || e?.name === 'AbortError') {
    return new BrokerError('upstream_timeout', 'CosmosDB did not answer in time.', { cause: err });
  }
  const status = cosmosStatus(err);
  if (status === undefined) return networkFailure('CosmosDB', err);
  if (status === 429) {
    const ms = e.retryAfterInMs ?? e.retryAfterInMilliseconds ?? 1000;
    return new BrokerError('upstream_throttled', 'CosmosDB is throttling requests.', {
      cause: err,
      retryAfterSeconds: Math.max(1, Math.ceil(ms / 1000)),
    });
  }
  if (status === 404) {
    return new BrokerError('target_misconfigured', `The CosmosDB ${what} this policy rule names does not exist.`, { cause: err });
  }
  if (status === 401 || status === 403) {
    return new BrokerError('upstream_denied', 'CosmosDB refused the broker (HTTP ' + status + ').', { cause: err });
  }
  if (status === 408) return new BrokerError('upstream_timeout', 'CosmosDB timed out.', { cause: err });
  if (status >= 400 && status < 500) {
    return new BrokerError('upstream_error', `CosmosDB rejected the request (HTTP ${status}).`, { cause: err });
  }
  const b = upstreamStatusFailure('CosmosDB', status);
  return new BrokerError(b.code, b.message, { cause: err, retryAfterSeconds: b.retryAfterSeconds });
}
