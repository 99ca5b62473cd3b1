/**
 * Who asked, told to PostgreSQL for the one transaction of a query. In the same round trip as
 * `BEGIN READ ONLY` (one extended-protocol pipeline ending in a single Sync) the broker runs
 *
 *   SELECT FROM (SELECT set_config('statement_timeout', $1, true), set_config('application_name', $2, true),
 *          set_config('broker.caller_oid', $3, true), …) AS settings /*sqlcommenter tags*\/
 *
 * with every value a bound parameter (never SQL text): the statement text is the same for every request of a query
 * and rule, so it is prepared once per connection; the per-request ids (correlation id, traceparent) are values. `is_local = true` makes each setting
 * transaction-local: gone at COMMIT or ROLLBACK, so a pooled connection never carries one caller's
 * identity into the next request. Row-level security policies and audit triggers read them with
 * `current_setting('broker.caller_oid', true)`.
 */

export interface SessionIdentity {
  readonly callerOid: string;
  readonly callerTid: string;
  readonly callerAppId?: string;
  /** `entra` or `certificate`. */
  readonly callerKind?: 'entra' | 'certificate';
  /** A certificate caller's SHA-256 thumbprint and subject DN (empty for Entra callers). */
  readonly callerCertThumbprint?: string;
  readonly callerCertSubject?: string;
  /** The agent that acted for the caller (MCP: the client app `azp`, or the Entra agent identity), else unset. */
  readonly agentAppId?: string;
  readonly ruleId: string;
  readonly correlationId: string;
  /** Transaction-local application_name (pg_stat_activity, log_line_prefix %a); printable ASCII, ≤ 63 bytes. */
  readonly applicationName: string;
  /** The query's statement timeout (ms), from the catalog. */
  readonly statementTimeoutMs: number;
  /** The request's W3C traceparent (broker.traceparent), '' when none. */
  readonly traceparent?: string;
}

/** The custom settings, in bind order after statement_timeout and application_name. */
export const SESSION_SETTINGS = [
  'broker.caller_oid',
  'broker.caller_tid',
  'broker.caller_app_id',
  'broker.rule_id',
  'broker.correlation_id',
  'broker.caller_kind',
  'broker.caller_cert_thumbprint',
  'broker.caller_cert_subject',
  'broker.agent_app_id',
  'broker.traceparent',
] as const;

/** application_name for a query: printable ASCII only, at most 63 bytes (PostgreSQL truncates beyond NAMEDATALEN - 1). */
export function applicationNameFor(queryName: string, correlationId: string): string {
  return `token-broker/${queryName}/${correlationId}`.replace(/[^\x20-\x7e]/g, '?').slice(0, 63);
}

const SETTING_NAMES = ['statement_timeout', 'application_name', ...SESSION_SETTINGS];
/**
 * The settings as a subquery the outer SELECT returns no column of: PostgreSQL still evaluates every set_config
 * (a volatile target list is never pruned from a subquery), and the answer is one row of zero columns instead of
 * the twelve values echoed back (sent, then parsed by the client, for nothing).
 */
const SETTINGS_SQL = `SELECT FROM (SELECT ${SETTING_NAMES.map((n, i) => `set_config('${n}', $${i + 1}, true)`).join(', ')}) AS settings`;

/** The preamble's two statement texts: the same for every request with this comment. */
export function preambleTexts(comment: string): { begin: string; settings: string } {
  return { begin: `BEGIN READ ONLY${comment ? ` ${comment}` : ''}`, settings: `${SETTINGS_SQL}${comment ? ` ${comment}` : ''}` };
}

/** The settings' bind values, in SETTING_NAMES order. */
export function preambleValues(id: SessionIdentity): string[] {
  return [
    String(Math.trunc(id.statementTimeoutMs)),
    id.applicationName,
    id.callerOid,
    id.callerTid,
    id.callerAppId ?? '',
    id.ruleId,
    id.correlationId,
    id.callerKind ?? 'entra',
    id.callerCertThumbprint ?? '',
    id.callerCertSubject ?? '',
    id.agentAppId ?? '',
    id.traceparent ?? '',
  ];
}

/** The two statements and the bind values of the preamble (exported for tests and docs). */
export function preamble(id: SessionIdentity, comment: string): { begin: string; settings: string; values: string[] } {
  return { ...preambleTexts(comment), values: preambleValues(id) };
}
