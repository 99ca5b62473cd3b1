import { decodeJwt } from 'jose';
import type { Principal } from '../auth/principal';
import { BrokerError } from '../errors';
import { audit, type AuditEvent } from './audit';
import type { Logger } from './log';

/**
 * Every request to /api/admin/* is audited exactly once (issue #26): the HTTP wrapper (shared/http/handler.ts) opens
 * one record per request of an admin route and writes it when the answer is known, whatever the answer is (a grant,
 * a refusal before authentication, a 4xx of the request's shape, a lost race, a 5xx); the local host writes it for
 * the admin requests it refuses itself (413, a bad Host, ...). The endpoint only enriches the record: who (the
 * client and the admin once their tokens are validated), the target, what was written.
 *
 * Until a token is validated its caller is `unauthenticated`, and the event carries what the token claims (issuer,
 * tenant, audience, app id, object id; unverified, cut to printable ASCII) and why it was refused: never the token.
 */

type Extra = NonNullable<AuditEvent['extra']>;

/** What a token claims, unverified: for the audit event of a refused request only. */
export interface ClaimedIdentity {
  readonly issuer?: string;
  readonly tenantId?: string;
  readonly audience?: string;
  readonly appId?: string;
  readonly objectId?: string;
  /** The token is not a decodable JWT. */
  readonly malformed?: true;
}

export class AdminAuditRecord {
  /** Validated identities, set by authenticateAdmin as each token passes. */
  client?: Principal;
  admin?: Principal;
  /** The admin's token's claims, when it was not read from X-Subject-Token (POST /api/admin/rotate reads the body). */
  adminClaimed?: ClaimedIdentity;
  target?: string;
  /** The grant's reason (`granted`, `written`, `dry-run`, ...); a refusal's is its code unless `refusal` says more. */
  reason?: string;
  refusal?: string;
  readonly extra: Extra = {};

  constructor(public action: string) {}

  /** Add what the endpoint knows (target, reason, fields such as the ETag written). */
  note(fields: { target?: string; reason?: string; refusal?: string; extra?: Extra }): void {
    if (fields.target !== undefined) this.target = fields.target;
    if (fields.reason !== undefined) this.reason = fields.reason;
    if (fields.refusal !== undefined) this.refusal = fields.refusal;
    Object.assign(this.extra, fields.extra ?? {});
  }
}

/** The record of an admin request, set up by the wrapper: an admin endpoint served without one is a bug (500). */
export function adminAuditOf(scope: { readonly adminAudit?: AdminAuditRecord }): AdminAuditRecord {
  if (!scope.adminAudit) throw new BrokerError('internal', 'An admin endpoint is served without its audit record.');
  return scope.adminAudit;
}

const printable = (v: unknown): string | undefined =>
  typeof v === 'string' ? v.replace(/[^\x20-\x7e]/g, '?').slice(0, 200) : undefined;

/** The claims of a token, unverified (never the token); undefined when no token was sent. */
export function claimedIdentity(token: string | undefined | null): ClaimedIdentity | undefined {
  if (!token) return undefined;
  try {
    const c = decodeJwt(token);
    const aud = Array.isArray(c.aud) ? c.aud.join(',') : c.aud;
    return {
      issuer: printable(c.iss),
      tenantId: printable(c.tid),
      audience: printable(aud),
      appId: printable(c.appid ?? c.azp),
      objectId: printable(c.oid),
    };
  } catch {
    return { malformed: true };
  }
}

function bearer(header: string | null): string | undefined {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return m ? m[1] : header ? '-' : undefined; // '-': sent, but not as a bearer token
}

export interface AdminOutcome {
  readonly status: number;
  /** The reason code of an error answer. */
  readonly code?: string;
  /** Which token failed, for token_* codes. */
  readonly party?: string;
}

/** Write the one audit event of an admin request. */
export function writeAdminAudit(
  log: Logger,
  record: AdminAuditRecord,
  req: { readonly method: string; readonly url: string; readonly headers: { get(name: string): string | null } },
  correlationId: string,
  outcome: AdminOutcome,
): void {
  let path: string;
  try {
    path = new URL(req.url, 'http://localhost').pathname;
  } catch {
    path = '?';
  }
  const granted = outcome.status < 400;
  const claimed = {
    client: record.client ? undefined : claimedIdentity(bearer(req.headers.get('authorization'))),
    admin: record.admin ? undefined : (record.adminClaimed ?? claimedIdentity(req.headers.get('x-subject-token'))),
  };
  audit(log, {
    decision: granted ? 'grant' : 'deny',
    action: record.action,
    client: record.client,
    subject: record.admin,
    target: record.target,
    reason: granted ? (record.reason ?? 'granted') : (record.refusal ?? outcome.code ?? 'refused'),
    claimed: claimed.client || claimed.admin ? claimed : undefined,
    extra: {
      ...record.extra,
      caller: record.client && record.admin ? 'authenticated' : 'unauthenticated',
      method: req.method.toUpperCase(),
      path: path.slice(0, 256),
      status: outcome.status,
      outcome: granted ? 'success' : outcome.status >= 500 ? 'failed' : 'refused',
      code: outcome.code,
      party: outcome.party,
      correlationId,
    },
  });
}
