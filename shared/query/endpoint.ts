import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import type { PoolClient } from 'pg';
import { audit } from '../observability/audit';
import { authenticateClient, loadCore, validateSubject } from '../auth/frontdoor';
import { queryConfig, type QueryConfig } from '../config/query';
import { BrokerError, toBrokerError } from '../errors';
import { jsonResponse } from '../http/responses';
import { readJsonObject } from '../http/request';
import { type RequestScope } from '../http/handler';
import { evaluate } from '../policy/evaluate';
import { currentPolicy } from '../policy/current';
import { QUERY_NAME } from '../lib/identifiers';
import { loadCatalogFile, type CatalogQuery } from './catalog';
import { convertValue, typeName, type JsonValue } from './convert';
import { classifyDbError } from './errors';
import { bindParameters, parameterNames, type BoundValue } from './params';
import { applicationNameFor, type SessionIdentity } from './session-identity';
import { sqlComment } from './sql-comment';
import { keyOf as poolKeyOf, PoolRegistry, type PoolTarget } from './pools';
import { destroyClient, phaseDeadline } from './deadline';
import { runReadOnly } from './transaction';
import { observeDb } from './db-state';
import { recordIssuance } from '../observability/telemetry';

/**
 * POST /api/query/{name}: run one catalogued, parameterized, read-only query as the caller's own
 * Cloud SQL IAM database identity.
 *
 * Authentication as the token endpoint: the gateway (client) presents its own token in
 * `Authorization: Bearer`, the end caller's token travels in `X-Subject-Token`; the JSON body holds
 * only the query's parameters. The policy decides twice: the caller must be granted `query://NAME`,
 * and a Cloud SQL grant for the query's instance and database names the service account to run as.
 */

export const SUBJECT_TOKEN_HEADER = 'x-subject-token';

let registry: { cfg: QueryConfig; pools: PoolRegistry } | undefined;

function loadQueryConfig(): QueryConfig {
  try {
    return queryConfig.get();
  } catch (e) {
    throw toBrokerError(e); // a ConfigError: config_invalid naming the settings
  }
}

function pools(cfg: QueryConfig): PoolRegistry {
  if (registry?.cfg !== cfg) {
    const old = registry?.pools;
    registry = { cfg, pools: new PoolRegistry(cfg) };
    void old?.closeAll();
  }
  return registry.pools;
}

/** Re-check the databases whose last round trip failed (health; no-op when no query has run). */
export async function probeFailedDatabases(isFailed: (key: string) => boolean): Promise<void> {
  await registry?.pools.probeFailed(isFailed);
}

/** Close every pool (tests, shutdown). */
export async function closeQueryPools(): Promise<void> {
  const r = registry;
  registry = undefined;
  await r?.pools.closeAll();
}

export interface QueryResult {
  readonly query: string;
  readonly columns: readonly { name: string; type: string }[];
  readonly rows: readonly JsonValue[][];
  readonly rowCount: number;
  readonly truncated: boolean;
}

/**
 * Client-side deadline of each round trip (the server's statement_timeout is no bound when the server
 * stops answering): the preamble and the ROLLBACK get the connect timeout, the query its own timeout
 * plus a grace for the server's statement_timeout to fire first.
 */
export function roundTripDeadlines(
  q: Pick<CatalogQuery, 'timeoutMs'>,
  cfg: Pick<QueryConfig, 'connectTimeoutMs'>,
): { preamble: number; query: number; rollback: number } {
  return { preamble: cfg.connectTimeoutMs, query: q.timeoutMs + QUERY_DEADLINE_GRACE_MS, rollback: cfg.connectTimeoutMs };
}

/** How long after the server's statement_timeout the client gives up on the query itself. */
export const QUERY_DEADLINE_GRACE_MS = 2000;

async function run(
  client: PoolClient,
  q: CatalogQuery,
  values: BoundValue[],
  rowLimit: number,
  id: SessionIdentity,
  comment: string,
  deadlines: ReturnType<typeof roundTripDeadlines>,
): Promise<QueryResult> {
  // One round trip for the whole transaction: BEGIN READ ONLY, the statement timeout, a transaction-local
  // application_name and the caller's identity as set_config(…, true) with bound values, the query (at most
  // rowLimit + 1 rows leave the server: the one more says the result was cut), ROLLBACK.
  const r = await runReadOnly(client, { identity: id, comment, sql: q.sql, values, maxRows: rowLimit + 1, deadlines });
  const fields = r.fields;
  const truncated = r.suspended || r.rows.length > rowLimit;
  const rows = r.rows.slice(0, rowLimit).map((row) => fields.map((f, i) => convertValue(f.dataTypeID, row[i] ?? null)));
  return {
    query: q.name,
    columns: fields.map((f) => ({ name: f.name, type: typeName(f.dataTypeID) })),
    rows,
    rowCount: rows.length,
    truncated,
  };
}

/** The query endpoint, measured (telemetry: issuance latency, kind `query`, outcome `issued` or the code). */
export async function handleQuery(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  const started = performance.now();
  try {
    const res = await runQuery(req, scope);
    recordIssuance('query', 'issued', performance.now() - started);
    return res;
  } catch (e) {
    recordIssuance('query', toBrokerError(e).code, performance.now() - started);
    throw e;
  }
}

async function runQuery(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  const core = loadCore();
  const client = await authenticateClient(req, core);
  const name = req.params.name ?? '';
  if (!QUERY_NAME.test(name))
    throw new BrokerError('not_found', 'No such query.', { detail: { query: name.slice(0, 64).replace(/[^a-z0-9-]/g, '?') } });
  const subjectToken = req.headers.get(SUBJECT_TOKEN_HEADER) ?? undefined;
  if (!subjectToken)
    throw new BrokerError('token_missing', `The caller's token is required in the ${SUBJECT_TOKEN_HEADER} header.`, {
      party: 'subject',
    });
  const subject = await validateSubject(subjectToken, core);

  const cfg = loadQueryConfig();
  const query = loadCatalogFile(cfg.catalogPath).queries.find((q) => q.name === name);
  const target = `query://${name}`;
  const deny = (reason: string, ruleId?: string) =>
    audit(scope.log, { decision: 'deny', action: 'query', subject, client, target, reason, ruleId });
  if (!query) {
    deny('not_found');
    throw new BrokerError('not_found', 'No such query.', { detail: { query: name } });
  }

  const policy = await currentPolicy();
  const allowed = evaluate(policy, subject, { kind: 'query', name });
  if (allowed.decision === 'deny') {
    deny(allowed.code);
    throw new BrokerError(
      allowed.code,
      allowed.code === 'subject_denied' ? 'The subject is denied.' : 'No policy rule grants this query to the caller.',
    );
  }
  const [project, region, instance] = query.instance.split(':') as [string, string, string];
  const identity = evaluate(policy, subject, {
    kind: 'cloudsql',
    project,
    region,
    instance,
    database: query.database,
    connectionName: query.instance,
  });
  if (identity.decision === 'deny' || identity.grant.kind !== 'cloudsql') {
    deny('not_granted', allowed.ruleId);
    throw new BrokerError('not_granted', "No policy rule maps the caller to a database identity for this query's database.");
  }
  const grant = identity.grant;

  const body = await readJsonObject(req);
  let values: BoundValue[];
  try {
    values = bindParameters(query, body, subject);
  } catch (e) {
    // Audited too: a body trying to set an identity-bound parameter is an attempt to read as someone else.
    deny(toBrokerError(e).code, identity.ruleId);
    throw e;
  }
  const names = parameterNames(query, body);
  const identityRule = identity.ruleId ?? '';
  const session: SessionIdentity = {
    callerOid: subject.objectId,
    callerTid: subject.tenantId,
    callerAppId: subject.appId,
    ruleId: identityRule,
    correlationId: scope.correlationId,
    applicationName: applicationNameFor(query.name, scope.correlationId),
    statementTimeoutMs: query.timeoutMs,
  };
  // Ids only (no personal data): the database log line joins the audit event and the trace.
  const comment = sqlComment({
    traceparent: scope.trace?.traceparent,
    correlation_id: scope.correlationId,
    rule: identityRule,
    query: query.name,
  });
  const queryAudit = { parameters: names.given, identityParameters: names.identityBound };

  const poolTarget: PoolTarget = {
    connectionName: grant.connectionName,
    database: grant.database,
    serviceAccount: grant.serviceAccount,
    tokenLifetimeSeconds: grant.maxTtlSeconds,
  };
  const rowLimit = Math.min(query.rowLimit, cfg.maxRowLimit);
  let result: QueryResult;
  let conn: PoolClient | undefined;
  const dbStarted = performance.now();
  const deadlines = roundTripDeadlines(query, cfg);
  const dbKey = poolKeyOf(poolTarget);
  try {
    conn = await pools(cfg).connect(poolTarget, scope.log);
    result = await run(conn, query, values, rowLimit, session, comment, deadlines);
    conn.release();
    observeDb(dbKey, true);
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
    audit(scope.log, {
      decision: 'deny',
      action: 'query',
      subject,
      client,
      target,
      reason: err.code,
      ruleId: identity.ruleId,
      extra: { ...queryAudit, durationMs: Math.round((performance.now() - dbStarted) * 100) / 100 },
    });
    throw err;
  }
  audit(scope.log, {
    decision: 'grant',
    action: 'query',
    subject,
    client,
    target,
    reason: 'granted',
    ruleId: identity.ruleId,
    extra: {
      serviceAccount: grant.serviceAccount,
      ...queryAudit,
      rows: result.rowCount,
      truncated: result.truncated,
      durationMs: Math.round((performance.now() - dbStarted) * 100) / 100,
      traceId: scope.trace?.traceId,
    },
  });
  return jsonResponse(200, result, scope);
}
