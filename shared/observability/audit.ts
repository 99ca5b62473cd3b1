import { createHash } from 'node:crypto';
import type { Logger } from './log';
import type { Principal } from '../auth/principal';
import { agentAuditFields } from '../auth/agent';

export type AuditDecision = 'grant' | 'deny';

type AuditedPrincipal = Pick<Principal, 'tenantId' | 'objectId' | 'appId' | 'kind' | 'certificate'>;

/**
 * The audited identity and agent fields of a frozen Principal (what validation returns, and the verified-token cache
 * hands back for the same token), made once: frozen, so every line of that caller shares them as they are.
 */
const identities = new WeakMap<AuditedPrincipal, Readonly<Record<string, unknown>>>();
const agents = new WeakMap<AuditedPrincipal, Readonly<Record<string, unknown>>>();

function remembered(
  memo: WeakMap<AuditedPrincipal, Readonly<Record<string, unknown>>>,
  p: AuditedPrincipal,
  make: () => Record<string, unknown>,
): Readonly<Record<string, unknown>> {
  if (!Object.isFrozen(p)) return make();
  let v = memo.get(p);
  if (!v) memo.set(p, (v = deepFreeze(make())));
  return v;
}

function deepFreeze<T extends object>(o: T): Readonly<T> {
  for (const v of Object.values(o)) if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) deepFreeze(v as object);
  return Object.freeze(o);
}

/** Who, on an audit line: the Entra ids, or for a client certificate its kind, thumbprint, subject, issuer and serial. */
export function auditedIdentity(p: AuditedPrincipal): Readonly<Record<string, unknown>> {
  return remembered(identities, p, () => identityOf(p));
}

function identityOf(p: AuditedPrincipal): Record<string, unknown> {
  const c = p.certificate;
  if (p.kind !== 'certificate' || !c) return { tenantId: p.tenantId, objectId: p.objectId, appId: p.appId };
  return {
    kind: 'certificate',
    tenantId: p.tenantId,
    objectId: p.objectId,
    certificate: { thumbprint: c.thumbprint, subject: c.subject, issuer: c.issuer, serialNumber: c.serialNumber },
  };
}

export interface AuditEvent {
  decision: AuditDecision;
  /** The action audited, e.g. `token.cloudsql`, `token.cosmos`, `query`, `rotation.create`. */
  action: string;
  /** The subject; with its claims (a validated Principal), the agent that acted for it is audited too. */
  subject?: AuditedPrincipal & Partial<Pick<Principal, 'claims'>>;
  client?: AuditedPrincipal;
  /** What was asked for, as a display string (resource URI, query name, service account). */
  target?: string;
  /** A reason code (the ErrorCode on deny, or `granted`/a rule id on grant). */
  reason: string;
  ruleId?: string;
  /** A hash of the issued credential's id: never the credential itself. */
  tokenIdHash?: string;
  ttlSeconds?: number;
  /** What the tokens of a refused admin request claim, unverified (shared/observability/admin-audit.ts): never a token. */
  claimed?: Readonly<Record<string, object | undefined>>;
  extra?: Record<string, string | number | boolean | readonly string[] | undefined>;
}

const fingerprints = new Map<string, string>();

/**
 * A stable, one-way fingerprint of a credential, safe to log and to correlate. Cache hits hand out the same
 * token many times, so recent fingerprints are remembered (bounded) instead of hashed on every request.
 */
export function tokenFingerprint(tokenOrId: string): string {
  let fp = fingerprints.get(tokenOrId);
  if (fp === undefined) {
    fp = createHash('sha256').update(tokenOrId).digest('hex').slice(0, 16);
    if (fingerprints.size >= 1024) fingerprints.clear();
    fingerprints.set(tokenOrId, fp);
  }
  return fp;
}

/** The fields of an audit event's line (`event: 'audit'` and every field of the event; undefined ones drop out). */
export function auditFields(event: AuditEvent): Record<string, unknown> {
  const { subject, client } = event;
  const fields: Record<string, unknown> = {
    event: 'audit',
    action: event.action,
    decision: event.decision,
    reason: event.reason,
    subject: subject ? auditedIdentity(subject) : undefined,
    client: client ? auditedIdentity(client) : undefined,
    target: event.target,
    ruleId: event.ruleId,
    tokenIdHash: event.tokenIdHash,
    ttlSeconds: event.ttlSeconds,
  };
  // The same members, in the same order, as spreading them into the literal (without a copy of each).
  if (subject?.claims !== undefined)
    Object.assign(
      fields,
      remembered(agents, subject, () => agentAuditFields(subject)),
    );
  if (event.claimed) fields.claimed = event.claimed;
  if (event.extra) Object.assign(fields, event.extra);
  return fields;
}

/** An audit event on a line of its own. */
export function audit(logger: Logger, event: AuditEvent): void {
  logger.info('audit', auditFields(event));
}
