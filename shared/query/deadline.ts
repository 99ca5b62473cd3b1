import type { PoolClient } from 'pg';
import { BrokerError } from '../errors';
import { withDeadline } from '../upstream/deadline';

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

/** `work` within `ms`, else DeadlineExceeded naming the phase (the caller destroys the connection). */
export function phaseDeadline<T>(work: Promise<T>, ms: number, phase: DeadlineExceeded['phase']): Promise<T> {
  return withDeadline(work, ms, () => new DeadlineExceeded(phase, ms));
}

/** The client-safe error for a passed deadline: the query itself → 504, anything around it → 503. */
export function deadlineError(e: DeadlineExceeded): BrokerError {
  if (e.phase === 'query') return new BrokerError('query_timeout', 'The query did not answer in time.', { cause: e });
  return new BrokerError('db_unavailable', 'The database did not answer in time.', {
    cause: e,
    detail: { reason: 'database_unresponsive' },
  });
}
