import type { PoolClient } from 'pg';
import { BrokerError } from '../errors';

/**
 * Client-side deadlines for database round trips. PostgreSQL's statement_timeout is enforced by the
 * server, so a server that stopped answering (SIGSTOP, a partition, a stalled failover) enforces nothing:
 * every round trip here races a timer, and on expiry the connection is destroyed (its socket too, so the
 * pool never hands it out again and no half-open socket waits for the server).
 */

/** Raised when a round trip's client-side deadline passes; classified by the caller's phase. */
export class DeadlineExceeded extends Error {
  override readonly name = 'DeadlineExceeded';
  constructor(
    readonly phase: 'connect' | 'preamble' | 'query' | 'rollback',
    readonly ms: number,
  ) {
    super(`database ${phase} did not answer within ${ms} ms`);
  }
}

/** The socket under a pg client (not in pg's typings: Client.connection.stream). */
function socketOf(client: PoolClient): { destroy(): void } | undefined {
  const conn = (client as unknown as { connection?: { stream?: { destroy?: unknown } } }).connection;
  const stream = conn?.stream;
  return stream && typeof stream.destroy === 'function' ? (stream as { destroy(): void }) : undefined;
}

/** Give a connection back as unusable: the pool drops it and its socket is closed at once. */
export function destroyClient(client: PoolClient, reason?: Error): void {
  try {
    client.release(reason ?? true);
  } catch {
    // already released
  }
  socketOf(client)?.destroy();
}

/** `work` within `ms`, else DeadlineExceeded (the caller destroys the connection). */
export async function withDeadline<T>(work: Promise<T>, ms: number, phase: DeadlineExceeded['phase']): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  // The loser of the race may still reject later (the connection destroyed under it): never unhandled.
  work.catch(() => undefined);
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new DeadlineExceeded(phase, ms)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The client-safe error for a passed deadline: the query itself → 504, anything around it → 503. */
export function deadlineError(e: DeadlineExceeded): BrokerError {
  if (e.phase === 'query') return new BrokerError('query_timeout', 'The query did not answer in time.', { cause: e });
  return new BrokerError('db_unavailable', 'The database did not answer in time.', {
    cause: e,
    detail: { reason: 'database_unresponsive' },
  });
}
