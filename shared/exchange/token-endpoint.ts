import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import { audit, type AuditEvent } from '../observability/audit';
import { authenticateClient, knownClient, loadCore } from '../auth/frontdoor';
import { subjectResolver } from '../auth/client-certificate';
import type { Principal } from '../auth/principal';
import { BrokerError, toBrokerError } from '../errors';
import { jsonTextResponse } from '../http/responses';
import { uncheckedBodyText, paramsOfBody, requireParam } from '../http/request';
import { type RequestScope } from '../http/handler';
import { authorizeTarget } from '../policy/authorize';
import type { CloudSqlDecisionGrant, CosmosDecisionGrant, DecisionGrant } from '../policy/evaluate';
import { formatTarget, parseTarget, type Target } from '../policy/target';
import type { Policy } from '../policy/schema';
import { recordCache, recordIssuance, spanAfter } from '../observability/telemetry';
import { ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT, type IssueInput, type ProviderResult } from './types';

/**
 * A module loaded on first use and kept (an `import()` per call resolves and copies the module each time); once
 * loaded it is handed over without a promise, so a cache hit adds no await for it.
 */
function loadOnce<T>(load: () => Promise<T>): () => T | Promise<T> {
  let loaded: T | undefined;
  let loading: Promise<T> | undefined;
  return () =>
    loaded ??
    (loading ??= load().then(
      (m) => (loaded = m),
      (e: unknown) => {
        loading = undefined; // a failed import is tried again by the next call
        throw e;
      },
    ));
}

const cloudsqlProvider = loadOnce(() => import('../cloudsql/provider'));
const cosmosProvider = loadOnce(() => import('../cosmos/provider'));

/** Providers are loaded on first use, so a Cosmos-only call never loads the Google SDK and vice versa. */
const providers = {
  cloudsql: (input: IssueInput<CloudSqlDecisionGrant>): ProviderResult | Promise<ProviderResult> => {
    const m = cloudsqlProvider();
    return m instanceof Promise ? m.then((p) => p.issueCloudSqlToken(input)) : m.issueCloudSqlToken(input);
  },
  cosmos: (input: IssueInput<CosmosDecisionGrant>): ProviderResult | Promise<ProviderResult> => {
    const m = cosmosProvider();
    return m instanceof Promise ? m.then((p) => p.issueCosmosToken(input)) : m.issueCosmosToken(input);
  },
};

const MAX_REQUESTED_LIFETIME = 86400;

const kindAttributes = { cloudsql: Object.freeze({ kind: 'cloudsql' }), cosmos: Object.freeze({ kind: 'cosmos' }) };

function parseLifetime(raw: string | undefined): number | undefined {
  if (raw === undefined || raw.trim() === '') return undefined;
  if (!/^\d{1,6}$/.test(raw.trim()) || Number(raw) < 1 || Number(raw) > MAX_REQUESTED_LIFETIME) {
    throw new BrokerError(
      'bad_request',
      `Parameter "requested_lifetime" must be whole seconds between 1 and ${MAX_REQUESTED_LIFETIME}.`,
      {
        detail: { parameter: 'requested_lifetime' },
      },
    );
  }
  return Number(raw);
}

/**
 * POST /api/token: RFC 8693 token exchange. The gateway authenticates as the client; the subject
 * token decides what is granted; the policy names the target credential; a provider issues it.
 */
export async function handleTokenExchange(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  const started = performance.now();
  const cfg = loadCore(scope.app.settingsRecheckMs);
  // A verified gateway token, policy and cached credential answer without a promise each (what a cache hit finds): a
  // promise is a turn of the event loop's microtask queue and the async-context hooks' work, per layer.
  const client = knownClient(req, cfg) ?? (await authenticateClient(req, cfg));
  const params = paramsOfBody(req, await uncheckedBodyText(req)); // the body's one promise (the host's), nothing chained

  const grantType = requireParam(params, 'grant_type');
  if (grantType !== TOKEN_EXCHANGE_GRANT) {
    throw new BrokerError('unsupported_grant_type', `grant_type must be ${TOKEN_EXCHANGE_GRANT}.`);
  }
  const subjectToken = requireParam(params, 'subject_token');
  const subjectTokenType = requireParam(params, 'subject_token_type');
  const resolveSubject = subjectResolver({ req, scope, cfg, client, subjectToken, subjectTokenType, action: 'token' });
  if (params.actor_token !== undefined || params.actor_token_type !== undefined) {
    throw new BrokerError('bad_request', 'Delegation (actor_token) is not supported; the gateway is the client, not an actor.');
  }
  if (params.scope !== undefined && params.scope.trim() !== '') {
    throw new BrokerError(
      'scope_not_supported',
      'The scope parameter is not supported: the policy decides the scope of the issued credential.',
    );
  }
  if (params.requested_token_type !== undefined && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
    throw new BrokerError('bad_request', `requested_token_type, when given, must be ${ACCESS_TOKEN_TYPE}.`);
  }
  const target = parseTarget(requireParam(params, 'resource', { exact: true }));
  if (target.kind === 'query')
    throw new BrokerError('invalid_target', 'Query targets are run by /api/query/{name}, not exchanged for tokens.');
  const requestedLifetimeSeconds = parseLifetime(params.requested_lifetime);
  const kind = target.kind;
  try {
    const pending = grantAndIssue(scope, client, target, resolveSubject, requestedLifetimeSeconds);
    const res = pending instanceof Promise ? await pending : pending;
    recordIssuance(kind, 'issued', performance.now() - started);
    return res;
  } catch (e) {
    recordIssuance(kind, toBrokerError(e).code, performance.now() - started);
    throw e;
  }
}

/**
 * The subject, the policy decision and the provider: what the issuance latency measures beyond the front door. Each
 * step answers at once when what it needs is in memory (a verified subject token, the checked policy, a cached
 * credential: a cache hit), and continues after the look-up otherwise: no promise unless something is looked up.
 */
function grantAndIssue(
  scope: RequestScope,
  client: Principal,
  target: Exclude<Target, { kind: 'query' }>,
  resolveSubject: () => Principal | Promise<Principal>,
  requestedLifetimeSeconds: number | undefined,
): HttpResponseInit | Promise<HttpResponseInit> {
  const exchange: Exchange = { scope, client, target, requestedLifetimeSeconds };
  const resolved = resolveSubject();
  return resolved instanceof Promise ? resolved.then((subject) => withPolicy(exchange, subject)) : withPolicy(exchange, resolved);
}

interface Exchange {
  readonly scope: RequestScope;
  readonly client: Principal;
  readonly target: Exclude<Target, { kind: 'query' }>;
  readonly requestedLifetimeSeconds: number | undefined;
}

function withPolicy(x: Exchange, subject: Principal): HttpResponseInit | Promise<HttpResponseInit> {
  const holder = x.scope.app.policy;
  const policy = holder.currentIfChecked();
  return policy ? decideAndIssue(x, subject, policy) : holder.current().then((p) => decideAndIssue(x, subject, p));
}

const ACTIONS = { cloudsql: 'token.cloudsql', cosmos: 'token.cosmos' } as const;

function decideAndIssue(x: Exchange, subject: Principal, policy: Policy): HttpResponseInit | Promise<HttpResponseInit> {
  const { scope, client, target } = x;
  const kind = target.kind;
  const action = ACTIONS[kind];
  const targetText = formatTarget(target);
  // The audit event goes on the request's one line (the wrapper's), not on a line of its own.
  const writeAudit = (event: AuditEvent) => (scope.requestAudit ? scope.requestAudit(event) : audit(scope.log, event));

  const { grant, ruleId } = authorizeTarget({ policy, subject, client, target, action, targetText, log: scope.log });

  // A span only when the provider went upstream (a miss) or failed: a cache hit makes none.
  const issueStarted = performance.now();
  const failed = (e: unknown): never => {
    const err = toBrokerError(e);
    spanAfter('broker.issue', kindAttributes[kind], issueStarted, err.code);
    writeAudit({ decision: 'deny', action, subject, client, target: targetText, reason: err.code, ruleId });
    throw err;
  };
  const granted = (result: ProviderResult): HttpResponseInit => {
    recordCache(kind, result.cached);
    if (!result.cached) spanAfter('broker.issue', kindAttributes[kind], issueStarted);
    writeAudit({
      decision: 'grant',
      action,
      subject,
      client,
      target: targetText,
      reason: 'granted',
      ruleId,
      tokenIdHash: result.tokenIdHash,
      ttlSeconds: result.response.expires_in,
      extra: { cached: result.cached },
    });
    return jsonTextResponse(200, result.json ?? JSON.stringify(result.response), scope, { pragma: 'no-cache' });
  };
  let issued: ProviderResult | Promise<ProviderResult>;
  try {
    issued = issue({
      grant,
      client,
      subject,
      requestedLifetimeSeconds: x.requestedLifetimeSeconds,
      log: scope.log,
      correlationId: scope.correlationId,
      app: scope.app,
    });
  } catch (e) {
    return failed(e);
  }
  return issued instanceof Promise ? issued.then(granted, failed) : granted(issued);
}

/**
 * The provider of the grant's kind, given the one input object made per exchange (`input.grant` narrowed by the
 * switch; a `{ ...input, grant }` per hit to narrow its type was a measurable part of the hit).
 */
function issue(input: IssueInput<DecisionGrant> & { client: Principal }): ProviderResult | Promise<ProviderResult> {
  const { grant } = input;
  switch (grant.kind) {
    case 'cloudsql':
      return providers.cloudsql(input as IssueInput<typeof grant>);
    case 'cosmos':
      return providers.cosmos(input as IssueInput<typeof grant>);
    case 'query':
      return Promise.reject(new BrokerError('invalid_target', 'This target cannot be exchanged for a token.'));
  }
}
