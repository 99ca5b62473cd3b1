import { randomUUID } from 'node:crypto';
import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import { adminAuditOf } from '../../observability/admin-audit';
import { ADMIN_TOKEN_HEADER, authenticateAdmin } from '../../auth/admin-caller';
import { GUID } from '../../config/settings';
import { BrokerError } from '../../errors';
import { jsonResponse } from '../../http/responses';
import { type RequestScope } from '../../http/handler';
import { type DenyEntry } from '../schema';

import { writer, who, versionHeaders, editDeny, stringField, readJson } from './common';

/** POST /api/admin/deny: {tenantId, objectId, reason, expiresAt?} — the identity is refused everywhere from now on. */
export async function handleAddDeny(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  let fields: { tenantId: string; objectId: string; reason: string; expiresAt?: string } | undefined;
  const id = await authenticateAdmin(req, scope, 'policy.deny.add', async () => {
    const body = await readJson(req, false);
    for (const k of Object.keys(body)) {
      if (!['tenantId', 'objectId', 'reason', 'expiresAt'].includes(k)) {
        throw new BrokerError('invalid_parameter', `Unknown field "${k.slice(0, 64)}".`, {
          detail: { parameter: k.slice(0, 64) },
        });
      }
    }
    const tenantId = stringField(body, 'tenantId', { required: true, pattern: GUID, what: 'a tenant GUID' })!.toLowerCase();
    const objectId = stringField(body, 'objectId', { required: true, pattern: GUID, what: 'an object id GUID' })!.toLowerCase();
    const reason = stringField(body, 'reason', { required: true, max: 500 })!;
    const expiresAt = stringField(body, 'expiresAt', {
      pattern: /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/,
      what: 'an ISO 8601 UTC time in the future',
    });
    if (expiresAt !== undefined && !(Date.parse(expiresAt) > Date.now())) {
      throw new BrokerError('invalid_parameter', '"expiresAt" must be an ISO 8601 UTC time in the future.', {
        detail: { parameter: 'expiresAt' },
      });
    }
    fields = { tenantId, objectId, reason, ...(expiresAt ? { expiresAt } : {}) };
    return req.headers.get(ADMIN_TOKEN_HEADER)?.trim() || undefined;
  });
  const { tenantId, objectId, reason, expiresAt } = fields!;
  adminAuditOf(scope).note({ target: `${tenantId}/${objectId}` });
  const w = await writer(scope.app);
  const entry: DenyEntry = {
    id: `deny-${randomUUID()}`,
    tenantId,
    objectId,
    reason,
    ...(expiresAt ? { expiresAt } : {}),
    createdAt: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    createdBy: who(id),
  };
  const written = await editDeny(w, id, scope, `deny.add:${entry.id}`, reason, (d) => [...d, entry]);
  (await scope.app.policy.store()).invalidate();
  adminAuditOf(scope).note({
    reason: 'written',
    extra: { denyId: entry.id, expiresAt, etag: written.etag, revision: written.revision },
  });
  return jsonResponse(201, { entry, etag: written.etag, revision: written.revision }, scope, versionHeaders(written));
}
