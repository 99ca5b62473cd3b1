/** The shape of what HTTP clients throw (gaxios, @azure/identity, fetch, the Azure SDKs' RestError). */

export interface ErrorShape {
  name?: string;
  code?: string | number;
  status?: number;
  statusCode?: number;
  response?: { status?: number; headers?: { get?(name: string): string | null } };
  cause?: unknown;
}

/** The HTTP status a thrown value carries (gaxios `response.status`, fetch-style `status`, Azure SDK `statusCode`). */
export function statusOf(err: unknown): number | undefined {
  if (!err || typeof err !== 'object') return undefined;
  const e = err as ErrorShape;
  const s = e.response?.status ?? e.status ?? e.statusCode;
  return typeof s === 'number' && s >= 100 && s <= 599 ? s : undefined;
}

/**
 * Whether a thrown value (or its cause chain) says "timed out". The broker aborts upstream calls only
 * through timeouts, so an AbortError (what gaxios reports for its `timeout`) is one too.
 */
export function isTimeout(err: unknown, depth = 0): boolean {
  if (!err || typeof err !== 'object' || depth > 4) return false;
  const e = err as ErrorShape;
  if (
    e.name === 'TimeoutError' ||
    e.name === 'AbortError' ||
    e.code === 'TimeoutError' ||
    e.code === 'ETIMEDOUT' ||
    e.code === 'UND_ERR_HEADERS_TIMEOUT'
  )
    return true;
  return isTimeout(e.cause, depth + 1);
}
