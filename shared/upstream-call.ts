import type { BrokerError } from './errors';

/** The shape of what HTTP clients throw (gaxios, @azure/identity, fetch), and a deadline for any upstream call. */

export interface ErrorShape {
  name?: string;
  code?: string | number;
  status?: number;
  statusCode?: number;
  response?: { status?: number; headers?: { get?(name: string): string | null } };
  cause?: unknown;
}

export function statusOf(err: ErrorShape): number | undefined {
  const s = err.response?.status ?? err.status ?? err.statusCode;
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
