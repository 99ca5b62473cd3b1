import type { PoolClient } from 'pg';
import { audit, type AuditEvent } from '../observability/audit';
import type { Principal } from '../auth/principal';
import { isAgentIdentity } from '../auth/agent';
import type { QueryConfig } from '../config/query';
import { BrokerError, toBrokerError } from '../errors';
import { type RequestScope } from '../http/handler';
import { authorizeTarget } from '../policy/authorize';
import type { CloudSqlCallerGrant, CloudSqlDecisionGrant } from '../policy/evaluate';
import type { Policy } from '../policy/schema';
import { QUERY_NAME } from '../lib/identifiers';
import { loadCatalogFile, type CatalogQuery } from './catalog';
import { convertValue, typeName, type JsonValue } from './convert';
import { classifyDbError } from './errors';
import { bindParameters, parameterNames, type BoundValue } from './params';
import { applicationNameFor, type SessionIdentity } from './session-identity';
import { sqlComment } from './sql-comment';
import { keyOf as poolKeyOf, type PoolTarget } from './pools';
import { destroyClient, phaseDeadline } from './deadline';
import { runReadOnly, type ReadOnlyResult } from './transaction';
import { applyMasks, capBytes, type TruncationNotice } from './result-controls';
import { observeDb } from './db-state';

/**
 * The one path of a catalogued query, whoever asks (POST /api/query/{name}, the MCP tools): resolve the catalog
 * entry → authorize (the caller must be granted `query://NAME`, and a Cloud SQL grant for the query's instance and
 * database names the identity to run as) → bind the parameters (identity-bound ones from the validated token) →
 * execute (one read-only round trip under client-side deadlines) → audit. Every refusal and failure is audited once.
 */

export interface QueryResult {
  readonly query: string;
  readonly columns: readonly { name: string; type: string }[];
  readonly rows: readonly JsonValue[][];
  readonly rowCount: number;
  readonly truncated: boolean;
  /** Why the result was cut short (which limit, rows returned): present exactly when `truncated`. */
  readonly notice?: TruncationNotice;
  /** The columns masked in this answer (catalog masks the granting rule does not exempt). */
  readonly masked?: readonly string[];
}

/**
 * Client-side deadline of each round trip (the server's statement_timeout is no bound when the server
 * stops answering): the preamble and the ROLLBACK get the connect timeout, the query its own timeout
 * plus a grace for the server's statement_timeout to fire first.
 */
function roundTripDeadlines(
  q: Pick<CatalogQuery, 'timeoutMs'>,
  cfg: Pick<QueryConfig, 'connectTimeoutMs'>,
): { preamble: number; query: number; rollback: number } {
  return { preamble: cfg.connectTimeoutMs, query: q.timeoutMs + QUERY_DEADLINE_GRACE_MS, rollback: cfg.connectTimeoutMs };
}

/** How long after the server's statement_timeout the client gives up on the query itself. */
const QUERY_DEADLINE_GRACE_MS = 2000;

/** The sqlcommenter `app` tag of every statement the broker runs. */
const SQL_COMMENT_APP = 'token-broker';

/**
 * One round trip for the whole transaction: BEGIN READ ONLY, the statement timeout, a transaction-local
 * application_name and the caller's identity as set_config(…, true) with bound values, the query (at most
 * rowLimit + 1 rows leave the server: the one more says the result was cut), ROLLBACK. The answer is built from the
 * pipeline's result without a promise of its own (`resultOf`).
 */
function run(
  client: PoolClient,
  q: CatalogQuery,
  values: BoundValue[],
  rowLimit: number,
  id: SessionIdentity,
  comment: string,
  deadlines: ReturnType<typeof roundTripDeadlines>,
  prepared: boolean,
): Promise<ReadOnlyResult> {
  return runReadOnly(client, { identity: id, comment, sql: q.sql, values, maxRows: rowLimit + 1, deadlines, prepared });
}

/** The answer of a pipeline's result: at most rowLimit rows, converted, and whether the result was cut. */
function resultOf(q: CatalogQuery, r: ReadOnlyResult, rowLimit: number): QueryResult {
  const fields = r.fields;
  const truncated = r.suspended || r.rows.length > rowLimit;
  const n = Math.min(r.rows.length, rowLimit);
  const rows = new Array<JsonValue[]>(n);
  for (let j = 0; j < n; j++) {
    const row = r.rows[j]!;
    const out = new Array<JsonValue>(fields.length);
    for (let i = 0; i < fields.length; i++) out[i] = convertValue(fields[i]!.dataTypeID, row[i] ?? null);
    rows[j] = out;
  }
  return {
    query: q.name,
    columns: fields.map((f) => ({ name: f.name, type: typeName(f.dataTypeID) })),
    rows,
    rowCount: n,
    truncated,
  };
}

/** Who asks for which catalogued query, with which arguments: the input of the query path. */
export interface QueryCall {
  readonly name: string;
  readonly subject: Principal;
  readonly client: Principal;
  /**
   * The query's parameters as sent (a JSON object; identity-bound ones must not be in it), or how to read them: the
   * HTTP endpoint reads its body only once the caller is authorized.
   */
  readonly args: Record<string, unknown> | (() => Promise<Record<string, unknown>>);
  readonly scope: Pick<RequestScope, 'correlationId' | 'log' | 'trace' | 'app'>;
  /** The audited action: `query` (HTTP) or the MCP tool call. */
  readonly action?: string;
  /**
   * The call came through an agent (MCP): the token's client app (`azp`) is the agent, recorded in the
   * transaction-local `broker.agent_app_id` and the SQL comment. An Entra agent identity token counts as one anyway.
   */
  readonly viaAgent?: boolean;
  /**
   * Where the audit event goes: the HTTP endpoint passes its wrapper's request line (`RequestScope.requestAudit`: one
   * line per request, as the token endpoint); without it the event is a line of its own.
   */
  readonly requestAudit?: (event: AuditEvent) => void;
}

/** A catalogued query and the grants that let this caller run it, as one database identity. */
interface ResolvedQuery {
  readonly query: CatalogQuery;
  readonly cfg: QueryConfig;
  readonly grant: CloudSqlDecisionGrant;
  readonly ruleId: string;
  /** The mask exemptions of the rule that granted the query. */
  readonly maskExemptions: readonly string[];
}

/** A query name as the catalog writes them, else 404 (the name echoed only in a safe spelling). */
export function assertQueryName(name: string): void {
  if (!QUERY_NAME.test(name))
    throw new BrokerError('not_found', 'No such query.', { detail: { query: name.slice(0, 64).replace(/[^a-z0-9-]/g, '?') } });
}

/** Step 1: the catalog entry (404 when there is none, audited: probing for query names is visible). */
function resolve(call: QueryCall, cfg: QueryConfig, deny: (reason: string) => void): CatalogQuery {
  assertQueryName(call.name);
  const query = loadCatalogFile(cfg.catalogPath).queries.find((q) => q.name === call.name);
  if (!query) {
    deny('not_found');
    throw new BrokerError('not_found', 'No such query.', { detail: { query: call.name } });
  }
  return query;
}

/** Step 2: the query's grant, then the database identity it runs as (both from the same policy version). */
function authorize(call: QueryCall, query: CatalogQuery, cfg: QueryConfig, policy: Policy): ResolvedQuery {
  const { subject, client } = call;
  const action = call.action ?? 'query';
  const log = call.scope.log;
  const targetText = `query://${query.name}`;
  // Literal requests (no spread of a shared base: a copy of its members per call).
  const allowed = authorizeTarget({
    policy,
    subject,
    client,
    action,
    log,
    target: { kind: 'query', name: query.name },
    targetText,
  });
  const [project, region, instance] = query.instance.split(':') as [string, string, string];
  const identity = authorizeTarget({
    policy,
    subject,
    client,
    action,
    log,
    target: { kind: 'cloudsql', project, region, instance, database: query.database, connectionName: query.instance },
    targetText,
    onBehalfOfRule: allowed.ruleId,
    deniedMessage: "No policy rule maps the caller to a database identity for this query's database.",
  });
  const maskExemptions = policy.rules.find((r) => r.id === allowed.ruleId)?.maskExemptions ?? [];
  return { query, cfg, grant: identity.grant, ruleId: identity.ruleId, maskExemptions };
}

/**
 * Run a catalogued query for a caller: resolve → authorize → bind → execute, audited (one grant or one deny line).
 * Throws the BrokerError to answer with.
 */
export async function runCataloguedQuery(call: QueryCall): Promise<QueryResult> {
  const { scope, subject, client } = call;
  const action = call.action ?? 'query';
  const target = `query://${call.name}`;
  const writeAudit = call.requestAudit ?? ((event: AuditEvent) => audit(scope.log, event));
  const deny = (reason: string, ruleId?: string, extra?: AuditEvent['extra']) =>
    writeAudit({ decision: 'deny', action, subject, client, target, reason, ruleId, ...(extra ? { extra } : {}) });
  const cfg = call.scope.app.queryPools.config();
  const query = resolve(call, cfg, deny);
  const policy = scope.app.policy.currentIfChecked() ?? (await scope.app.policy.current()); // no promise when checked
  const { grant, ruleId, maskExemptions } = authorize(call, query, cfg, policy);

  // Step 3: bind. Audited too: arguments trying to set an identity-bound parameter are an attempt to read as someone else.
  const args = typeof call.args === 'function' ? await call.args() : call.args;
  let values: BoundValue[];
  try {
    values = bindParameters(query, args, subject);
  } catch (e) {
    deny(toBrokerError(e).code, ruleId);
    throw e;
  }
  const names = parameterNames(query, args);
  const queryAudit = { parameters: names.given, identityParameters: names.identityBound };

  // Step 4: execute.
  const dbStarted = performance.now();
  const elapsed = () => Math.round((performance.now() - dbStarted) * 100) / 100;
  let result: QueryResult;
  try {
    result = controlled(await execute(call, query, cfg, grant, ruleId, values), query, cfg, maskExemptions);
  } catch (e) {
    const err = toBrokerError(e);
    deny(err.code, ruleId, { ...queryAudit, dbDurationMs: elapsed() });
    throw err;
  }
  writeAudit({
    decision: 'grant',
    action,
    subject,
    client,
    target,
    reason: 'granted',
    ruleId,
    extra: grantExtra(grant, queryAudit, result, elapsed(), scope.trace?.traceId),
  });
  return result;
}

/** The grant line's query fields, in this order (members set in place, not spread from four objects). */
function grantExtra(
  grant: CloudSqlDecisionGrant,
  queryAudit: { parameters: readonly string[]; identityParameters: readonly string[] },
  result: QueryResult,
  dbDurationMs: number,
  traceId: string | undefined,
): NonNullable<AuditEvent['extra']> {
  const extra: NonNullable<AuditEvent['extra']> =
    grant.identity === 'caller' ? { identity: 'caller' } : { serviceAccount: grant.serviceAccount };
  extra.parameters = queryAudit.parameters;
  extra.identityParameters = queryAudit.identityParameters;
  extra.rows = result.rowCount;
  extra.truncated = result.truncated;
  if (result.notice) extra.truncatedBy = result.notice.limit;
  if (result.masked?.length) extra.masked = result.masked;
  extra.dbDurationMs = dbDurationMs;
  extra.traceId = traceId;
  return extra;
}

/** The catalog entry's result controls (masks, then the byte cap), and the notice of a result cut short. */
function controlled(r: QueryResult, q: CatalogQuery, cfg: QueryConfig, exemptions: readonly string[]): QueryResult {
  const { rows: maskedRows, masked } = applyMasks(q, r.columns, r.rows as JsonValue[][], exemptions, cfg.maskHashKey);
  const { rows, cut } = capBytes(maskedRows, q.maxBytes);
  const rowLimit = Math.min(q.rowLimit, cfg.maxRowLimit);
  const notice: TruncationNotice | undefined = cut
    ? { limit: 'maxBytes', value: q.maxBytes!, rowsReturned: rows.length }
    : r.truncated
      ? { limit: 'rowLimit', value: rowLimit, rowsReturned: rows.length }
      : undefined;
  return {
    ...r,
    rows,
    rowCount: rows.length,
    truncated: r.truncated || cut,
    ...(notice ? { notice } : {}),
    ...(masked.length ? { masked } : {}),
  };
}

const stableComments = new Map<string, string>();

/**
 * The comment of a query, rule and agent (the same for every request of them: built once, bounded). Query names and
 * rule ids hold no newline (catalog and policy schemas), so the key names one triple.
 */
function stableComment(query: string, rule: string, agent: string | undefined): string {
  const key = `${query}\n${rule}\n${agent ?? ''}`;
  let c = stableComments.get(key);
  if (c === undefined) {
    if (stableComments.size >= 1024) stableComments.clear();
    stableComments.set(key, (c = sqlComment({ app: SQL_COMMENT_APP, query, rule, agent })));
  }
  return c;
}

/** One read-only round trip on a pooled connection of the grant's identity, the caller carried into the session. */
async function execute(
  call: QueryCall,
  query: CatalogQuery,
  cfg: QueryConfig,
  grant: CloudSqlDecisionGrant,
  ruleId: string,
  values: BoundValue[],
): Promise<QueryResult> {
  const { scope, subject } = call;
  const cert = subject.kind === 'certificate' ? subject.certificate : undefined;
  const agent = call.viaAgent || isAgentIdentity(subject) ? subject.appId : undefined;
  const session: SessionIdentity = {
    // A certificate caller has no Entra ids: broker.caller_oid/tid stay empty, its certificate fills broker.caller_cert_*.
    callerOid: cert ? '' : subject.objectId,
    callerTid: cert ? '' : subject.tenantId,
    callerAppId: subject.appId,
    callerKind: cert ? 'certificate' : 'entra',
    callerCertThumbprint: cert?.thumbprint,
    callerCertSubject: cert?.subject,
    agentAppId: agent,
    ruleId,
    correlationId: scope.correlationId,
    applicationName: applicationNameFor(query.name, scope.correlationId),
    statementTimeoutMs: query.timeoutMs,
    traceparent: scope.trace?.traceparent,
  };
  // Stable tags only (no personal data), so each statement's text is the same for every request of this query and
  // rule and PostgreSQL prepares it once per connection; the per-request ids (correlation id, traceparent) are in the
  // transaction-local settings and application_name. QUERY_SQL_COMMENT_TRACEPARENT keeps the traceparent in the
  // comment too (Query Insights trace linking), at the price of a parse and plan of every statement.
  const traceparent = cfg.commentTraceparent ? scope.trace?.traceparent : undefined;
  const withTrace = traceparent !== undefined;
  const comment = withTrace
    ? sqlComment({ app: SQL_COMMENT_APP, query: query.name, rule: ruleId, agent, traceparent })
    : stableComment(query.name, ruleId, agent);
  if (grant.identity === 'caller') {
    // The caller's own login, on a pool of their own (shared/query/caller-pools.ts): PostgreSQL's current_user is the person.
    return executeAsCaller(call, query, cfg, grant, values, session, comment, !withTrace);
  }
  const poolTarget: PoolTarget = {
    connectionName: grant.connectionName,
    database: grant.database,
    serviceAccount: grant.serviceAccount,
    tokenLifetimeSeconds: grant.maxTtlSeconds,
  };
  const rowLimit = Math.min(query.rowLimit, cfg.maxRowLimit);
  const deadlines = roundTripDeadlines(query, cfg);
  const dbKey = poolKeyOf(poolTarget);
  let conn: PoolClient | undefined;
  try {
    conn = await scope.app.queryPools.of(cfg).connect(poolTarget, scope.log);
    const result = resultOf(query, await run(conn, query, values, rowLimit, session, comment, deadlines, !withTrace), rowLimit);
    conn.release();
    observeDb(dbKey, true);
    return result;
  } catch (e) {
    const err = toBrokerError(classifyDbError(e));
    if (conn) {
      // A statement-level error leaves a usable connection once rolled back; anything else is discarded
      // (destroyed with its socket: a connection that stopped answering is never handed out again).
      const reusable = err.code !== 'db_unavailable' && err.code !== 'query_timeout' && err.code !== 'upstream_error';
      if (reusable) {
        const c = conn;
        await phaseDeadline(c.query('ROLLBACK'), deadlines.rollback, 'rollback').then(
          () => c.release(),
          () => destroyClient(c),
        );
        observeDb(dbKey, true);
      } else {
        destroyClient(conn);
        observeDb(dbKey, false, typeof err.detail?.reason === 'string' ? err.detail.reason : err.code);
      }
    }
    throw err;
  }
}

/** The caller-mode execution: a connection logged in as the caller, the same read-only round trip. */
async function executeAsCaller(
  call: QueryCall,
  query: CatalogQuery,
  cfg: QueryConfig,
  grant: CloudSqlCallerGrant,
  values: BoundValue[],
  session: SessionIdentity,
  comment: string,
  prepared: boolean,
): Promise<QueryResult> {
  const { scope, subject } = call;
  const rowLimit = Math.min(query.rowLimit, cfg.maxRowLimit);
  const deadlines = roundTripDeadlines(query, cfg);
  let conn: PoolClient | undefined;
  try {
    conn = await scope.app.callerPools.connect(grant, subject, cfg, scope.log);
    const result = resultOf(query, await run(conn, query, values, rowLimit, session, comment, deadlines, prepared), rowLimit);
    conn.release();
    return result;
  } catch (e) {
    const err = toBrokerError(classifyDbError(e));
    if (conn) {
      const reusable = err.code !== 'db_unavailable' && err.code !== 'query_timeout' && err.code !== 'upstream_error';
      const c = conn;
      if (reusable)
        await phaseDeadline(c.query('ROLLBACK'), deadlines.rollback, 'rollback').then(
          () => c.release(),
          () => destroyClient(c),
        );
      else destroyClient(c);
    }
    throw err;
  }
}
