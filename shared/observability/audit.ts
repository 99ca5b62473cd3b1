import { createHash } from 'node:crypto';
import type { Logger } from './log';
import type { Principal } from '../auth/principal';
import { agentAuditFields } from '../auth/agent';

export type AuditDecision = 'grant' | 'deny';

type AuditedPrincipal = Pick<Principal, 'tenantId' | 'objectId' | 'appId' | 'kind' | 'certificate'>;

/** Who, on an audit line: the Entra ids, or for a client certificate its kind, thumbprint, subject, issuer and serial. */
export function auditedIdentity(p: AuditedPrincipal): Record<string, unknown> {
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

export function audit(logger: Logger, event: AuditEvent): void {
  const who = (p?: AuditedPrincipal) => (p ? auditedIdentity(p) : undefined);
  logger.info('audit', {
    event: 'audit',
    action: event.action,
    decision: event.decision,
    reason: event.reason,
    subject: who(event.subject),
    client: who(event.client),
    target: event.target,
    ruleId: event.ruleId,
    tokenIdHash: event.tokenIdHash,
    ttlSeconds: event.ttlSeconds,
    ...(event.subject?.claims !== undefined ? agentAuditFields(event.subject) : {}),
    ...(event.claimed ? { claimed: event.claimed } : {}),
    ...(event.extra ?? {}),
  });
}
