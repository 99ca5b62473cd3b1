import { BrokerError } from '../errors';
import { httpOutcome, recordUpstream, upstreamSlug } from '../observability/telemetry';

/**
 * Classify a failure to reach an upstream (network, timeout) into the broker's codes. Upstream text is
 * never put in the client message; it stays in `cause` for the (redacted) log.
 */
export function networkFailure(service: string, err: unknown): BrokerError {
  const e = err as { name?: string; code?: string; cause?: { code?: string; name?: string } };
  const code = e?.code ?? e?.cause?.code;
  const name = e?.name ?? e?.cause?.name;
  if (
    name === 'TimeoutError' ||
    name === 'AbortError' ||
    code === 'ETIMEDOUT' ||
    code === 'ECONNABORTED' ||
    code === 'UND_ERR_HEADERS_TIMEOUT' ||
    code === 'UND_ERR_BODY_TIMEOUT'
  ) {
    return new BrokerError('upstream_timeout', `${service} did not answer in time.`, { cause: err });
  }
  return new BrokerError('upstream_unavailable', `${service} cannot be reached right now.`, { cause: err });
}

/** Map an upstream HTTP status to the broker's code: 4xx means the upstream refused the broker. */
export function upstreamStatusFailure(service: string, status: number, retryAfterSeconds?: number): BrokerError {
  if (status === 429) return new BrokerError('upstream_throttled', `${service} is throttling requests.`, { retryAfterSeconds });
  if (status === 503) return new BrokerError('upstream_unavailable', `${service} is unavailable.`, { retryAfterSeconds });
  if (status === 504) return new BrokerError('upstream_timeout', `${service} timed out.`, { retryAfterSeconds });
  if (status >= 500) return new BrokerError('upstream_error', `${service} failed (HTTP ${status}).`, { retryAfterSeconds });
  return new BrokerError('upstream_denied', `${service} refused the request (HTTP ${status}).`);
}

/** fetch with a hard timeout; network failures become BrokerErrors. Counted per upstream (telemetry). */
export async function fetchWithTimeout(service: string, url: string, init: RequestInit, timeoutMs: number): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    const err = networkFailure(service, e);
    recordUpstream(upstreamSlug(service), err.code);
    throw err;
  }
  recordUpstream(upstreamSlug(service), httpOutcome(res.status));
  return res;
}

/** Parse a Retry-After header (seconds or HTTP date) into seconds. */
export function retryAfterSeconds(header: string | null | undefined, now = Date.now()): number | undefined {
  if (!header) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim());
  const t = Date.parse(header);
  return Number.isNaN(t) ? undefined : Math.max(1, Math.ceil((t - now) / 1000));
}
