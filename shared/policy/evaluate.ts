import type { Principal } from '../auth/principal';
import type { CertificateDenyEntry, CertificateSubject, CloudSqlGrant, CosmosGrant, DenyEntry, Policy, Rule } from './schema';
import { isAgentIdentity } from '../auth/agent';
import type { Target } from './target';

interface CloudSqlGrantBase {
  readonly kind: 'cloudsql';
  readonly connectionName: string;
  readonly database: string;
  readonly maxTtlSeconds: number;
}

/** The rule's service account logs in (the default identity mode). */
export interface CloudSqlServiceAccountGrant extends CloudSqlGrantBase {
  readonly identity: 'serviceAccount';
  readonly serviceAccount: string;
}

/** The caller logs in as themself (workforce identity federation); the admin account never logs in. */
export interface CloudSqlCallerGrant extends CloudSqlGrantBase {
  readonly identity: 'caller';
  readonly adminServiceAccount: string;
}

export type CloudSqlDecisionGrant = CloudSqlServiceAccountGrant | CloudSqlCallerGrant;

interface CosmosGrantBase {
  readonly kind: 'cosmos';
  readonly account: string;
  readonly database: string;
  readonly container: string;
  readonly mode: 'read' | 'all';
}

/** A Cosmos resource token, minted with the account key. */
export interface CosmosResourceTokenGrant extends CosmosGrantBase {
  readonly auth: 'resourceToken';
  /** The partition the permission is bound to; undefined means the whole container. */
  readonly partitionKey: string | undefined;
  readonly maxTtlSeconds: number;
}

/** Keyless: an Entra token of a user-assigned identity whose role assignment is scoped to the container. */
export interface CosmosRbacGrant extends CosmosGrantBase {
  readonly auth: 'rbac';
  /** Never a partition: role assignments stop at the container. */
  readonly partitionKey: undefined;
  readonly identityClientId: string;
}

export type CosmosDecisionGrant = CosmosResourceTokenGrant | CosmosRbacGrant;

export interface QueryDecisionGrant {
  readonly kind: 'query';
  readonly name: string;
}

export type DecisionGrant = CloudSqlDecisionGrant | CosmosDecisionGrant | QueryDecisionGrant;

export interface RuleTrace {
  readonly ruleId: string;
  readonly subjectMatched: boolean;
  readonly targetMatched: boolean;
  readonly why: string;
}

export type Decision =
  | { readonly decision: 'grant'; readonly ruleId: string; readonly grant: DecisionGrant }
  | { readonly decision: 'deny'; readonly code: 'subject_denied' | 'not_granted'; readonly reason: string };

/** A decision with the explain trace: every rule tried, in order, and why it did not match. */
export type ExplainedDecision = Decision & { readonly trace: readonly RuleTrace[] };

/**
 * What a "why not" returns when no explanation is asked for (the hit path): the rule does not match, and nothing
 * is built to say why (the messages join lists and name values on every non-matching rule).
 */
const MISS = 'no match';

/** Why a certificate rule does not match the caller, or undefined when it does (every listed category must match). */
function certificateWhy(s: CertificateSubject, p: Principal, explain: boolean): string | undefined {
  const c = p.certificate;
  if (p.kind !== 'certificate' || !c) return 'rule is for client certificates, the caller is not one';
  const want = s.certificate;
  if (want.issuerThumbprint !== undefined && want.issuerThumbprint !== c.issuerThumbprint) return 'issuing CA differs';
  if (want.issuer !== undefined && want.issuer !== c.issuer) return 'issuing CA differs';
  const anyOf = (list: readonly string[] | undefined, have: readonly string[], name: string): string | undefined =>
    list && !list.some((w) => have.includes(w)) ? (explain ? `certificate has none of the ${name}` : MISS) : undefined;
  return (
    anyOf(want.thumbprints, [c.thumbprint], 'thumbprints') ??
    anyOf(want.subjects, [c.subject], 'subjects') ??
    anyOf(
      want.dnsNames,
      c.dnsNames.map((d) => d.toLowerCase()),
      'DNS names',
    ) ??
    anyOf(want.uris, c.uris, 'URIs')
  );
}

function subjectWhy(rule: Rule, p: Principal, explain: boolean): string | undefined {
  const s = rule.subject;
  if ('certificate' in s) return certificateWhy(s, p, explain);
  if (p.kind === 'certificate') return 'rule is for Entra ID callers, the caller is a client certificate';
  if (s.tenantId !== p.tenantId) return 'tenant differs';
  const anyOf = (want: readonly string[] | undefined, have: readonly string[], name: string): string | undefined =>
    want && !want.some((w) => have.includes(w))
      ? explain
        ? `caller has none of the ${name} ${want.join(', ')}`
        : MISS
      : undefined;
  return (
    anyOf(s.roles, p.roles, 'roles') ??
    anyOf(s.scopes, p.scopes, 'scopes') ??
    anyOf(
      s.groups,
      p.groups.map((g) => g.toLowerCase()),
      'groups',
    ) ??
    anyOf(s.objectIds, [p.objectId], 'object ids') ??
    anyOf(s.appIds, p.appId ? [p.appId.toLowerCase()] : [], 'app ids') ??
    (s.agentIdentity !== undefined && s.agentIdentity !== isAgentIdentity(p)
      ? s.agentIdentity
        ? 'caller is not an agent identity'
        : 'caller is an agent identity'
      : undefined)
  );
}

/** The caller's value of a partition-key claim, as a `claim` partition key binds it (MCP Cosmos tools bind the same). */
export function claimValue(p: Principal, claim: 'oid' | 'tid' | 'appid'): string | undefined {
  // A certificate caller has no tenant or app: only `oid` (its thumbprint) can scope a partition.
  if (p.kind === 'certificate') return claim === 'oid' ? p.objectId : undefined;
  return claim === 'oid' ? p.objectId : claim === 'tid' ? p.tenantId : p.appId;
}

function matchCloudSql(
  g: CloudSqlGrant,
  t: Extract<Target, { kind: 'cloudsql' }>,
  explain: boolean,
): CloudSqlDecisionGrant | string {
  if (g.instance !== t.connectionName) return explain ? `instance ${g.instance} is not ${t.connectionName}` : MISS;
  if (!g.databases.includes(t.database)) return explain ? `database ${t.database} is not among ${g.databases.join(', ')}` : MISS;
  let byDatabase = cloudSqlGrants.get(g);
  if (!byDatabase) cloudSqlGrants.set(g, (byDatabase = new Map<string, CloudSqlDecisionGrant | string>()));
  let made = byDatabase.get(t.database);
  if (made === undefined) byDatabase.set(t.database, (made = cloudSqlGrantOf(g, t.database)));
  return made;
}

/**
 * The decision grant of a policy's Cloud SQL grant for one of its databases depends on nothing else: made once per
 * (policy grant object, database) and shared, frozen, by every decision (a new policy document is new objects).
 */
const cloudSqlGrants = new WeakMap<CloudSqlGrant, Map<string, CloudSqlDecisionGrant | string>>();

function cloudSqlGrantOf(g: CloudSqlGrant, database: string): CloudSqlDecisionGrant | string {
  const base = { kind: 'cloudsql' as const, connectionName: g.instance, database, maxTtlSeconds: g.maxTtlSeconds };
  if (g.identity === 'caller') {
    if (g.adminServiceAccount === undefined) return 'rule names no adminServiceAccount'; // the schema requires one
    return Object.freeze({ ...base, identity: 'caller', adminServiceAccount: g.adminServiceAccount });
  }
  if (g.serviceAccount === undefined) return 'rule names no serviceAccount'; // the schema requires one
  return Object.freeze({ ...base, identity: 'serviceAccount', serviceAccount: g.serviceAccount });
}

function matchCosmos(
  g: CosmosGrant,
  t: Extract<Target, { kind: 'cosmos' }>,
  p: Principal,
  explain: boolean,
): CosmosDecisionGrant | string {
  if (g.account !== t.account || g.database !== t.database || g.container !== t.container) {
    return explain ? `container ${g.account}/${g.database}/${g.container} differs` : MISS;
  }
  if (t.mode === 'all' && g.mode === 'read') return 'request asks for mode all, rule grants read only';
  if (g.auth === 'rbac') {
    // The identity's role assignment fixes what its token can do: it cannot be narrowed to a partition or to read.
    if (t.partitionKey !== undefined) return 'rule grants keyless (rbac) access, which cannot be scoped to a partition';
    if (t.mode !== undefined && t.mode !== g.mode)
      return explain ? `rule grants keyless (rbac) mode ${g.mode}, which cannot be narrowed` : MISS;
    if (g.identityClientId === undefined) return 'rule names no identity'; // the schema requires one
    const id = g.identityClientId;
    return cosmosGrantOf(g, g.mode, undefined, () => ({
      kind: 'cosmos',
      account: g.account,
      database: g.database,
      container: g.container,
      mode: g.mode,
      partitionKey: undefined,
      auth: 'rbac',
      identityClientId: id,
    }));
  }
  if (g.maxTtlSeconds === undefined) return 'rule names no maxTtlSeconds'; // the schema requires one
  const mode = t.mode ?? g.mode;
  let partitionKey: string | undefined;
  const pk = g.partitionKey ?? { type: 'none' as const };
  switch (pk.type) {
    case 'none':
      partitionKey = t.partitionKey; // a request may narrow a whole-container grant to one partition
      break;
    case 'fixed':
      if (t.partitionKey !== undefined && t.partitionKey !== pk.value)
        return 'requested partition key differs from the granted one';
      partitionKey = pk.value;
      break;
    case 'claim': {
      const v = claimValue(p, pk.claim);
      if (!v) return explain ? `caller token has no ${pk.claim} claim for the partition key` : MISS;
      if (t.partitionKey !== undefined && t.partitionKey !== v) return "requested partition key is not the caller's own";
      partitionKey = v;
      break;
    }
  }
  const maxTtlSeconds = g.maxTtlSeconds;
  return cosmosGrantOf(g, mode, partitionKey, () => ({
    kind: 'cosmos',
    account: g.account,
    database: g.database,
    container: g.container,
    mode,
    partitionKey,
    maxTtlSeconds,
    auth: 'resourceToken',
  }));
}

/**
 * A Cosmos decision grant depends only on its policy grant, the mode and the partition (the caller's claim, the
 * request's or the rule's): made once per (policy grant object, mode, partition) and shared, frozen, by every decision,
 * as the Cloud SQL ones are, so the provider can remember the Cosmos user and cache key per grant object
 * (cosmos/provider.ts) instead of rebuilding and hashing them on every hit. A partition can come from the request or
 * from each caller's claim: at most 1,024 per policy grant are kept, then they are forgotten (made again on demand).
 */
const cosmosGrants = new WeakMap<CosmosGrant, Map<string, CosmosDecisionGrant>>();
const COSMOS_GRANTS_PER_POLICY_GRANT = 1024;

function cosmosGrantOf(
  g: CosmosGrant,
  mode: 'read' | 'all',
  partitionKey: string | undefined,
  make: () => CosmosDecisionGrant,
): CosmosDecisionGrant {
  let byShape = cosmosGrants.get(g);
  if (!byShape) cosmosGrants.set(g, (byShape = new Map<string, CosmosDecisionGrant>()));
  // Unambiguous: the mode is `read` or `all` (no colon); no partition has no colon, any partition (even '') one.
  const shape = partitionKey === undefined ? mode : `${mode}:${partitionKey}`;
  let made = byShape.get(shape);
  if (made === undefined) {
    if (byShape.size >= COSMOS_GRANTS_PER_POLICY_GRANT) byShape.clear();
    byShape.set(shape, (made = Object.freeze(make())));
  }
  return made;
}

function matchTarget(rule: Rule, t: Target, p: Principal, explain: boolean): DecisionGrant | string {
  if (t.kind === 'query')
    return rule.grants.queries.includes(t.name)
      ? { kind: 'query', name: t.name }
      : explain
        ? `query ${t.name} not granted`
        : MISS;
  const grants = t.kind === 'cloudsql' ? rule.grants.cloudsql : rule.grants.cosmos;
  if (grants.length === 0) return explain ? `rule grants no ${t.kind} targets` : MISS;
  const misses: string[] | undefined = explain ? [] : undefined;
  for (const g of grants) {
    const r =
      t.kind === 'cloudsql' ? matchCloudSql(g as CloudSqlGrant, t, explain) : matchCosmos(g as CosmosGrant, t, p, explain);
    if (typeof r !== 'string') return r;
    misses?.push(r);
  }
  return misses ? misses.join('; ') : MISS;
}

/** The live deny entry naming this identity (an entry past its `expiresAt` no longer applies), if any. */
export function denyEntryFor(
  policy: Policy,
  p: Pick<Principal, 'tenantId' | 'objectId'>,
  now = Date.now(),
): DenyEntry | undefined {
  return policy.deny.find(
    (d) =>
      d.tenantId === p.tenantId.toLowerCase() &&
      d.objectId === p.objectId.toLowerCase() &&
      (d.expiresAt === undefined || Date.parse(d.expiresAt) > now),
  );
}

/** The live `denyCertificates` entry naming this certificate (by thumbprint, or serial [+ issuing CA]), if any. */
export function certificateDenyEntryFor(
  policy: Pick<Policy, 'denyCertificates'>,
  c: Pick<NonNullable<Principal['certificate']>, 'thumbprint' | 'serialNumber' | 'issuerThumbprint'>,
  now = Date.now(),
): CertificateDenyEntry | undefined {
  return policy.denyCertificates.find(
    (d) =>
      (d.expiresAt === undefined || Date.parse(d.expiresAt) > now) &&
      (d.thumbprint !== undefined
        ? d.thumbprint === c.thumbprint
        : d.serialNumber === c.serialNumber && (d.issuerThumbprint === undefined || d.issuerThumbprint === c.issuerThumbprint)),
  );
}

/** Deny by default: the first rule (in file order) that matches the subject and grants the target wins. */
export function evaluate(policy: Policy, p: Principal, target: Target, now = Date.now()): Decision {
  return decide(policy, p, target, now, undefined);
}

/**
 * The same decision with its trace (POST /api/policy/explain): every rule tried and why it did not match. Only the
 * explain endpoint builds the "why not" texts; evaluate() decides identically without them.
 */
export function explainDecision(policy: Policy, p: Principal, target: Target, now = Date.now()): ExplainedDecision {
  const trace: RuleTrace[] = [];
  return { ...decide(policy, p, target, now, trace), trace };
}

function decide(policy: Policy, p: Principal, target: Target, now: number, trace: RuleTrace[] | undefined): Decision {
  const denied = p.certificate ? certificateDenyEntryFor(policy, p.certificate, now) : denyEntryFor(policy, p, now);
  if (denied) {
    return { decision: 'deny', code: 'subject_denied', reason: 'The subject is on the policy deny list.' };
  }
  const explain = trace !== undefined;
  let anySubject = false;
  for (const rule of policy.rules) {
    const sw = subjectWhy(rule, p, explain);
    if (sw !== undefined) {
      trace?.push({ ruleId: rule.id, subjectMatched: false, targetMatched: false, why: sw });
      continue;
    }
    anySubject = true;
    const r = matchTarget(rule, target, p, explain);
    if (typeof r === 'string') {
      trace?.push({ ruleId: rule.id, subjectMatched: true, targetMatched: false, why: r });
      continue;
    }
    trace?.push({ ruleId: rule.id, subjectMatched: true, targetMatched: true, why: 'granted' });
    return { decision: 'grant', ruleId: rule.id, grant: r };
  }
  return {
    decision: 'deny',
    code: 'not_granted',
    reason: anySubject ? 'No rule that matches the caller grants this target.' : 'No rule matches the caller.',
  };
}
