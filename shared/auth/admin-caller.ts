import type { HttpRequest } from '@azure/functions';
import { adminAuditOf, claimedIdentity } from '../observability/admin-audit';
import type { CoreConfig } from '../config/core';
import { policyConfig } from '../config/policy';
import { BrokerError } from '../errors';
import type { RequestScope } from '../http/handler';
import { denyEntryFor } from '../policy/evaluate';
import { authenticateClient, loadCore, validatorFor } from './frontdoor';
import type { Principal } from './principal';

/**
 * The front door of every /api/admin/* endpoint. The gateway authenticates as the client (as everywhere); the
 * admin's own token must be for the broker itself (BROKER_ADMIN_AUDIENCES, default the broker's own audiences
 * BROKER_CLIENT_AUDIENCES; never an API's audience, so a token a caller holds for an API behind APIM is no admin
 * token), issued by the one admin tenant (BROKER_ADMIN_TENANT), carry the admin app role, and its identity must not
 * be on the policy's deny list: the deny list wins on every endpoint. If the policy cannot be read the answer is
 * 503 (fail safe: an admin is not let in without the deny list being checked). Every request is audited once, by
 * the wrapper (shared/observability/admin-audit.ts); this notes on the request's record who passed which check.
 */

/** The header carrying the admin's own token on the admin API (the gateway's is in Authorization), as on /api/query. */
export const ADMIN_TOKEN_HEADER = 'x-subject-token';

function adminTokenHeader(req: HttpRequest): string | undefined {
  const v = req.headers.get(ADMIN_TOKEN_HEADER)?.trim();
  return v ? v : undefined;
}

export interface AdminIdentity {
  readonly cfg: CoreConfig;
  readonly client: Principal;
  readonly admin: Principal;
}

function adminSettings(cfg: CoreConfig, settingsRecheckMs?: number): { audiences: readonly string[]; tenant: string } {
  const p = policyConfig.load(settingsRecheckMs);
  const audiences = p.adminAudiences
    ? p.adminAudiences
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : cfg.clientAudiences;
  if (audiences.some((a) => cfg.subjectAudiences.includes(a))) {
    throw new BrokerError(
      'config_invalid',
      'BROKER_ADMIN_AUDIENCES must not contain a subject audience (BROKER_SUBJECT_AUDIENCES).',
    );
  }
  const allowed = cfg.allowedTenants.map((t) => t.toLowerCase());
  const tenant = p.adminTenant ?? (allowed.length === 1 ? allowed[0] : undefined);
  if (!tenant)
    throw new BrokerError('config_invalid', 'BROKER_ADMIN_TENANT is required when BROKER_ALLOWED_TENANTS lists several tenants.');
  if (!allowed.includes(tenant))
    throw new BrokerError('config_invalid', 'BROKER_ADMIN_TENANT must be one of BROKER_ALLOWED_TENANTS.');
  return { audiences, tenant };
}

/**
 * `adminToken` is read after the client is authenticated (so a request without the gateway's token is 401 before
 * its body is looked at): the X-Subject-Token header, or `subject_token` of a form body (POST /api/admin/rotate).
 */
export async function authenticateAdmin(
  req: HttpRequest,
  scope: RequestScope,
  action: string,
  adminToken: () => Promise<string | undefined> = () => Promise.resolve(adminTokenHeader(req)),
): Promise<AdminIdentity> {
  const record = adminAuditOf(scope);
  record.action = action;
  const cfg = loadCore(scope.app.settingsRecheckMs);
  const client = await authenticateClient(req, cfg);
  record.client = client;
  const { audiences, tenant } = adminSettings(cfg, scope.app.settingsRecheckMs);
  const token = await adminToken();
  record.adminClaimed = claimedIdentity(token);
  if (!token)
    throw new BrokerError('token_missing', `The admin's token is required in the ${ADMIN_TOKEN_HEADER} header.`, {
      party: 'subject',
    });
  let admin: Principal;
  try {
    admin = await validatorFor(cfg).validate(token, audiences);
  } catch (e) {
    throw e instanceof BrokerError ? e.withParty('subject') : e;
  }
  record.admin = admin;
  const refuse = (reason: string, err: BrokerError): never => {
    record.note({ refusal: reason });
    throw err;
  };
  // The deny list first: a denied identity is refused whatever roles its token carries.
  const policy = await scope.app.policy
    .current()
    .catch((e: unknown) =>
      refuse(
        'policy_unavailable',
        e instanceof BrokerError ? e : new BrokerError('policy_unavailable', 'The access policy cannot be read right now.'),
      ),
    );
  if (denyEntryFor(policy, admin)) refuse('subject_denied', new BrokerError('subject_denied', 'The subject is denied.'));
  if (admin.tenantId !== tenant)
    refuse(
      'admin_tenant',
      new BrokerError('role_required', 'Admin tokens are accepted from the admin tenant only.', {
        detail: { reason: 'admin_tenant' },
      }),
    );
  if (!admin.roles.includes(cfg.adminRole))
    refuse('role_required', new BrokerError('role_required', 'The admin role is required.', { detail: { role: cfg.adminRole } }));
  return { cfg, client, admin };
}
