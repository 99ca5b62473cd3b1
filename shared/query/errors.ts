import { BrokerError, isBrokerError } from '../errors';
import { DeadlineExceeded, deadlineError } from './deadline';

/**
 * Map what PostgreSQL, pg, the Cloud SQL connector and the SQL Admin API throw to client-safe errors.
 * Messages are fixed text: PostgreSQL's own message (which can quote data) only goes to the log, via cause.
 */

export type DbFailureReason =
  | 'login_refused'
  | 'token_refused'
  | 'instance_unreachable'
  | 'database_unavailable'
  | 'sqladmin_unavailable'
  | 'tls_failed'
  | 'connect_timeout'
  | 'database_unresponsive';

function unavailable(reason: DbFailureReason, message: string, cause: unknown): BrokerError {
  return new BrokerError('db_unavailable', message, { cause, detail: { reason } });
}

interface PgLike {
  code?: unknown;
  severity?: unknown;
  status?: unknown;
  response?: { status?: unknown };
  message?: unknown;
}

export function classifyDbError(err: unknown): BrokerError {
  if (isBrokerError(err)) return err;
  if (err instanceof DeadlineExceeded) return deadlineError(err);
  const e = (err ?? {}) as PgLike;
  const code = typeof e.code === 'string' ? e.code : '';
  const message = typeof e.message === 'string' ? e.message : '';
  // PostgreSQL errors (pg DatabaseError: five-character SQLSTATE + severity)
  if (/^[0-9A-Z]{5}$/.test(code) && e.severity !== undefined) {
    if (code === '42501')
      return new BrokerError('db_permission_denied', "The database refused this query for the caller's database identity.", {
        cause: err,
      });
    if (code === '25006')
      return new BrokerError('db_permission_denied', 'The query attempted to write; catalogued queries run read-only.', {
        cause: err,
      });
    if (code === '57014') return new BrokerError('query_timeout', 'The query exceeded its statement timeout.', { cause: err });
    if (code === '28000' || code === '28P01')
      return unavailable('login_refused', 'The database refused the login of the database identity.', err);
    if (code.startsWith('08') || code.startsWith('57P') || code === '53300' || code === '53000') {
      return unavailable('database_unavailable', 'The database is not accepting connections.', err);
    }
    if (code.startsWith('22'))
      return new BrokerError('invalid_parameter', 'A parameter value was rejected by the database.', {
        cause: err,
        detail: { parameter: '(value)' },
      });
    if (code.startsWith('42') || code.startsWith('0A'))
      return new BrokerError('target_misconfigured', 'The catalogued query is not valid for this database.', { cause: err });
    return new BrokerError('upstream_error', 'The database failed to run the query.', { cause: err });
  }
  // SQL Admin API (GaxiosError) reached through the connector
  const status = typeof e.status === 'number' ? e.status : typeof e.response?.status === 'number' ? e.response.status : undefined;
  if (status !== undefined) {
    if (status === 401 || status === 403)
      return unavailable('token_refused', 'The Cloud SQL Admin API refused the login token of the database identity.', err);
    return unavailable('sqladmin_unavailable', 'The Cloud SQL Admin API is unavailable.', err);
  }
  if (/^ERR_TLS|CERT|SSL/.test(code) || /certificate|tls|ssl/i.test(message))
    return unavailable('tls_failed', 'The TLS connection to the instance failed.', err);
  if (/timeout/i.test(message) || code === 'ETIMEDOUT') {
    if (/query read timeout/i.test(message))
      return new BrokerError('query_timeout', 'The query did not answer in time.', { cause: err });
    return unavailable('connect_timeout', 'Connecting to the database timed out.', err);
  }
  if (/^E[A-Z]+$/.test(code) && /SQLADMIN|INSTANCE|IPADDRESS|ACCESSTOKEN|IAM/.test(code)) {
    return unavailable('sqladmin_unavailable', 'The Cloud SQL instance metadata could not be obtained.', err);
  }
  if (/^E[A-Z]+$/.test(code) || /terminated|closed|ended|refused|reset|socket/i.test(message)) {
    return unavailable('instance_unreachable', 'The Cloud SQL instance cannot be reached.', err);
  }
  return new BrokerError('upstream_error', 'The database failed to run the query.', { cause: err });
}
